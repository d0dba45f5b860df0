"""The classic builder's loop (moby builder/dockerfile/builder.go).

`BuildManager.build(config)` unpacks the context and parses the Dockerfile (remotecontext.detect),
makes a `Builder` for this one build, and runs `dispatch_dockerfile_with_cancellation`: the for-loop
at the heart of `docker build` before BuildKit. It counts the steps, processes the ARGs before the
first FROM, then for every stage, in order, whether anything needs it or not: FROM, then each
instruction with its `Step i/N : ...` line, its dispatch and its ` ---> <id>`, and at the stage's end
the `{"aux":{"ID":...}}` message. Strictly one step after another: no parallelism here, on purpose.
"""

import asyncio
import io
import secrets
import shutil
from collections.abc import Awaitable
from typing import TypeVar

from minibuild import errdefs, trace
from minibuild.api.backend import BuildConfig
from minibuild.api.streamformatter import AuxFormatter, StreamWriter
from minibuild.builder import BuildComponents, Result, run_in_thread, source_date_epoch
from minibuild.builder.dockerfile.buildargs import BuildArgs
from minibuild.builder.dockerfile.containers import ContainerManager
from minibuild.builder.dockerfile.dispatchers import initialize_stage
from minibuild.builder.dockerfile.evaluator import (
    DispatchState,
    StagesBuildResults,
    commit_stage,
    dispatch,
    new_dispatch_request,
)
from minibuild.builder.dockerfile.imagecontext import ImageSources
from minibuild.builder.dockerfile.imageprobe import ImageProber
from minibuild.builder.remotecontext import Source, detect
from minibuild.distribution import Platform
from minibuild.dockerfile import (
    ArgCommand,
    Command,
    DockerfileError,
    RunCommand,
    Stage,
    has_stage,
    new_label_command,
    parse_instructions,
)
from minibuild.dockerfile import Result as ParseResult
from minibuild.dockerfile.shell import Lex
from minibuild.image.service import truncate_id

T = TypeVar("T")


class BuildManager:
    """Builds with the classic builder (moby's BuildManager); one per daemon."""

    def __init__(self, components: BuildComponents) -> None:
        self.components = components

    @trace.traced
    async def build(self, config: BuildConfig) -> Result:
        """Detect the context, build it, and always remove the unpacked context afterwards."""
        context_dir = self.components.tmp_dir / f"context-{secrets.token_hex(8)}"
        try:
            source, dockerfile = await run_in_thread(detect, config, context_dir)
            b = new_builder(config, self.components)
            return await b.build(source, dockerfile)
        finally:
            await run_in_thread(shutil.rmtree, context_dir, True)


