"""One instruction at a time: the dispatch switch and the state it changes
(moby builder/dockerfile/evaluator.go).

`dispatch(d, cmd)` expands the instruction's variables (the stage's ENV, then its build args), runs the
instruction's handler from dispatchers.py, and afterwards removes the step's container as `rm` and
`forcerm` say. The handlers change `DispatchState`: the stage's container config (`run_config`, the
future image's Config) and the image the stage has reached (`image_id`). At the end of each stage,
`commit_stage` records its final config in `StagesBuildResults`, where later `FROM <stage>` and
`COPY --from=<stage|index>` find it.
"""

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minibuild import errdefs, trace
from minibuild.builder.dockerfile import dispatchers
from minibuild.builder.dockerfile.buildargs import BuildArgs
from minibuild.builder.dockerfile.imagecontext import BuilderImage
from minibuild.builder.remotecontext import Source
from minibuild.dockerfile import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    DockerfileError,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from minibuild.dockerfile.shell import Lex
from minibuild.image.image import CONTAINER_CONFIG_FIELDS
from minibuild.runtime.spec import DEFAULT_PATH_ENV

CONTAINER_CONFIG_KEYS = frozenset(name for name, _ in CONTAINER_CONFIG_FIELDS)

if TYPE_CHECKING:
    from minibuild.builder.dockerfile.builder import Builder


@trace.traced
async def dispatch(d: "DispatchRequest", cmd: Command) -> None:
    """Run one instruction: expand its words, call its handler, then clean up its container."""
    run_config_env = list(d.state.run_config.get("Env") or [])
    envs = run_config_env + d.state.build_args.filter_allowed(run_config_env)
    if hasattr(cmd, "expand"):  # instructions.SupportsSingleWordExpansion
        try:
            cmd = cmd.expand(lambda word: d.shlex.process_word(word, envs))
        except DockerfileError as err:
            raise errdefs.InvalidParameter(str(err)) from None
    options = d.builder.options
    try:
        if isinstance(cmd, EnvCommand):  # ENV key=value ...
            await dispatchers.dispatch_env(d, cmd)
        elif isinstance(cmd, MaintainerCommand):  # MAINTAINER name
            await dispatchers.dispatch_maintainer(d, cmd)
        elif isinstance(cmd, LabelCommand):  # LABEL key=value ...
            await dispatchers.dispatch_label(d, cmd)
        elif isinstance(cmd, AddCommand):  # ADD [--chown=u:g] src... dest
            await dispatchers.dispatch_add(d, cmd)
        elif isinstance(cmd, CopyCommand):  # COPY [--from=stage] [--chown=u:g] src... dest
            await dispatchers.dispatch_copy(d, cmd)
        elif isinstance(cmd, OnbuildCommand):  # ONBUILD INSTRUCTION ...
            await dispatchers.dispatch_onbuild(d, cmd)
        elif isinstance(cmd, WorkdirCommand):  # WORKDIR /path
            await dispatchers.dispatch_workdir(d, cmd)
        elif isinstance(cmd, RunCommand):  # RUN command | RUN ["exec", "form"]
            await dispatchers.dispatch_run(d, cmd)
        elif isinstance(cmd, CmdCommand):  # CMD command | CMD ["exec", "form"]
            await dispatchers.dispatch_cmd(d, cmd)
        elif isinstance(cmd, HealthCheckCommand):  # HEALTHCHECK [--interval=...] CMD command | NONE
            await dispatchers.dispatch_healthcheck(d, cmd)
        elif isinstance(cmd, EntrypointCommand):  # ENTRYPOINT command | ENTRYPOINT ["exec", "form"]
            await dispatchers.dispatch_entrypoint(d, cmd)
        elif isinstance(cmd, ExposeCommand):  # EXPOSE port[/proto] ...
            await dispatchers.dispatch_expose(d, cmd, envs)
        elif isinstance(cmd, UserCommand):  # USER user[:group]
            await dispatchers.dispatch_user(d, cmd)
        elif isinstance(cmd, VolumeCommand):  # VOLUME /path ... | VOLUME ["/path"]
            await dispatchers.dispatch_volume(d, cmd)
        elif isinstance(cmd, StopSignalCommand):  # STOPSIGNAL signal
            await dispatchers.dispatch_stop_signal(d, cmd)
        elif isinstance(cmd, ArgCommand):  # ARG name[=default] ...
            await dispatchers.dispatch_arg(d, cmd)
        elif isinstance(cmd, ShellCommand):  # SHELL ["executable", "parameters"]
            await dispatchers.dispatch_shell(d, cmd)
        else:
            raise errdefs.System(f"unsupported command type: {type(cmd).__name__}")
    except asyncio.CancelledError:
        await d.builder.container_manager.remove_all(d.builder.stdout)  # the killed step's container
        raise
    except BaseException:
        if options.force_remove:
            await d.builder.container_manager.remove_all(d.builder.stdout)
        raise
    if options.remove or options.force_remove:
        await d.builder.container_manager.remove_all(d.builder.stdout)


