"""Dockerfile -> LLB graph + image config (buildkit frontend/dockerfile/dockerfile2llb/convert.go, image.go).

`dockerfile_to_llb` turns each stage into a chain of vertices: a source (an image, or scratch), then a
vertex per RUN (exec), COPY/ADD (file op from the context or another stage) and WORKDIR (mkdir).
Metadata instructions (ENV, LABEL, CMD, USER, ...) change the image config and the state later RUNs
inherit, never the graph. Only stages reachable from the target (`is_reachable`) are converted: the
others never resolve their base image, never appear in the graph, never run.

Vertex names are BuildKit's: `[stage-3 2/4] COPY --from=a /a.txt /` (stage name, then the index of
this command among the stage's FROM/RUN/COPY/ADD/WORKDIR; no stage name when the file has one stage).
"""

from __future__ import annotations

import asyncio
import copy
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlparse

from minibuild import trace
from minibuild.api import platforms
from minibuild.builder.next import llb
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
    KeyValuePairOptional,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    gotext,
    parse,
    parse_instruction,
    parse_instructions,
)
from minibuild.dockerfile.heredoc import chomp_heredoc_content, must_parse_heredoc
from minibuild.dockerfile.shell import Lex, build_envs
from minibuild.image import reference

EMPTY_IMAGE_NAME = "scratch"
HISTORY_COMMENT = "buildkit.dockerfile.v0"
DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The fields of BuildKit's image config (ocispec ImageConfig + Docker's extras); others are dropped.
IMAGE_CONFIG_FIELDS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                       "Labels", "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "StopTimeout",
                       "Shell")  # fmt: skip
PROXY_ARGS = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
# How a history entry relates to a layer: from the base image (kept as is), or none (metadata only).
FROM_BASE = "base"


class ConvertError(Exception):
    """The Dockerfile cannot become a graph; str() is BuildKit's message."""


class ImageMetaResolver(Protocol):
    """llb.ImageMetaResolver: an image reference -> (its digest or "", its config as a dict).

    The resolver reports its own progress under `log_name` (`[internal] load metadata for ...`).
    """

    async def resolve_image_config(
        self, ref: str, *, platform: str, resolve_mode: str, log_name: str
    ) -> tuple[str, dict[str, Any]]: ...


@dataclass
class ConvertOpt:
    """What the frontend passes in (dockerfile2llb.ConvertOpt), from the solve request's frontend attrs."""

    build_context: llb.State
    meta_resolver: ImageMetaResolver | None = None
    target: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # None: use the cache. []: ignore it for every stage. Names: ignore it for those stages.
    ignore_cache: list[str] | None = None
    image_resolve_mode: str = "default"
    target_platform: str = ""  # "" means the build platform, chosen implicitly
    build_platform: str = ""
    extra_hosts: list[str] = field(default_factory=list)  # host=ip
    ulimits: list[str] = field(default_factory=list)  # name=soft:hard
    shm_size: int = 0  # bytes; 0: the default
    force_network_mode: str = ""  # none | host


@dataclass
class ConvertResult:
    """The target's state, its image config, and which vertex made each history entry's layer.

    `history_sources` runs parallel to image["history"]: FROM_BASE for entries of the base image,
    None for metadata entries, or the digest of the vertex whose result may add a layer.
    """

    state: llb.State
    image: dict[str, Any]
    history_sources: list[str | None]


@dataclass
class _Command:
    """An instruction and the stages it reads (toCommand's command)."""

    command: Command
    sources: list[DispatchState] = field(default_factory=list)


@dataclass(eq=False)
class DispatchState:
    """One stage while it is converted (convert.go's dispatchState)."""

    stage: Stage
    stage_name: str
    state: llb.State = field(default_factory=llb.State)
    image: dict[str, Any] = field(default_factory=dict)
    history_sources: list[str | None] = field(default_factory=list)
    platform: str = ""
    base: DispatchState | None = None
    deps: list[DispatchState] = field(default_factory=list)
    build_args: list[KeyValuePairOptional] = field(default_factory=list)
    commands: list[_Command] = field(default_factory=list)
    ignore_cache: bool = False
    cmd_set: bool = False
    unregistered: bool = False
    cmd_index: int = 0
    cmd_total: int = 0


