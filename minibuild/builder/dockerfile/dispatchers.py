"""One handler per Dockerfile instruction (moby builder/dockerfile/dispatchers.go).

Each handler changes the stage's container config, then commits: `commit` for metadata steps (a
container that never runs, an empty layer, a `#(nop)` comment), `perform_copy` for COPY and ADD, a
real container run for RUN. The comments the commits carry are Docker's (`ENV A=1`, `CMD ["sh"]`,
`EXPOSE 80/tcp`, ...): they show up in `docker history` and are what the cache compares.
"""

import ipaddress
import signal
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from minibuild import errdefs, trace
from minibuild.api import platforms
from minibuild.api.jsonmessage import JSONError
from minibuild.archive import follow_symlink_in_scope
from minibuild.builder import run_in_thread
from minibuild.builder.dockerfile import internals
from minibuild.builder.dockerfile.buildargs import BuildArgs
from minibuild.builder.dockerfile.containers import StatusCodeError
from minibuild.builder.dockerfile.copy import (
    Copier,
    err_on_source_download,
    mkdir_all_and_chown_new,
    new_remote_source_downloader,
    root_pair,
)
from minibuild.builder.dockerfile.imagecontext import BuilderImage, ImageMount, RWLayer
from minibuild.builder.dockerfile.internals import (
    copy_run_config,
    resolve_cmd_line,
    with_cmd,
    with_cmd_comment_string,
    with_entrypoint_override,
    with_env,
    without_healthcheck,
)
from minibuild.builder.remotecontext import Source
from minibuild.distribution import Platform
from minibuild.dockerfile import (
    AddCommand,
    ArgCommand,
    CmdCommand,
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
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse,
    parse_instruction,
)
from minibuild.dockerfile.gotext import quote as go_quote
from minibuild.dockerfile.shell import Lex

if TYPE_CHECKING:
    from minibuild.builder.dockerfile.evaluator import DispatchRequest

NO_BASE_IMAGE_SPECIFIER = "scratch"
BUILDKIT_ONLY = "requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"  # noqa: E501


def requires_buildkit(feature: str) -> errdefs.DockerError:
    return errdefs.System(f"the {feature} option {BUILDKIT_ONLY}")


# --- FROM -------------------------------------------------------------------------------------------------


@trace.traced
async def initialize_stage(d: "DispatchRequest", cmd: Stage) -> None:
    """FROM [--platform=p] image[:tag|@digest] [AS name]: start a stage on an image, a stage or scratch."""
    d.builder.image_prober.reset()
    platform: Platform | None = None
    if cmd.platform:
        value = get_expanded_string(d, d.shlex, cmd.platform)
        try:
            parsed = platforms.parse(value)
        except platforms.PlatformError as err:
            raise errdefs.InvalidParameter(f"failed to parse platform {value}: {err}") from None
        platform = Platform(parsed.os, parsed.architecture, parsed.variant)
    image = await get_from_image(d, d.shlex, cmd.base_name, platform)
    state = d.state
    state.begin_stage(cmd.name, image)
    triggers = state.run_config.get("OnBuild") or []
    if triggers:
        state.run_config["OnBuild"] = None
        await dispatch_triggered_on_build(d, list(triggers))