@dataclass
class DispatchState:
    """What the handlers of one stage change (dispatchState)."""

    build_args: BuildArgs
    run_config: dict[str, Any] = field(default_factory=dict)  # the stage's container config
    maintainer: str = ""
    cmd_set: bool = False  # a CMD was given in this stage (ENTRYPOINT then keeps it)
    image_id: str = ""  # the image the stage has reached; "" on FROM scratch before any commit
    base_image: BuilderImage | None = None
    stage_name: str = ""
    operating_system: str = ""

    @classmethod
    def new(cls, base_args: BuildArgs) -> "DispatchState":
        args = base_args.clone()
        args.reset_allowed()
        return cls(build_args=args)

    def update_run_config(self) -> None:
        self.run_config["Image"] = self.image_id

    def has_from_image(self) -> bool:
        """A FROM was processed (scratch counts)."""
        return self.image_id != "" or (self.base_image is not None and self.base_image.image_id == "")

    def begin_stage(self, stage_name: str, image: BuilderImage) -> None:
        self.stage_name = stage_name
        self.image_id = image.image_id
        self.operating_system = image.operating_system()
        # a copy: two stages on the same base must not share one config; fields container.Config
        # does not have are dropped, as Go's unmarshal drops them
        self.run_config = {k: v for k, v in (image.run_config() or {}).items() if k in CONTAINER_CONFIG_KEYS}
        for key in ("Env", "Cmd", "Entrypoint", "OnBuild", "Shell"):
            if self.run_config.get(key) is not None:
                self.run_config[key] = list(self.run_config[key])
        for key in ("Labels", "ExposedPorts", "Volumes", "Healthcheck"):
            if self.run_config.get(key) is not None:
                self.run_config[key] = dict(self.run_config[key])
        self.base_image = image
        self.set_default_path()
        self.run_config["OpenStdin"] = False
        self.run_config["StdinOnce"] = False

    def set_default_path(self) -> None:
        """Add Linux's default PATH when the base image sets none."""
        env = self.run_config.get("Env") or []
        if not any(entry.partition("=")[0] == "PATH" for entry in env):
            self.run_config["Env"] = [*env, f"PATH={DEFAULT_PATH_ENV}"]


class StagesBuildResults:
    """The final config of each finished stage, by position and by name (stagesBuildResults)."""

    def __init__(self) -> None:
        self.flat: list[dict[str, Any]] = []
        self.indexed: dict[str, dict[str, Any]] = {}

    def get_by_name(self, name: str) -> dict[str, Any] | None:
        return self.indexed.get(name.lower())

    def get(self, name_or_index: str) -> dict[str, Any] | None:
        """A stage by name, or by its index (a number); None when it is neither."""
        config = self.get_by_name(name_or_index)
        if config is not None:
            return config
        try:
            index = int(name_or_index)
        except ValueError:
            return None
        if index == len(self.flat):
            raise errdefs.System("refers to current build stage")
        if index < 0 or index > len(self.flat):
            raise errdefs.System("index out of bounds")
        return self.flat[index]

    def check_stage_name_available(self, name: str) -> None:
        if name and self.get_by_name(name) is not None:
            raise errdefs.System(f"{name} stage name already used")

    def commit_stage(self, name: str, config: dict[str, Any]) -> None:
        if name:
            self.check_stage_name_available(name)
            self.indexed[name.lower()] = config
        self.flat.append(config)


@trace.traced
def commit_stage(state: DispatchState, stages: StagesBuildResults) -> None:
    stages.commit_stage(state.stage_name, state.run_config)


@dataclass
class DispatchRequest:
    """Everything a handler needs (dispatchRequest)."""

    state: DispatchState
    shlex: Lex
    builder: "Builder"
    source: Source | None
    stages: StagesBuildResults


def new_dispatch_request(
    builder: "Builder",
    escape_token: str,
    source: Source | None,
    build_args: BuildArgs,
    stages: StagesBuildResults,
) -> DispatchRequest:
    return DispatchRequest(DispatchState.new(build_args), Lex(escape_token), builder, source, stages)