class DispatchStates:
    """All stages, by index and by (lower-cased) name."""

    def __init__(self) -> None:
        self.states: list[DispatchState] = []
        self.by_name: dict[str, DispatchState] = {}

    def add_state(self, ds: DispatchState) -> None:
        self.states.append(ds)
        if (base := self.by_name.get(ds.stage.base_name)) is not None:
            ds.base = base
        if ds.stage.name:
            self.by_name[ds.stage.name.lower()] = ds

    def find_state_by_name(self, name: str) -> DispatchState | None:
        return self.by_name.get(name.lower())

    def find_state_by_index(self, index: int) -> DispatchState:
        if index < 0 or index >= len(self.states):
            raise ConvertError(f"invalid stage index {index}")
        return self.states[index]


def is_reachable(start: DispatchState | None, to: DispatchState) -> bool:
    """Does building `start` need stage `to`? Through FROM <stage>, COPY --from and RUN --mount from."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        if d is to:
            return True
        seen.add(id(d))
        stack.append(d.base)
        stack.extend(d.deps)
    return False


# ---- the conversion -------------------------------------------------------------------------------------


def _platform_args(opt: ConvertOpt) -> list[KeyValuePairOptional]:
    """getPlatformArgs: BUILDPLATFORM, TARGETPLATFORM and their parts, predefined for ARG."""
    build = platforms.parse(opt.build_platform)
    target = platforms.parse(opt.target_platform or opt.build_platform)
    out = []
    for prefix, p in (("BUILD", build), ("TARGET", target)):
        out += [
            KeyValuePairOptional(prefix + "PLATFORM", p.format()),
            KeyValuePairOptional(prefix + "OS", p.os),
            KeyValuePairOptional(prefix + "ARCH", p.architecture),
            KeyValuePairOptional(prefix + "VARIANT", p.variant),
        ]
    return out


def _set_kv_value(kv: KeyValuePairOptional, values: dict[str, str]) -> KeyValuePairOptional:
    if kv.key in values:
        return KeyValuePairOptional(kv.key, values[kv.key])
    return KeyValuePairOptional(kv.key, kv.value)


def _meta_args_to_map(meta_args: list[KeyValuePairOptional]) -> dict[str, str]:
    return {a.key: a.value or "" for a in meta_args}


@trace.traced
async def dockerfile_to_llb(dockerfile: bytes, opt: ConvertOpt) -> ConvertResult:
    """Dockerfile2LLB: parse, pick the target, convert the stages it needs, return its state and image.

    Raises DockerfileError for what the parser refuses and ConvertError for the rest.
    """
    if not dockerfile:
        raise ConvertError("the Dockerfile cannot be empty")
    if not opt.build_platform:
        opt.build_platform = f"linux/{platforms.host_arch()}"
    opt_meta_args = [_set_kv_value(a, opt.build_args) for a in _platform_args(opt)]

    result = parse(dockerfile)
    stages, meta_args = parse_instructions(result.ast)
    if not stages:
        raise ConvertError("dockerfile contains no stages to build")
    shlex = Lex(result.escape_token)

    for meta in meta_args:
        for kv in meta.args:
            value = kv.value
            if value is not None:
                value = shlex.process_word(value, _meta_args_to_map(opt_meta_args))
            opt_meta_args.append(_set_kv_value(KeyValuePairOptional(kv.key, value), opt.build_args))

    all_states = DispatchStates()
    for i, st in enumerate(stages):
        name = shlex.process_word(st.base_name, _meta_args_to_map(opt_meta_args))
        if name == "":
            raise ConvertError(f"base name ({st.base_name}) should not be blank")
        st = copy.copy(st)
        st.base_name = name
        ds = DispatchState(stage=st, stage_name=st.name or f"stage-{i}")
        if st.platform:
            value = shlex.process_word(st.platform, _meta_args_to_map(opt_meta_args))
            try:
                ds.platform = platforms.parse(value).format()
            except platforms.PlatformError as err:
                raise ConvertError(f"failed to parse platform {value}: {err}") from None
        all_states.add_state(ds)
        # The count behind `[2/4]`: FROM (unless scratch or a stage), RUN, COPY, ADD, WORKDIR.
        total = 1 if st.base_name != EMPTY_IMAGE_NAME and ds.base is None else 0
        total += sum(
            isinstance(c, AddCommand | CopyCommand | RunCommand | WorkdirCommand) for c in st.commands
        )
        ds.cmd_total = total
        if opt.ignore_cache is not None:
            ds.ignore_cache = not opt.ignore_cache or any(n.lower() == st.name for n in opt.ignore_cache)

    if len(all_states.states) == 1:
        all_states.states[0].stage_name = ""

    if not opt.target:
        target = all_states.states[-1]
    else:
        found = all_states.find_state_by_name(opt.target)
        if found is None:
            raise ConvertError(f"target stage {opt.target} could not be found")
        target = found

    # Dependencies first, so that unreachable stages never resolve their base image.
    for d in list(all_states.states):
        for cmd in d.stage.commands:
            new_cmd = _to_command(cmd, all_states, shlex)
            d.commands.append(new_cmd)
            for src in new_cmd.sources:
                if src not in d.deps:
                    d.deps.append(src)

    await _resolve_bases(all_states, target, opt)

    for d in all_states.states:
        if not is_reachable(target, d):
            continue
        if d.base is not None:
            d.state = d.base.state
            d.platform = d.base.platform
            d.image = copy.deepcopy(d.base.image)
            d.history_sources = list(d.base.history_sources)
        config = d.image["config"]
        if "PATH" not in build_envs(config.get("Env") or []):
            config["Env"] = [*(config.get("Env") or []), "PATH=" + DEFAULT_PATH_ENV]
        for entry in config.get("Env") or []:
            key, _, value = entry.partition("=")
            d.state = d.state.add_env(key, value)
        if config.get("WorkingDir"):
            _dispatch_workdir(d, config["WorkingDir"], None, None)
        if config.get("User"):
            d.state = d.state.with_user(config["User"])
        d.state = d.state.with_network(opt.force_network_mode)
        d.state = replace(d.state, platform=d.platform)

        dopt = _DispatchOpt(all_states, opt_meta_args, opt, shlex)
        triggers = list(config.get("OnBuild") or [])
        config["OnBuild"] = None
        for trigger in triggers:
            _dispatch_onbuild_trigger(d, trigger, dopt)
        for cmd in d.commands:
            _dispatch(d, cmd, dopt)

    config = target.image["config"]
    if opt.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **opt.labels}
    if opt.target_platform:
        p = platforms.parse(opt.target_platform)
        target.image["os"], target.image["architecture"] = p.os, p.architecture
    return ConvertResult(target.state, target.image, target.history_sources)


def _to_command(cmd: Command, all_states: DispatchStates, shlex: Lex) -> _Command:
    """toCommand: which stages an instruction reads (COPY --from, RUN --mount from=)."""
    out = _Command(cmd)
    names: list[str] = []
    if isinstance(cmd, CopyCommand) and cmd.from_:
        names.append(cmd.from_)
    if isinstance(cmd, RunCommand):
        for spec in cmd.mount_specs:
            for item in spec.split(","):
                key, _, value = item.partition("=")
                if key.strip().lower() == "from" and value:
                    names.append(value)
    for name in names:
        if name.isdigit():
            out.sources.append(all_states.find_state_by_index(int(name)))
            continue
        state = all_states.find_state_by_name(name)
        if state is None:  # an image: a stage of its own, outside the Dockerfile's list
            state = DispatchState(
                stage=Stage(name="", base_name=name, platform="", original="", line=0, end_line=0),
                stage_name="",
                unregistered=True,
            )
            all_states.add_state(state)
        out.sources.append(state)
    return out


async def _resolve_bases(all_states: DispatchStates, target: DispatchState, opt: ConvertOpt) -> None:
    """Set every reachable stage's base: scratch, a previous stage, or an image (its config resolved)."""
    jobs = []
    for d in all_states.states:
        if d.base is not None:
            continue
        if d.stage.base_name == EMPTY_IMAGE_NAME:
            d.state = llb.State()
            d.image = empty_image(opt.target_platform or opt.build_platform)
            d.platform = d.platform or opt.target_platform or opt.build_platform
            continue
        if is_reachable(target, d):
            jobs.append(_resolve_image(d, opt))
    if jobs:
        await asyncio.gather(*jobs)