class Builder:
    """One build: its options, output writers and helpers (moby's Builder)."""

    def __init__(self, config: BuildConfig, components: BuildComponents) -> None:
        options = config.options
        writer = config.progress_writer
        self.options = options
        self.components = components
        self.stdout: StreamWriter = writer.stdout_formatter
        self.stderr: StreamWriter = writer.stderr_formatter
        self.aux: AuxFormatter | None = writer.aux_formatter
        self.progress_output = writer.progress_output
        self.source_date_epoch = source_date_epoch(options.build_args)
        self.platform: Platform | None = None
        if options.platform:
            os_name, _, rest = options.platform.partition("/")
            arch, _, variant = rest.partition("/")
            self.platform = Platform(os_name, arch, variant)
        self.image_sources = ImageSources(
            components,
            pull_parent=options.pull_parent,
            auth_configs=options.auth_configs,
            output=writer.progress_output,
        )
        self.image_prober = ImageProber(components.image_service, options.cache_from, options.no_cache)
        self.container_manager = ContainerManager(components, options.network_mode, options.extra_hosts)

    async def build(self, source: Source | None, dockerfile: ParseResult) -> Result:
        try:
            stages, meta_args = parse_instructions(dockerfile.ast)
        except DockerfileError as err:
            raise errdefs.InvalidParameter(str(err)) from None
        if self.options.target:
            target_index = has_stage(stages, self.options.target)
            if target_index is None:
                raise errdefs.InvalidParameter(
                    f"failed to reach build target {self.options.target} in Dockerfile"
                )
            stages = stages[: target_index + 1]
        build_label_options(self.options.labels, stages)
        warnings = io.StringIO()
        dockerfile.print_warnings(warnings)
        if warnings.getvalue():
            self.stderr.write(warnings.getvalue())
        try:
            state = await self.dispatch_dockerfile_with_cancellation(
                stages, meta_args, dockerfile.escape_token, source
            )
        except asyncio.CancelledError:
            self.stdout.write("Build cancelled\n")
            raise
        finally:
            await self.container_manager.release_all()
        if state is None or not state.image_id:
            raise errdefs.System("No image was generated. Is your Dockerfile empty?")
        return Result(state.image_id, state.base_image)

    @trace.traced
    async def dispatch_dockerfile_with_cancellation(
        self, parse_result: list[Stage], meta_args: list[ArgCommand], escape_token: str, source: Source | None
    ) -> DispatchState | None:
        dispatch_request = None
        build_args = BuildArgs(self.options.build_args)
        total_commands = len(meta_args) + len(parse_result)
        current_command_index = 1
        for stage in parse_result:
            total_commands += len(stage.commands)
        shlex = Lex(escape_token)
        for meta in meta_args:
            current_command_index = print_command(self.stdout, current_command_index, total_commands, meta)
            process_meta_arg(meta, shlex, build_args)

        stages_results = StagesBuildResults()

        for stage in parse_result:
            stages_results.check_stage_name_available(stage.name)
            dispatch_request = new_dispatch_request(self, escape_token, source, build_args, stages_results)

            current_command_index = print_command(self.stdout, current_command_index, total_commands, stage)
            await initialize_stage(dispatch_request, stage)
            dispatch_request.state.update_run_config()
            self.stdout.write(f" ---> {truncate_id(dispatch_request.state.image_id)}\n")
            for cmd in stage.commands:
                if client_ctx_done():  # select { case <-b.clientCtx.Done(): ... default: }
                    raise asyncio.CancelledError("Build cancelled")  # build() says so in the stream
                current_command_index = print_command(self.stdout, current_command_index, total_commands, cmd)

                if isinstance(cmd, RunCommand):  # a RUN stops at once: its process is killed
                    await dispatch(dispatch_request, cmd)
                else:  # the other steps always finish their commit; the check above then stops the build
                    await run_to_completion(dispatch(dispatch_request, cmd))
                dispatch_request.state.update_run_config()
                self.stdout.write(f" ---> {truncate_id(dispatch_request.state.image_id)}\n")

            emit_image_id(self.aux, dispatch_request.state)
            build_args.merge_referenced_args(dispatch_request.state.build_args)
            commit_stage(dispatch_request.state, stages_results)
        build_args.warn_on_unused_build_args(self.stdout)
        return dispatch_request.state if dispatch_request is not None else None


def client_ctx_done() -> bool:
    """`<-clientCtx.Done()` without waiting: was this build's task asked to stop (the client went away,
    the daemon is stopping)? A request made while a step ran is seen here, before the next command."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def run_to_completion(step: Awaitable[T]) -> T:
    """Await a step that cancellation does not interrupt (moby's COPY and commits take no context): a
    cancel that arrives meanwhile stays pending, for client_ctx_done() to see once the step is done."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            continue


def new_builder(config: BuildConfig, components: BuildComponents) -> Builder:
    return Builder(config, components)


def print_command(
    out: StreamWriter, current_command_index: int, total_commands: int, cmd: Command | Stage
) -> int:
    """`Step i/N : <instruction as written>`, then a separate "\\n" message, as dockerd writes them."""
    out.write(f"Step {current_command_index}/{total_commands} : {cmd}")
    out.write("\n")
    return current_command_index + 1


def emit_image_id(aux: AuxFormatter | None, state: DispatchState) -> None:
    """The stage's image as `{"aux":{"ID":"sha256:..."}}` (clients older than API 1.30 get none)."""
    if aux is None or not state.image_id:
        return
    aux.emit("", {"ID": state.image_id})


def process_meta_arg(meta: ArgCommand, shlex: Lex, args: BuildArgs) -> None:
    """An ARG before the first FROM: usable in FROM lines, and as the default of `ARG NAME` in stages."""
    envs = [f"{k}={v}" for k, v in args.get_all_allowed().items()]
    try:
        meta = meta.expand(lambda word: shlex.process_word(word, envs))
    except DockerfileError as err:
        raise errdefs.InvalidParameter(str(err)) from None
    for arg in meta.args:
        args.add_arg(arg.key, arg.value)
        args.add_meta_arg(arg.key, arg.value)


def build_label_options(labels: dict[str, str], stages: list[Stage]) -> None:
    """The `labels=` of the request become LABEL steps at the end of the last stage, sorted by key."""
    if not stages:
        return
    for key in sorted(labels):
        stages[-1].commands.append(new_label_command(key, labels[key], True))