async def dispatch_triggered_on_build(d: "DispatchRequest", triggers: list[str]) -> None:
    """Run the ONBUILD triggers of the base image, as if written right after FROM."""
    from minibuild.builder.dockerfile.evaluator import dispatch  # evaluator imports this module

    d.builder.stdout.write(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
    for trigger in triggers:
        d.state.update_run_config()
        try:
            ast = parse(trigger).ast
            if len(ast.children) != 1:
                raise errdefs.System("onbuild trigger should be a single expression")
            cmd = parse_instruction(ast.children[0])
        except DockerfileError as err:
            raise errdefs.InvalidParameter(str(err)) from None
        await dispatch(d, cmd)


def get_expanded_string(d: "DispatchRequest", shlex: Lex, text: str) -> str:
    """A FROM word expanded with the meta args (ARGs before the first FROM)."""
    substitution = [f"{k}={v}" for k, v in d.state.build_args.get_all_meta().items()]
    try:
        return shlex.process_word(text, substitution)
    except DockerfileError as err:
        raise errdefs.InvalidParameter(str(err)) from None


async def get_from_image(
    d: "DispatchRequest", shlex: Lex, basename: str, platform: Platform | None
) -> BuilderImage:
    name = get_expanded_string(d, shlex, basename)
    if name == "":  # the image store would read "" as scratch
        raise errdefs.System(f"base name ({basename}) should not be blank")
    return await get_image_or_stage(d, name, platform)


async def get_image_or_stage(d: "DispatchRequest", name: str, platform: Platform | None) -> BuilderImage:
    local_only = False
    stage = d.stages.get_by_name(name)
    if stage is not None:
        name, local_only = stage.get("Image") or "", True
        if name == "":  # a stage on scratch that committed nothing
            return BuilderImage.scratch(platform or d.builder.platform)
    platform = platform or d.builder.platform
    if name == NO_BASE_IMAGE_SPECIFIER:
        return BuilderImage.scratch(platform)
    mount = await d.builder.image_sources.get(name, local_only, platform)
    return mount.image


async def get_image_mount(d: "DispatchRequest", image_ref_or_id: str) -> ImageMount | None:
    """The image of COPY --from: a stage (by name or index, local only) or any image."""
    if image_ref_or_id == "":
        return None
    local_only = False
    stage = d.stages.get(image_ref_or_id)
    if stage is not None:
        image_ref_or_id, local_only = stage.get("Image") or "", True
    return await d.builder.image_sources.get(image_ref_or_id, local_only, d.builder.platform)


# --- metadata instructions --------------------------------------------------------------------------------


async def dispatch_env(d: "DispatchRequest", c: EnvCommand) -> None:
    """ENV: set (or replace) variables in the config's Env, in order."""
    run_config = d.state.run_config
    env = list(run_config.get("Env") or [])
    message = "ENV"
    for pair in c.env:
        new_var = str(pair)
        message += " " + new_var
        for i, existing in enumerate(env):
            if existing.partition("=")[0] == pair.key:
                env[i] = new_var
                break
        else:
            env.append(new_var)
    run_config["Env"] = env
    await internals.commit(d.builder, d.state, message)


async def dispatch_maintainer(d: "DispatchRequest", c: MaintainerCommand) -> None:
    d.state.maintainer = c.maintainer
    await internals.commit(d.builder, d.state, "MAINTAINER " + c.maintainer)


async def dispatch_label(d: "DispatchRequest", c: LabelCommand) -> None:
    labels = dict(d.state.run_config.get("Labels") or {})
    message = "LABEL"
    for pair in c.labels:
        labels[pair.key] = pair.value
        message += " " + str(pair)
    d.state.run_config["Labels"] = labels
    await internals.commit(d.builder, d.state, message)


async def dispatch_onbuild(d: "DispatchRequest", c: OnbuildCommand) -> None:
    d.state.run_config["OnBuild"] = [*(d.state.run_config.get("OnBuild") or []), c.expression]
    await internals.commit(d.builder, d.state, "ONBUILD " + c.expression)


async def dispatch_cmd(d: "DispatchRequest", c: CmdCommand) -> None:
    if c.files:
        raise errdefs.System(f"heredocs {BUILDKIT_ONLY}")
    cmd = resolve_cmd_line(c, d.state.run_config)
    d.state.run_config["Cmd"] = cmd
    await internals.commit(d.builder, d.state, f"CMD {go_quote_list(cmd)}")
    if c.cmd_line:
        d.state.cmd_set = True


async def dispatch_healthcheck(d: "DispatchRequest", c: HealthCheckCommand) -> None:
    run_config = d.state.run_config
    old = (run_config.get("Healthcheck") or {}).get("Test") or []
    if old and old[0] != "NONE":
        d.builder.stdout.write(f"Note: overriding previous HEALTHCHECK: [{' '.join(old)}]\n")
    h = c.health
    health: dict[str, Any] = {"Test": list(h.test)}
    for key, value in (("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period),
                       ("StartInterval", h.start_interval), ("Retries", h.retries)):  # fmt: skip
        if value:
            health[key] = value
    run_config["Healthcheck"] = health
    # Go's %q of the *HealthConfig struct, as docker history shows it
    described = (
        f"&{{{go_quote_list(h.test)} {go_quote(go_duration(h.interval))} {go_quote(go_duration(h.timeout))} "
        f"{go_quote(go_duration(h.start_period))} {go_quote_rune(h.retries)}}}"
    )
    await internals.commit(d.builder, d.state, f"HEALTHCHECK {described}")


async def dispatch_entrypoint(d: "DispatchRequest", c: EntrypointCommand) -> None:
    if c.files:
        raise errdefs.System(f"heredocs {BUILDKIT_ONLY}")
    run_config = d.state.run_config
    run_config["Entrypoint"] = resolve_cmd_line(c, run_config)
    if not d.state.cmd_set:
        run_config["Cmd"] = None  # a new ENTRYPOINT drops the base image's CMD
    await internals.commit(d.builder, d.state, f"ENTRYPOINT {go_quote_list(run_config['Entrypoint'])}")


async def dispatch_expose(d: "DispatchRequest", c: ExposeCommand, envs: list[str]) -> None:
    """EXPOSE: the one instruction where a word may expand to several (`EXPOSE $PORTS`)."""
    try:
        c = c.expand_ports(lambda word: d.shlex.process_words(word, envs))
    except DockerfileError as err:
        raise errdefs.InvalidParameter(str(err)) from None
    exposed = dict(d.state.run_config.get("ExposedPorts") or {})
    for port in parse_port_specs(c.ports):
        exposed[port] = {}
    d.state.run_config["ExposedPorts"] = exposed
    await internals.commit(d.builder, d.state, "EXPOSE " + " ".join(c.ports))


async def dispatch_user(d: "DispatchRequest", c: UserCommand) -> None:
    d.state.run_config["User"] = c.user
    await internals.commit(d.builder, d.state, f"USER {c.user}")


async def dispatch_volume(d: "DispatchRequest", c: VolumeCommand) -> None:
    volumes = dict(d.state.run_config.get("Volumes") or {})
    for volume in c.volumes:
        if volume == "":
            raise errdefs.System("VOLUME specified can not be an empty string")
        volumes[volume] = {}
    d.state.run_config["Volumes"] = volumes
    await internals.commit(d.builder, d.state, f"VOLUME [{' '.join(c.volumes)}]")


async def dispatch_stop_signal(d: "DispatchRequest", c: StopSignalCommand) -> None:
    parse_signal(c.signal)
    d.state.run_config["StopSignal"] = c.signal
    await internals.commit(d.builder, d.state, f"STOPSIGNAL {c.signal}")


async def dispatch_arg(d: "DispatchRequest", c: ArgCommand) -> None:
    """ARG: declare build args for the rest of the stage (a default may come from a meta ARG)."""
    parts = []
    for arg in c.args:
        parts.append(arg.key if arg.value is None else f"{arg.key}={arg.value}")
        d.state.build_args.add_arg(arg.key, arg.value)
    await internals.commit(d.builder, d.state, "ARG " + " ".join(parts))


async def dispatch_shell(d: "DispatchRequest", c: ShellCommand) -> None:
    d.state.run_config["Shell"] = list(c.shell)
    await internals.commit(d.builder, d.state, f"SHELL [{' '.join(c.shell)}]")


# --- instructions that write files --------------------------------------------------------------------


async def dispatch_workdir(d: "DispatchRequest", c: WorkdirCommand) -> None:
    """WORKDIR: set the directory, and create it now in a container of its own."""
    run_config = d.state.run_config
    run_config["WorkingDir"] = internals.normalize_workdir(run_config.get("WorkingDir") or "", c.path)
    comment = "WORKDIR " + run_config["WorkingDir"]
    run_config_with_comment_cmd = copy_run_config(run_config, with_cmd_comment_string(comment))
    container = await internals.probe_and_create(d.builder, d.state, run_config_with_comment_cmd)
    if container is None:
        return
    layer = await d.builder.container_manager.rw_layer(container)
    await run_in_thread(_create_workdir, layer, run_config["WorkingDir"])
    await internals.commit_container(d.builder, d.state, container, run_config_with_comment_cmd)


def _create_workdir(layer: RWLayer, workdir: str) -> None:
    """ContainerCreateWorkdir: mkdir -p inside the root; only new directories are root's 0755."""
    with layer.root() as root:
        mkdir_all_and_chown_new(follow_symlink_in_scope(workdir.lstrip("/"), root), 0o755, root_pair())


async def dispatch_run(d: "DispatchRequest", c: RunCommand) -> None:
    """RUN: run the command in a container on the current image and commit what it changed."""
    if c.flags_used:  # the classic builder's RUN takes no flags
        raise requires_buildkit(f"--{c.flags_used[0]}")
    if c.files:
        raise errdefs.System(f"heredocs {BUILDKIT_ONLY}")
    state = d.state
    state_run_config = state.run_config
    cmd_from_args = resolve_cmd_line(c, state_run_config)
    build_args = state.build_args.filter_allowed(state_run_config.get("Env") or [])
    save_cmd = cmd_from_args
    if build_args:
        save_cmd = prepend_env_on_cmd(state.build_args, build_args, cmd_from_args)
    run_config_for_cache_probe = copy_run_config(
        state_run_config, with_cmd(save_cmd), with_entrypoint_override(save_cmd, None)
    )
    if await internals.probe_cache(d.builder, state, run_config_for_cache_probe):
        return
    run_config = copy_run_config(
        state_run_config,
        with_cmd(cmd_from_args),
        with_env([*(state_run_config.get("Env") or []), *build_args]),
        with_entrypoint_override(save_cmd, None),  # dockerd turns the [""] it is given into none
        without_healthcheck(),
    )
    container = await internals.create(d.builder, state, run_config)
    try:
        await d.builder.container_manager.run(container, d.builder.stdout, d.builder.stderr)
    except StatusCodeError as err:
        message = f"The command '{' '.join(cmd_from_args)}' returned a non-zero code: {err.code}"
        raise JSONError(message, err.code) from None
    await internals.commit_container(d.builder, state, container, run_config_for_cache_probe)


def prepend_env_on_cmd(build_args: BuildArgs, build_arg_vars: list[str], cmd: list[str]) -> list[str]:
    """`|N K=V ... cmd`: the build args a RUN saw belong to its cache key and history line."""
    kept = sorted(v for v in build_arg_vars if build_args.is_referenced_or_not_builtin(v.partition("=")[0]))
    return [f"|{len(kept)}", *kept, *cmd]


async def dispatch_add(d: "DispatchRequest", c: AddCommand) -> None:
    """ADD: COPY that also extracts local tar archives and downloads URLs."""
    _refuse_buildkit_only_copy_flags(c, ("link", "keep-git-dir", "checksum", "exclude"))
    b = d.builder
    downloader = new_remote_source_downloader(b.progress_output, b.stdout, b.components.tmp_dir)
    copier = Copier(d.source, b.components.path_cache, downloader)
    try:
        inst = await run_in_thread(copier.create_copy_instruction, c.source_paths, c.dest_path, "ADD")
        inst.chown_str, inst.chmod_str = c.chown, c.chmod
        inst.allow_local_decompression = True
        await internals.perform_copy(d.builder, d, inst)
    finally:
        await run_in_thread(copier.cleanup)


async def dispatch_copy(d: "DispatchRequest", c: CopyCommand) -> None:
    """COPY [--from=stage|image] [--chown] [--chmod] src... dest."""
    _refuse_buildkit_only_copy_flags(c, ("link", "parents", "exclude"))
    b = d.builder
    image_mount = None
    if c.from_:
        try:
            image_mount = await get_image_mount(d, c.from_)
        except errdefs.DockerError as err:
            raise type(err)(f"invalid from flag value {c.from_}: {err.message}") from None
    if image_mount is None:
        copier = Copier(d.source, b.components.path_cache, err_on_source_download)
        await _copy_with(d, c, copier, preserve_ownership=False)
        return
    # the --from image's tree is read through a snapshot of it, mounted (in a thread) for this one step
    layer = await image_mount.new_rw_layer()
    mounted = ExitStack()
    try:
        root = await run_in_thread(mounted.enter_context, layer.root(), discard=lambda _: mounted.close())
        copier = Copier(Source(root), b.components.path_cache, err_on_source_download, image_mount.image_id())
        await _copy_with(d, c, copier, preserve_ownership=not c.chown)
    finally:
        await run_in_thread(mounted.close)
        await run_in_thread(layer.release)


async def _copy_with(
    d: "DispatchRequest", c: CopyCommand, copier: Copier, *, preserve_ownership: bool
) -> None:
    inst = await run_in_thread(copier.create_copy_instruction, c.source_paths, c.dest_path, "COPY")
    inst.chown_str, inst.chmod_str = c.chown, c.chmod
    inst.preserve_ownership = preserve_ownership
    await internals.perform_copy(d.builder, d, inst)


def _refuse_buildkit_only_copy_flags(c: AddCommand | CopyCommand, names: tuple[str, ...]) -> None:
    if c.source_contents:
        raise errdefs.System(f"heredocs {BUILDKIT_ONLY}")
    given = {
        "link": c.link,
        "exclude": c.exclude_patterns,
        "parents": getattr(c, "parents", False),
        "keep-git-dir": getattr(c, "keep_git_dir", False),
        "checksum": getattr(c, "checksum", ""),
    }
    for name in names:
        if given[name]:
            raise requires_buildkit(f"--{name}")


# --- Go's formatting and parsing, as the history lines and errors need them -------------------------------


def go_quote_list(items: list[str]) -> str:
    """fmt's %q of a []string: `["a" "b"]`."""
    return "[" + " ".join(go_quote(item) for item in items) + "]"


def go_quote_rune(value: int) -> str:
    """fmt's %q of an int: the character literal (`'\\x00'` for 0, `'\\x03'` for 3)."""
    special = {
        7: "\\a",
        8: "\\b",
        9: "\\t",
        10: "\\n",
        11: "\\v",
        12: "\\f",
        13: "\\r",
        39: "\\'",
        92: "\\\\",
    }
    if value in special:
        return f"'{special[value]}'"
    if 0x20 <= value < 0x7F:
        return f"'{chr(value)}'"
    if value < 0x80:
        return f"'\\x{value:02x}'"
    return f"'\\u{value:04x}'" if value < 0x10000 else f"'\\U{value:08x}'"


def go_duration(ns: int) -> str:
    """time.Duration.String: `30s`, `1m30s`, `1.5s`, `100ms`, `0s`."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    text = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def parse_port_specs(ports: list[str]) -> list[str]:
    """nat.ParsePortSpecs for EXPOSE: `80`, `80/udp`, `8000-8010/tcp` -> `80/tcp`, ...; Docker's errors."""
    out = []
    for raw in ports:
        parts = raw.split(":")
        container = parts[-1]
        ip = ":".join(parts[:-2]) if len(parts) > 2 else ""
        host = parts[-2] if len(parts) > 1 else ""
        proto, container = _split_proto_port(container)
        if ip and not _is_ip(ip.strip("[]")):
            raise errdefs.System(f"Invalid ip address: {ip}")
        if container == "":
            raise errdefs.System(f"No port specified: {raw}<empty>")
        try:
            start, end = _parse_port_range(container)
        except ValueError:
            raise errdefs.System(f"Invalid containerPort: {container}") from None
        if host:
            try:
                host_start, host_end = _parse_port_range(host)
            except ValueError:
                raise errdefs.System(f"Invalid hostPort: {host}") from None
            if end - start != host_end - host_start and host_end != host_start:
                raise errdefs.System(
                    f"Invalid ranges specified for container and host Ports: {container} and {host}"
                )
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise errdefs.System(f"Invalid proto: {proto}")
        out += [f"{port}/{proto.lower()}" for port in range(start, end + 1)]
    return out


def _split_proto_port(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    start = _parse_port(low)
    end = _parse_port(high) if sep else start
    if end < start:
        raise ValueError(text)
    return start, end


def _parse_port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(text)
    return int(text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_signal(raw: str) -> int:
    """signal.ParseSignal: a number, or a name with or without SIG."""
    if raw.isdigit():
        number = int(raw)
        if number == 0:
            raise errdefs.InvalidParameter(f"Invalid signal: {raw}")
        return number
    name = raw.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
            return _realtime_signal(name, raw)
        raise errdefs.InvalidParameter(f"Invalid signal: {raw}") from None


def _realtime_signal(name: str, raw: str) -> int:
    base, _, offset = name.partition("+") if "+" in name else name.partition("-")
    number = signal.SIGRTMIN if base == "SIGRTMIN" else signal.SIGRTMAX
    if offset:
        if not offset.isdigit():
            raise errdefs.InvalidParameter(f"Invalid signal: {raw}")
        number += int(offset) if "+" in name else -int(offset)
    return int(number)