async def _resolve_image(d: DispatchState, opt: ConvertOpt) -> None:
    try:
        ref = reference.parse_normalized_named(d.stage.base_name)
    except reference.InvalidReference as err:
        raise ConvertError(f"failed to parse stage name {gotext.quote(d.stage.base_name)}: {err}") from None
    platform = d.platform or opt.target_platform or opt.build_platform
    name = str(reference.tag_name_only(ref))
    image = empty_image(platform)
    is_scratch = False
    # As BuildKit, a COPY --from image (unregistered) is not resolved here: its source vertex resolves it.
    if opt.meta_resolver is not None and not d.unregistered:
        digest, config = await opt.meta_resolver.resolve_image_config(
            name,
            platform=platform,
            resolve_mode=opt.image_resolve_mode,
            log_name=f"[internal] load metadata for {name}",
        )
        image = image_from_config(config)
        is_scratch = not image["rootfs"].get("diff_ids") and all(
            h.get("empty_layer") for h in image.get("history") or []
        )
        name = pinned_name(name, digest)  # FROM docker.io/library/busybox:latest@sha256:…
    d.image = image
    d.history_sources = [FROM_BASE] * len(image.get("history") or [])
    d.platform = platform
    if is_scratch:
        d.state = llb.State(platform=platform)
    else:
        vertex = llb.source(
            "docker-image://" + name,
            name=_prefix_command(d, "FROM " + name),
            platform=platform,
            attrs={"image.resolvemode": opt.image_resolve_mode},
        )
        d.state = llb.State(vertex, platform=platform)


def pinned_name(name: str, digest: str) -> str:
    """reference.WithDigest: the name the resolver gave a digest for, pinned to it ("": found locally)."""
    return f"{name}@{digest}" if digest and "@" not in name else name


def empty_image(platform: str) -> dict[str, Any]:
    """emptyImage: the config of scratch for `platform`."""
    p = platforms.parse(platform)
    image: dict[str, Any] = {
        "architecture": p.architecture,
        "os": p.os,
        "config": {"WorkingDir": "/", "Env": ["PATH=" + DEFAULT_PATH_ENV]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    if p.variant:
        image["variant"] = p.variant
    return image


def image_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """A base image's config as BuildKit's Image type keeps it: no created time, no container config."""
    image = {
        k: copy.deepcopy(config[k]) for k in ("architecture", "os", "variant", "author") if config.get(k)
    }
    container = config.get("config") or {}
    image["config"] = {k: copy.deepcopy(container[k]) for k in IMAGE_CONFIG_FIELDS if k in container}
    image["rootfs"] = {"type": "layers", "diff_ids": list((config.get("rootfs") or {}).get("diff_ids") or [])}
    image["history"] = copy.deepcopy(config.get("history") or [])
    return image


# ---- dispatch --------------------------------------------------------------------------------------------


@dataclass
class _DispatchOpt:
    all_states: DispatchStates
    meta_args: list[KeyValuePairOptional]
    opt: ConvertOpt
    shlex: Lex


def _env_map(d: DispatchState) -> dict[str, str]:
    """toEnvMap: the image's env, then build args not already set by it (ENV wins over ARG)."""
    env = build_envs(d.image["config"].get("Env") or [])
    for arg in d.build_args:
        env.setdefault(arg.key, arg.value or "")
    return env


def _dispatch(d: DispatchState, cmd: _Command, dopt: _DispatchOpt) -> None:
    """dispatch: expand the instruction's words, then one handler per instruction type."""
    c = cmd.command
    try:
        if isinstance(c, ExposeCommand):
            env = _env_map(d)
            c = c.expand_ports(lambda word: dopt.shlex.process_words(word, env))
        elif hasattr(c, "expand"):
            env = _env_map(d)
            c = c.expand(lambda word: dopt.shlex.process_word(word, env))
    except DockerfileError as err:
        raise ConvertError(err.msg) from None

    if isinstance(c, MaintainerCommand):  # MAINTAINER name
        d.image["author"] = c.maintainer
        _commit_to_history(d, f"MAINTAINER {c.maintainer}", None)
    elif isinstance(c, EnvCommand):  # ENV k=v ...
        _dispatch_env(d, c)
    elif isinstance(c, RunCommand):  # RUN [--mount=...] [--network=...] cmd
        _dispatch_run(d, c, cmd.sources, dopt)
    elif isinstance(c, WorkdirCommand):  # WORKDIR /path
        _dispatch_workdir(d, c.path, c, dopt)
    elif isinstance(c, AddCommand):  # ADD [--chown] src... dest
        _dispatch_copy(d, c, dopt.opt.build_context, True, dopt)
    elif isinstance(c, CopyCommand):  # COPY [--from] [--chown] [--chmod] src... dest
        source = cmd.sources[0].state if cmd.sources else dopt.opt.build_context
        _dispatch_copy(d, c, source, False, dopt)
    elif isinstance(c, LabelCommand):  # LABEL k=v ...
        labels = d.image["config"].get("Labels") or {}
        for kv in c.labels:
            labels[kv.key] = kv.value
        d.image["config"]["Labels"] = labels
        _commit_to_history(d, "LABEL " + " ".join(str(kv) for kv in c.labels), None)
    elif isinstance(c, OnbuildCommand):  # ONBUILD instruction
        d.image["config"]["OnBuild"] = [*(d.image["config"].get("OnBuild") or []), c.expression]
        _commit_to_history(d, "ONBUILD " + c.expression, None)
    elif isinstance(c, CmdCommand):  # CMD ["exec"] | CMD shell
        args = _with_shell(d.image, c.cmd_line) if c.prepend_shell else list(c.cmd_line or [])
        d.image["config"]["Cmd"] = args
        d.cmd_set = True
        _commit_to_history(d, "CMD " + _go_quoted_list(args), None)
    elif isinstance(c, EntrypointCommand):  # ENTRYPOINT ["exec"] | ENTRYPOINT shell
        args = _with_shell(d.image, c.cmd_line) if c.prepend_shell else c.cmd_line
        d.image["config"]["Entrypoint"] = args
        if not d.cmd_set:
            d.image["config"]["Cmd"] = None
        _commit_to_history(d, "ENTRYPOINT " + _go_quoted_list(args or []), None)
    elif isinstance(c, HealthCheckCommand):  # HEALTHCHECK [opts] CMD cmd | NONE
        _dispatch_healthcheck(d, c)
    elif isinstance(c, ExposeCommand):  # EXPOSE port[/proto] ...
        ports = d.image["config"].get("ExposedPorts") or {}
        for port in parse_port_specs(c.ports):
            ports[port] = {}
        d.image["config"]["ExposedPorts"] = ports
        _commit_to_history(d, "EXPOSE " + " ".join(c.ports), None)
    elif isinstance(c, UserCommand):  # USER user[:group]
        d.state = d.state.with_user(c.user)
        d.image["config"]["User"] = c.user
        _commit_to_history(d, f"USER {c.user}", None)
    elif isinstance(c, VolumeCommand):  # VOLUME ["/a"] | VOLUME /a /b
        volumes = d.image["config"].get("Volumes") or {}
        for v in c.volumes:
            if v == "":
                raise ConvertError("VOLUME specified can not be an empty string")
            volumes[v] = {}
        d.image["config"]["Volumes"] = volumes
        _commit_to_history(d, "VOLUME [" + " ".join(c.volumes) + "]", None)
    elif isinstance(c, StopSignalCommand):  # STOPSIGNAL sig
        parse_signal(c.signal)
        d.image["config"]["StopSignal"] = c.signal
        _commit_to_history(d, f"STOPSIGNAL {c.signal}", None)
    elif isinstance(c, ShellCommand):  # SHELL ["exe", "-c"]
        d.image["config"]["Shell"] = list(c.shell)
        _commit_to_history(d, "SHELL [" + " ".join(c.shell) + "]", None)
    elif isinstance(c, ArgCommand):  # ARG name[=default] ...
        _dispatch_arg(d, c, dopt)


def _dispatch_onbuild_trigger(d: DispatchState, trigger: str, dopt: _DispatchOpt) -> None:
    """dispatchOnBuildTriggers: each trigger of the base image is parsed and dispatched first."""
    try:
        ast = parse(trigger.encode()).ast
        if len(ast.children) != 1:
            raise ConvertError("onbuild trigger should be a single expression")
        ic = parse_instruction(ast.children[0])
    except DockerfileError as err:
        raise ConvertError(str(err)) from None
    if isinstance(ic, Stage):
        raise ConvertError("FROM isn't allowed as an ONBUILD trigger")
    _dispatch(d, _to_command(ic, dopt.all_states, dopt.shlex), dopt)


def _dispatch_env(d: DispatchState, c: EnvCommand) -> None:
    config = d.image["config"]
    for kv in c.env:
        d.state = d.state.add_env(kv.key, kv.value)
        config["Env"] = _add_env(config.get("Env") or [], kv.key, kv.value)
    _commit_to_history(d, "ENV " + " ".join(str(kv) for kv in c.env), None)


def _dispatch_arg(d: DispatchState, c: ArgCommand, dopt: _DispatchOpt) -> None:
    parts = []
    for kv in c.args:
        build_arg = _set_kv_value(kv, dopt.opt.build_args)
        parts.append(kv.key if kv.value is None else f"{kv.key}={kv.value}")
        if build_arg.value is None:
            for meta in dopt.meta_args:
                if meta.key == build_arg.key:
                    build_arg = KeyValuePairOptional(build_arg.key, meta.value)
        d.build_args.append(build_arg)
    _commit_to_history(d, "ARG " + " ".join(parts), None)


def _dispatch_run(d: DispatchState, c: RunCommand, sources: list[DispatchState], dopt: _DispatchOpt) -> None:
    args = list(c.cmd_line or [])
    prepend_shell = c.prepend_shell
    if c.files:
        args, prepend_shell = _heredoc_args(args, c)
    if prepend_shell:
        args = _with_shell(d.image, args)
    if c.security == "insecure":
        raise ConvertError("security.insecure is not allowed: minibuild runs every step sandboxed")

    # Build args with a value reach the process, after the env (ENV wins over ARG for the same name).
    env = d.state.env_list()
    env_keys = {k for k, _ in d.state.env}
    with_args = [a for a in d.build_args if a.value is not None and a.key not in env_keys]
    env += [f"{a.key}={a.value}" for a in with_args]

    state = d.state
    if c.network != "default":
        state = state.with_network(c.network)
    mounts = _dispatch_run_mounts(d, c, sources, dopt)
    raw = Lex(dopt.shlex.escape_token, raw_quotes=True, skip_unset_env=True)
    name = _prefix_command(d, _uppercase_cmd(_process_cmd_env(raw, str(c), env)))
    d.state = state.run(
        args,
        name=name,
        env=env,
        mounts=mounts,
        extra_hosts=dopt.opt.extra_hosts,
        ulimits=dopt.opt.ulimits,
        shm_size=dopt.opt.shm_size,
        proxy_env=proxy_env_from_build_args(dopt.opt.build_args),
        ignore_cache=d.ignore_cache,
        description={"com.docker.dockerfile.v1.command": str(c)},
    ).with_network(d.state.network)
    _commit_to_history(d, "RUN " + _run_command_string(args, with_args), d.state)


def proxy_env_from_build_args(build_args: dict[str, str]) -> dict[str, str]:
    """proxyEnvFromBuildArgs: the predefined proxy args (any case), which reach every RUN undeclared."""
    out = {}
    for key, value in build_args.items():
        if key.lower() in PROXY_ARGS:
            out[key.lower()] = value
    return out


def _heredoc_args(args: list[str], c: RunCommand) -> tuple[list[str], bool]:
    """A RUN whose command is a heredoc: run its body with the shell (BuildKit's "fake heredoc")."""
    if len(args) != 1 or not c.prepend_shell:
        raise ConvertError(f"parsing produced an invalid run command: [{' '.join(args)}]")
    files = [(f.name, chomp_heredoc_content(f.data) if f.chomp else f.data) for f in c.files]
    if must_parse_heredoc(args[0]) is not None:
        if files[0][1].startswith("#!"):
            raise ConvertError("RUN with a #! heredoc script is not supported by minibuild")
        return [files[0][1]], True
    full = args[0]
    for name, data in files:
        full += "\n" + data + name
    return [full], True


def _dispatch_run_mounts(
    d: DispatchState, c: RunCommand, sources: list[DispatchState], dopt: _DispatchOpt
) -> list[llb.Mount]:
    """dispatchRunMounts: --mount=type=bind|cache|tmpfs (secrets and ssh need a client session)."""
    env = _env_map(d)
    try:
        specs = c.mounts(lambda word: dopt.shlex.process_word(word, env))
    except DockerfileError as err:
        raise ConvertError(err.msg) from None
    out = []
    by_name = {s.stage.name or s.stage.base_name: s for s in sources}
    for m in specs:
        if m.type in ("secret", "ssh"):
            raise ConvertError(
                f"RUN --mount=type={m.type} needs a client session, which minibuild does not have"
            )
        target = m.target if posixpath.isabs(m.target) else posixpath.join(d.state.dir, m.target)
        if not m.target:
            raise ConvertError("mount target must be specified")
        if m.type == "bind":
            source_state = dopt.opt.build_context
            if m.from_:
                src = by_name.get(m.from_) or by_name.get(m.from_.lower())
                if src is None and m.from_.isdigit():
                    src = dopt.all_states.find_state_by_index(int(m.from_))
                source_state = src.state if src is not None else source_state
            selector = posixpath.join("/", m.source) if m.source else "/"
            out.append(llb.Mount(target, source_state, selector=selector, readonly=m.read_only))
        elif m.type == "cache":
            out.append(llb.Mount(target, None, type="cache", cache_id=m.cache_id or target,
                                 sharing=m.cache_sharing or "shared", mode=m.mode, uid=m.uid,
                                 gid=m.gid))  # fmt: skip
        elif m.type == "tmpfs":
            out.append(llb.Mount(target, None, type="tmpfs", size=m.size_limit))
    return out


def _dispatch_workdir(
    d: DispatchState, path: str, c: WorkdirCommand | None, dopt: _DispatchOpt | None
) -> None:
    """WORKDIR sets the directory for later steps; written in a stage it also creates it (a mkdir op)."""
    config = d.image["config"]
    wd = path if posixpath.isabs(path) else posixpath.join("/", config.get("WorkingDir") or "/", path)
    wd = posixpath.normpath(wd)
    if wd.startswith("//"):
        wd = wd[1:]
    d.state = d.state.with_dir(wd)
    config["WorkingDir"] = wd
    if c is None or dopt is None:
        return
    user = config.get("User") or ""
    name = _prefix_command(d, _uppercase_cmd(_process_cmd_env(dopt.shlex, str(c), d.state.env_list())))
    d.state = d.state.file(
        llb.mkdir(wd, 0o755, make_parents=True, chown=user),
        name=name,
        ignore_cache=d.ignore_cache,
        description={"com.docker.dockerfile.v1.command": str(c)},
    )
    _commit_to_history(d, "WORKDIR " + wd, d.state)


def _dispatch_copy(
    d: DispatchState, c: AddCommand | CopyCommand, source: llb.State, is_add: bool, dopt: _DispatchOpt
) -> None:
    """dispatchCopy: one file op; each source is a copy action from the context or another stage."""
    if isinstance(c, CopyCommand) and c.parents:
        raise ConvertError("COPY --parents is not supported by minibuild")
    if c.exclude_patterns:
        raise ConvertError(f"{'ADD' if is_add else 'COPY'} --exclude is not supported by minibuild")
    if isinstance(c, AddCommand) and (c.checksum or c.keep_git_dir):
        raise ConvertError("ADD --checksum and --keep-git-dir are not supported by minibuild")
    dest = posixpath.normpath(_path_relative_to_working_dir(d.state, c.dest_path))
    if dest.startswith("//"):
        dest = dest[1:]
    if c.dest_path in (".", "") or c.dest_path.endswith("/"):
        dest = dest.rstrip("/") + "/"
    mode = None
    if c.chmod:
        try:
            mode = int(c.chmod, 8)
            if mode >> 32:
                raise ValueError
        except ValueError:
            raise ConvertError(f"invalid chmod parameter: {c.chmod}") from None
    keyword = "ADD" if is_add else "COPY"
    message = [keyword]
    action: llb.FileAction | None = None

    def add(src_state: llb.State, src: str, **info: Any) -> None:
        nonlocal action
        chain = action or llb.FileAction()
        action = chain.copy(src_state, src, dest, chown=c.chown, mode=mode, create_dest_path=True, **info)

    for src in c.source_paths:
        message.append(src)
        if src.startswith(("http://", "https://")):
            if not is_add:
                raise ConvertError("source can't be a URL for COPY")
            filename = posixpath.basename(urlparse(src).path)
            if filename in ("", ".", ".."):
                filename = "__unnamed__"
            url_state = llb.State(llb.source(src, name=src, attrs={"http.filename": filename}))
            add(url_state, "/" + filename)
        else:
            add(source, src, follow_symlinks=True, dir_contents_only=True, attempt_unpack=is_add,
                allow_wildcard=True, allow_empty_wildcard=True)  # fmt: skip
    env = _env_map(d)
    for content in c.source_contents:
        message.append("<<" + content.path)
        data = dopt.shlex.process_word(content.data, env) if content.expand else content.data
        inline = llb.State(platform=d.state.platform).file(
            llb.mkfile(content.path, 0o644, data.encode()), name="[internal] preparing inline document"
        )
        add(inline, content.path)
    message.append(c.dest_path)
    assert action is not None  # the parser requires a source
    name = _prefix_command(d, _uppercase_cmd(_process_cmd_env(dopt.shlex, str(c), d.state.env_list())))
    d.state = d.state.file(
        action,
        name=name,
        ignore_cache=d.ignore_cache,
        description={"com.docker.dockerfile.v1.command": str(c)},
    )
    _commit_to_history(d, " ".join(message), d.state)


def _dispatch_healthcheck(d: DispatchState, c: HealthCheckCommand) -> None:
    h = c.health
    d.image["config"]["Healthcheck"] = {
        "Test": list(h.test),
        "Interval": h.interval,
        "Timeout": h.timeout,
        "StartPeriod": h.start_period,
        "StartInterval": h.start_interval,
        "Retries": h.retries,
    }
    durations = " ".join(
        gotext.quote(go_duration(v)) for v in (h.interval, h.timeout, h.start_period, h.start_interval)
    )
    _commit_to_history(d, f"HEALTHCHECK &{{{_go_quoted_list(h.test)} {durations} {h.retries}}}", None)


# ---- helpers ---------------------------------------------------------------------------------------------


def _commit_to_history(d: DispatchState, msg: str, state: llb.State | None) -> None:
    """commitToHistory: one history entry; a step with a vertex may add a layer (decided at export)."""
    if state is not None:
        msg += " # buildkit"
    entry = {"created_by": msg, "comment": HISTORY_COMMENT, "empty_layer": state is None}
    d.image.setdefault("history", []).append(entry)
    d.history_sources.append(state.output.digest if state is not None and state.output else None)


def _prefix_command(d: DispatchState, text: str) -> str:
    """prefixCommand: `[stage 2/4] ` before the command, counting this stage's commands."""
    if d.cmd_total == 0:
        return text
    out = "["
    if d.stage_name:
        out += d.stage_name + " "
    d.cmd_index += 1
    return out + f"{d.cmd_index}/{d.cmd_total}] " + text


def _uppercase_cmd(text: str) -> str:
    head, sep, rest = text.partition(" ")
    return head.upper() + sep + rest


def _process_cmd_env(shlex: Lex, cmd: str, env: list[str]) -> str:
    """The command as shown: variables expanded where possible, else as written."""
    try:
        return shlex.process_word(cmd, env)
    except DockerfileError:
        return cmd


def _with_shell(image: dict[str, Any], args: list[str] | None) -> list[str]:
    shell = list(image["config"].get("Shell") or DEFAULT_SHELL)
    return [*shell, " ".join(args or [])]


def _add_env(env: list[str], key: str, value: str) -> list[str]:
    out = list(env)
    for i, entry in enumerate(out):
        if entry.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    return [*out, f"{key}={value}"]


def _run_command_string(args: list[str], build_args: list[KeyValuePairOptional]) -> str:
    """runCommandString: `|2 A=1 B=2 /bin/sh -c ...` when build args reach the command."""
    env = [f"{a.key}={a.value or ''}" for a in build_args]
    prefix = [f"|{len(env)}", *env] if env else []
    return " ".join([*prefix, *args])


def _path_relative_to_working_dir(state: llb.State, path: str) -> str:
    if posixpath.isabs(path):
        return path
    return posixpath.join(state.dir, path)


def _go_quoted_list(items: list[str]) -> str:
    """Go's %q of a []string: `["a" "b"]`."""
    return "[" + " ".join(gotext.quote(s) for s in items) + "]"


def go_duration(ns: int) -> str:
    """time.Duration.String for whole-unit durations: 30s, 1m30s, 1.5s, 500ms, 0s."""
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _trim_fraction(ns / size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    seconds = _trim_fraction(rest / 1_000_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _trim_fraction(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_port_specs(specs: list[str]) -> list[str]:
    """nat.ParsePortSpecs for EXPOSE: `80`, `80/udp`, `8000-8002` -> `80/tcp`, ...; Docker's message
    for what is not a port."""
    out: list[str] = []
    for spec in specs:
        port, _, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
        proto = proto.lower() or "tcp"
        if ":" in port:  # ip:hostPort:containerPort: only the container port counts for EXPOSE
            port = port.rsplit(":", 1)[1]
        match = _PORT_RE.match(port)
        if not match or proto not in ("tcp", "udp", "sctp"):
            if match is None:
                raise ConvertError(f"Invalid containerPort: {port}")
            raise ConvertError(f"invalid proto: {proto}")
        start = int(match.group(1))
        end = int(match.group(2) or start)
        if end < start or end > 65535:
            raise ConvertError(f"Invalid containerPort: {port}")
        out += [f"{p}/{proto}" for p in range(start, end + 1)]
    return out


_SIGNALS = {"ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1,
            "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27,
            "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15,
            "TRAP": 5, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12,
            "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25}  # fmt: skip


def parse_signal(raw: str) -> int:
    """moby signal.ParseSignal: a number, `TERM`, `SIGTERM`, `SIGRTMIN+3`; else `Invalid signal: X`."""
    if raw.isdigit():
        if int(raw) == 0:
            raise ConvertError(f"Invalid signal: {raw}")
        return int(raw)
    name = raw.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return _SIGNALS[name]
    match = re.fullmatch(r"RTMIN(?:\+(\d+))?|RTMAX(?:-(\d+))?", name)
    if match:
        if name.startswith("RTMIN"):
            return 34 + int(match.group(1) or 0)
        return 64 - int(match.group(2) or 0)
    raise ConvertError(f"Invalid signal: {raw}")
