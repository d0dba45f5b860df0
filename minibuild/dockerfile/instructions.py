"""Typed instructions and build stages from the AST (buildkit frontend/dockerfile/instructions: parse.go,
commands.go, bflag.go, commands_runmount.go, commands_runnetwork.go, commands_runsecurity.go).

`parse(ast)` validates every instruction (arguments, flags) with upstream's wording and groups them into
stages. Values stay exactly as written: variables are expanded later, at dispatch, by the builders,
through each command's `expand(expander)` which returns an expanded copy.

Not validated here, on purpose: a stage name used twice. The classic builder only refuses it when it
reaches the second stage (after building the first); it calls `check_stage_name_available`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Self

from minibuild.dockerfile import gotext
from minibuild.dockerfile.errors import DockerfileError
from minibuild.dockerfile.heredoc import chomp_heredoc_content, must_parse_heredoc
from minibuild.dockerfile.parser import Node

Expander = Callable[[str], str]  # one word in, one word out (upstream's SingleWordExpander)

_VALID_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*[Oo][Nn][Bb][Uu][Ii][Ll][Dd][\t\n\f\r ]*")
MINIMUM_DURATION = 1_000_000  # ns: a healthcheck interval must be 0 (default) or at least 1ms


# ---- flags (bflag.go) --------------------------------------------------------------------------------


class BFlags:
    """The `--name=value` flags of one instruction, checked against the flags it declares."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.declared: dict[str, tuple[str, object]] = {}  # name -> (kind, default)
        self.values: dict[str, object] = {}
        self.used: list[str] = []  # in order of appearance

    def add_bool(self, name: str, default: bool = False) -> None:
        self.declared[name] = ("bool", default)

    def add_string(self, name: str, default: str = "") -> None:
        self.declared[name] = ("string", default)

    def add_strings(self, name: str) -> None:
        self.declared[name] = ("strings", [])

    def get(self, name: str):
        """The flag's value after `parse()` (its default when not given)."""
        kind, default = self.declared[name]
        return self.values.get(name, list(default) if kind == "strings" else default)

    def parse(self) -> None:
        for arg in self.args:
            name, has_value, value = arg[2:].partition("=")
            if name not in self.declared:  # dockerd's wording; newer BuildKit says "unknown flag: --x"
                raise DockerfileError(f"Unknown flag: {name}")
            kind = self.declared[name][0]
            if name in self.used and kind != "strings":
                raise DockerfileError(f"Duplicate flag specified: {name}")
            if name not in self.used:
                self.used.append(name)
            if kind == "bool":
                if has_value and not value:
                    raise DockerfileError(f"Missing a value on flag: {name}")
                if value.lower() not in ("", "true", "false"):
                    raise DockerfileError(f"Expecting boolean value for flag {name}, not: {value}")
                self.values[name] = value.lower() != "false"
            elif not has_value:
                raise DockerfileError(f"Missing a value on flag: {name}")
            elif kind == "string":
                self.values[name] = value
            else:
                self.values.setdefault(name, []).append(value)


# ---- commands (commands.go) ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Command:
    """What every instruction keeps: its keyword, its text as `Step i/N : ...` shows it, its lines."""

    name: str
    original: str
    line: int
    end_line: int

    def __str__(self) -> str:
        return self.original


@dataclass
class KeyValuePair:
    key: str
    value: str
    no_delim: bool = False  # written `ENV key value` rather than `ENV key=value`

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass
class KeyValuePairOptional:
    key: str
    value: str | None = None  # None: `ARG NAME` without a default


def _expand_pairs(pairs: list[KeyValuePair], expand: Expander) -> list[KeyValuePair]:
    return [dataclasses.replace(p, key=expand(p.key), value=expand(p.value)) for p in pairs]


@dataclass(kw_only=True)
class EnvCommand(Command):
    env: list[KeyValuePair]

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(self, env=_expand_pairs(self.env, expand))


@dataclass(kw_only=True)
class MaintainerCommand(Command):
    maintainer: str


@dataclass(kw_only=True)
class LabelCommand(Command):
    labels: list[KeyValuePair]
    no_expand: bool = False  # labels added from the `labels=` build parameter are taken literally

    def expand(self, expand: Expander) -> Self:
        if self.no_expand:
            return self
        return dataclasses.replace(self, labels=_expand_pairs(self.labels, expand))


def new_label_command(key: str, value: str, no_expand: bool) -> LabelCommand:
    """A LABEL step that is not in the Dockerfile (dockerd appends one per `labels=` entry)."""
    return LabelCommand(
        name="label",
        original=f"LABEL {key}={value}",
        line=0,
        end_line=0,
        labels=[KeyValuePair(key, value)],
        no_expand=no_expand,
    )


@dataclass
class SourceContent:
    """A COPY/ADD source given inline as a heredoc: `path` is its name, `data` its body."""

    path: str
    data: str
    expand: bool


@dataclass(kw_only=True)
class _SourcesAndDest(Command):
    source_paths: list[str]
    source_contents: list[SourceContent]
    dest_path: str
    chown: str = ""
    chmod: str = ""
    link: bool = False
    exclude_patterns: list[str] = field(default_factory=list)

    def expand(self, expand: Expander) -> Self:
        """Paths, destination, --chown and --chmod expanded (heredoc bodies: see SourceContent.expand)."""
        return dataclasses.replace(
            self,
            source_paths=[expand(p) for p in self.source_paths],
            dest_path=expand(self.dest_path),
            chown=expand(self.chown),
            chmod=expand(self.chmod),
        )


@dataclass(kw_only=True)
class AddCommand(_SourcesAndDest):
    keep_git_dir: bool = False
    checksum: str = ""

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(super().expand(expand), checksum=expand(self.checksum))


@dataclass(kw_only=True)
class CopyCommand(_SourcesAndDest):
    from_: str = ""  # --from: a stage name or index, or an image; expanded by the builder
    parents: bool = False


@dataclass(kw_only=True)
class OnbuildCommand(Command):
    expression: str  # the trigger's text, heredoc bodies appended, parsed again in the child build


@dataclass(kw_only=True)
class WorkdirCommand(Command):
    path: str

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(self, path=expand(self.path))


@dataclass
class ShellInlineFile:
    """A RUN heredoc: the body becomes a file the command reads (or runs, if it starts with #!)."""

    name: str
    data: str
    chomp: bool


@dataclass(kw_only=True)
class _ShellDependantCmdLine(Command):
    """A command line: shell form (`prepend_shell`, run by the SHELL) or exec form (a JSON array)."""

    cmd_line: list[str] | None
    prepend_shell: bool
    files: list[ShellInlineFile] = field(default_factory=list)


@dataclass
class Mount:
    """A `RUN --mount=...` (commands_runmount.go); fields follow buildkit's dockerui Mount."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = False
    cache_id: str = ""
    cache_sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size_limit: int = 0


@dataclass(kw_only=True)
class RunCommand(_ShellDependantCmdLine):
    mount_specs: list[str] = field(default_factory=list)  # the --mount values as written
    network: str = "default"
    security: str = "sandbox"
    flags_used: list[str] = field(default_factory=list)  # the classic builder refuses any

    def mounts(self, expand: Expander) -> list[Mount]:
        """The --mount specs parsed with variables expanded (at dispatch time, as upstream does)."""
        return [parse_mount(spec, expand) for spec in self.mount_specs]


@dataclass(kw_only=True)
class CmdCommand(_ShellDependantCmdLine):
    pass


@dataclass(kw_only=True)
class EntrypointCommand(_ShellDependantCmdLine):
    pass


@dataclass
class HealthConfig:
    """Docker's container.HealthConfig; durations in nanoseconds, 0 meaning "the default"."""

    test: list[str]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(kw_only=True)
class HealthCheckCommand(Command):
    health: HealthConfig


@dataclass(kw_only=True)
class ExposeCommand(Command):
    ports: list[str]

    def expand_ports(self, process_words: Callable[[str], list[str]]) -> Self:
        """EXPOSE is the one instruction where a word may expand to several (`EXPOSE $PORTS`)."""
        return dataclasses.replace(self, ports=[port for word in self.ports for port in process_words(word)])


@dataclass(kw_only=True)
class UserCommand(Command):
    user: str

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(self, user=expand(self.user))


@dataclass(kw_only=True)
class VolumeCommand(Command):
    volumes: list[str]

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(self, volumes=[expand(v) for v in self.volumes])


@dataclass(kw_only=True)
class StopSignalCommand(Command):
    signal: str

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(self, signal=expand(self.signal))


@dataclass(kw_only=True)
class ArgCommand(Command):
    args: list[KeyValuePairOptional]

    def expand(self, expand: Expander) -> Self:
        return dataclasses.replace(
            self,
            args=[
                KeyValuePairOptional(expand(a.key), None if a.value is None else expand(a.value))
                for a in self.args
            ],
        )


@dataclass(kw_only=True)
class ShellCommand(Command):
    shell: list[str]


@dataclass
class Stage:
    """A FROM and the commands after it. `name` is lower-cased (stage names are case-insensitive)."""

    name: str
    base_name: str
    platform: str
    original: str
    line: int
    end_line: int
    commands: list[Command] = field(default_factory=list)

    def __str__(self) -> str:
        return self.original


def has_stage(stages: Sequence[Stage], name: str) -> int | None:
    """Index of the stage called `name` (any case), or None (upstream's HasStage)."""
    name = name.casefold()
    return next((i for i, stage in enumerate(stages) if stage.name.casefold() == name), None)


def check_stage_name_available(used_names: Collection[str], name: str) -> None:
    """The classic builder's check before it builds a stage: raises `<name> stage name already used`."""
    if name and name.lower() in {used.lower() for used in used_names}:
        raise DockerfileError(f"{name} stage name already used")


# ---- parsing (parse.go) -------------------------------------------------------------------------------


@dataclass
class _Request:
    """What a parse function gets from a node (upstream's parseRequest)."""

    node: Node
    args: list[str]
    flags: BFlags

    def base(self) -> dict:
        node = self.node
        return {
            "name": node.value,
            "original": node.original,
            "line": node.start_line,
            "end_line": node.end_line,
        }


def _node_args(node: Node) -> list[str]:
    if node.nested is not None:  # ONBUILD: the trigger's keyword, then its arguments
        return [node.nested.value, *_node_args(node.nested)]
    return list(node.args)


def parse(ast: Node) -> tuple[list[Stage], list[ArgCommand]]:
    """The stages of a parsed Dockerfile, and the ARGs before its first FROM (the meta args)."""
    stages: list[Stage] = []
    meta_args: list[ArgCommand] = []
    for node in ast.children:
        try:
            instruction = parse_instruction(node)
        except DockerfileError as e:
            raise DockerfileError(e.msg, node.start_line, location=e.location) from e
        if isinstance(instruction, Stage):
            stages.append(instruction)
        elif not stages and isinstance(instruction, ArgCommand):
            meta_args.append(instruction)
        elif not stages:
            raise DockerfileError(
                "no build stage in current context", location=(node.start_line, node.end_line)
            )
        else:
            stages[-1].commands.append(instruction)
    return stages, meta_args


def parse_instruction(node: Node) -> Command | Stage:
    """One AST node as a typed instruction; errors carry the node's lines in `location` only."""
    parse_fn = _PARSERS.get(node.value)
    try:
        if parse_fn is None:  # upper-cased as dockerd shows it; newer BuildKit keeps the case written
            raise DockerfileError(f"unknown instruction: {gotext.upper(node.value)}")
        return parse_fn(_Request(node, _node_args(node), BFlags(node.flags)))
    except DockerfileError as e:
        e.location = e.location or (node.start_line, node.end_line)
        raise


def _parse_env(req: _Request) -> EnvCommand:
    req.flags.parse()
    return EnvCommand(**req.base(), env=_parse_kvps(req.args, "ENV"))


def _parse_maintainer(req: _Request) -> MaintainerCommand:
    _exactly_one(req, "MAINTAINER")
    req.flags.parse()
    return MaintainerCommand(**req.base(), maintainer=req.args[0])


def _parse_label(req: _Request) -> LabelCommand:
    req.flags.parse()
    return LabelCommand(**req.base(), labels=_parse_kvps(req.args, "LABEL"))


def _parse_kvps(args: list[str], keyword: str) -> list[KeyValuePair]:
    # the parser gives (key, value, separator) triples; separator "" is the old `ENV key value` form
    if not args:
        raise DockerfileError(f"{keyword} requires at least one argument")
    if len(args) % 3:
        raise DockerfileError(f"Bad input to {keyword}, too many arguments")
    pairs = []
    for key, value, delim in zip(args[::3], args[1::3], args[2::3], strict=True):
        if not key:
            raise DockerfileError(f"{keyword} names can not be blank")
        pairs.append(KeyValuePair(key, value, no_delim=delim == ""))
    return pairs


def _parse_sources_and_dest(req: _Request, keyword: str) -> dict:
    *sources, dest = req.args
    if must_parse_heredoc(dest) is not None:
        raise DockerfileError(f"{keyword} cannot accept a heredoc as a destination")
    bodies = {heredoc.name: heredoc for heredoc in req.node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for source in sources:
        heredoc = must_parse_heredoc(source)
        if heredoc is None:
            paths.append(source)
            continue
        body = bodies[heredoc.name].content if heredoc.name in bodies else ""
        if heredoc.chomp:
            body = chomp_heredoc_content(body)
        contents.append(SourceContent(path=heredoc.name, data=body, expand=heredoc.expand))
    return {"source_paths": paths, "source_contents": contents, "dest_path": dest}


def _parse_add(req: _Request) -> AddCommand:
    if len(req.args) < 2:
        raise _no_destination("ADD")
    flags = req.flags
    flags.add_strings("exclude")
    flags.add_string("chown")
    flags.add_string("chmod")
    flags.add_bool("link")
    flags.add_bool("keep-git-dir")
    flags.add_string("checksum")
    flags.parse()
    return AddCommand(
        **req.base(),
        **_parse_sources_and_dest(req, "ADD"),
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.get("link"),
        exclude_patterns=flags.get("exclude"),
        keep_git_dir=flags.get("keep-git-dir"),
        checksum=flags.get("checksum"),
    )


def _parse_copy(req: _Request) -> CopyCommand:
    if len(req.args) < 2:
        raise _no_destination("COPY")
    flags = req.flags
    flags.add_strings("exclude")
    flags.add_bool("parents")
    flags.add_string("chown")
    flags.add_string("from")
    flags.add_string("chmod")
    flags.add_bool("link")
    flags.parse()
    return CopyCommand(
        **req.base(),
        **_parse_sources_and_dest(req, "COPY"),
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.get("link"),
        exclude_patterns=flags.get("exclude"),
        from_=flags.get("from"),
        parents=flags.get("parents"),
    )


def _no_destination(keyword: str) -> DockerfileError:
    return DockerfileError(
        f"{keyword} requires at least two arguments, but only one was provided. "
        "Destination could not be determined"
    )


def _parse_from(req: _Request) -> Stage:
    args = req.args
    name = ""
    if len(args) == 3 and args[1].casefold() == "as":
        name = gotext.lower(args[2])
        if not _VALID_STAGE_NAME.fullmatch(name):
            raise DockerfileError(
                f"invalid name for build stage: {gotext.quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments")
    req.flags.add_string("platform")
    req.flags.parse()
    base = req.base()
    return Stage(
        name=name,
        base_name=args[0],
        platform=req.flags.get("platform"),
        original=base["original"],
        line=base["line"],
        end_line=base["end_line"],
    )


def _parse_onbuild(req: _Request) -> OnbuildCommand:
    if not req.args:
        raise DockerfileError("ONBUILD requires at least one argument")
    req.flags.parse()
    trigger = gotext.upper(gotext.trim_space(req.args[0]))
    if trigger == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", req.node.original, count=1)
    for heredoc in req.node.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    return OnbuildCommand(**req.base(), expression=expression)


def _parse_workdir(req: _Request) -> WorkdirCommand:
    _exactly_one(req, "WORKDIR")
    req.flags.parse()
    return WorkdirCommand(**req.base(), path=req.args[0])


def _handle_json_args(req: _Request) -> list[str]:
    if not req.args:
        return []
    return list(req.args) if req.node.json else [" ".join(req.args)]


def _cmd_line(req: _Request, empty_as_none: bool = False) -> dict:
    files = [ShellInlineFile(name=h.name, data=h.content, chomp=h.chomp) for h in req.node.heredocs]
    cmd_line = _handle_json_args(req)
    return {
        "cmd_line": None if empty_as_none and not cmd_line else cmd_line,
        "prepend_shell": not req.node.json,
        "files": files,
    }


def _parse_run(req: _Request) -> RunCommand:
    flags = req.flags
    flags.add_strings("mount")
    flags.add_string("network", "default")
    flags.add_string("security", "sandbox")
    flags.parse()
    command = RunCommand(
        **req.base(),
        **_cmd_line(req),
        mount_specs=flags.get("mount"),
        network=flags.get("network"),
        security=flags.get("security"),
        flags_used=list(flags.used),
    )
    for spec in command.mount_specs:
        parse_mount(spec, None)
    if command.network not in ("default", "none", "host"):
        raise DockerfileError(f"invalid network mode {gotext.quote(command.network)}")
    if command.security not in ("insecure", "sandbox"):
        raise DockerfileError(f"security {gotext.quote(command.security)} is not valid")
    return command


def _parse_cmd(req: _Request) -> CmdCommand:
    req.flags.parse()
    return CmdCommand(**req.base(), **_cmd_line(req))


def _parse_entrypoint(req: _Request) -> EntrypointCommand:
    req.flags.parse()
    return EntrypointCommand(**req.base(), **_cmd_line(req, empty_as_none=True))


def _parse_interval(flags: BFlags, name: str) -> int:
    value = flags.get(name)
    if not value:
        return 0
    try:
        duration = gotext.parse_duration(value)
    except ValueError as e:
        raise DockerfileError(str(e)) from None
    if duration != 0 and duration < MINIMUM_DURATION:
        raise DockerfileError(f"Interval {gotext.quote(name)} cannot be less than 1ms")
    return duration


def _parse_healthcheck(req: _Request) -> HealthCheckCommand:
    if not req.args:
        raise DockerfileError("HEALTHCHECK requires at least one argument")
    kind = gotext.upper(req.args[0])
    args = req.args[1:]
    if kind == "NONE":
        if args:  # upstream checks no flags for NONE
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        return HealthCheckCommand(**req.base(), health=HealthConfig(test=["NONE"]))
    flags = req.flags
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        flags.add_string(name)
    flags.parse()
    if kind != "CMD":
        raise DockerfileError(f"Unknown type {gotext.quote(kind)} in HEALTHCHECK (try CMD)")
    command = list(args) if req.node.json else ([" ".join(args)] if args else [])
    if not command:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    health = HealthConfig(test=["CMD" if req.node.json else "CMD-SHELL", *command])
    health.interval = _parse_interval(flags, "interval")
    health.timeout = _parse_interval(flags, "timeout")
    health.start_period = _parse_interval(flags, "start-period")
    health.start_interval = _parse_interval(flags, "start-interval")
    if flags.get("retries"):
        try:
            health.retries = gotext.parse_int(flags.get("retries"), 32)
        except ValueError as e:
            raise DockerfileError(str(e)) from None
        if health.retries < 1:  # moby 20.10's rule (measured); newer BuildKit takes 0 and says "negative"
            raise DockerfileError(f"--retries must be at least 1 (not {health.retries})")
    return HealthCheckCommand(**req.base(), health=health)


def _parse_expose(req: _Request) -> ExposeCommand:
    if not req.args:
        raise DockerfileError("EXPOSE requires at least one argument")
    req.flags.parse()
    return ExposeCommand(**req.base(), ports=sorted(req.args, key=gotext.encode))  # Go sorts bytes


def _parse_user(req: _Request) -> UserCommand:
    _exactly_one(req, "USER")
    req.flags.parse()
    return UserCommand(**req.base(), user=req.args[0])


def _parse_volume(req: _Request) -> VolumeCommand:
    if not req.args:
        raise DockerfileError("VOLUME requires at least one argument")
    req.flags.parse()
    volumes = [gotext.trim_space(v) for v in req.args]
    if "" in volumes:
        raise DockerfileError("VOLUME specified can not be an empty string")
    return VolumeCommand(**req.base(), volumes=volumes)


def _parse_stopsignal(req: _Request) -> StopSignalCommand:
    _exactly_one(req, "STOPSIGNAL")  # upstream checks no flags for STOPSIGNAL
    return StopSignalCommand(**req.base(), signal=req.args[0])


def _parse_arg(req: _Request) -> ArgCommand:
    if not req.args:
        raise DockerfileError("ARG requires at least one argument")
    req.flags.parse()
    pairs = []
    for arg in req.args:
        key, has_value, value = arg.partition("=")
        if has_value and not key:
            raise DockerfileError("ARG names can not be blank")
        pairs.append(KeyValuePairOptional(key, value if has_value else None))
    return ArgCommand(**req.base(), args=pairs)


def _parse_shell(req: _Request) -> ShellCommand:
    req.flags.parse()
    shell = _handle_json_args(req)
    if not shell:
        raise DockerfileError("SHELL requires at least one argument")
    if not req.node.json:
        raise DockerfileError("SHELL requires the arguments to be in JSON form")
    return ShellCommand(**req.base(), shell=shell)


def _exactly_one(req: _Request, keyword: str) -> None:
    if len(req.args) != 1:
        raise DockerfileError(f"{keyword} requires exactly one argument")


_PARSERS: dict[str, Callable[[_Request], Command | Stage]] = {
    "env": _parse_env,
    "maintainer": _parse_maintainer,
    "label": _parse_label,
    "add": _parse_add,
    "copy": _parse_copy,
    "from": _parse_from,
    "onbuild": _parse_onbuild,
    "workdir": _parse_workdir,
    "run": _parse_run,
    "cmd": _parse_cmd,
    "healthcheck": _parse_healthcheck,
    "entrypoint": _parse_entrypoint,
    "expose": _parse_expose,
    "user": _parse_user,
    "volume": _parse_volume,
    "stopsignal": _parse_stopsignal,
    "arg": _parse_arg,
    "shell": _parse_shell,
}


# ---- RUN --mount (commands_runmount.go) ----------------------------------------------------------------

_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING_MODES = ("shared", "private", "locked")
_RAM_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")


def parse_mount(spec: str, expand: Expander | None) -> Mount:
    """Parse one `--mount` value. Without `expand` (at parse time) only what needs no variables is checked:
    the CSV syntax and that `from` holds none; everything else waits for dispatch, as upstream does."""
    fields = _split_csv(spec)
    mount = Mount()
    ro_auto = True
    for item in fields:
        key, has_value, value = item.partition("=")
        key = key.lower()
        if not has_value:
            if expand is None:
                continue
            if key in ("readonly", "ro", "readwrite", "rw"):
                mount.read_only, ro_auto = key in ("readonly", "ro"), False
            elif key == "required" and mount.type in ("secret", "ssh"):
                mount.required = True
            elif key == "required":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mount.type}'")
            else:
                raise DockerfileError(f"invalid field '{item}' must be a key=value pair")
            continue
        if expand is None:
            if key == "from" and re.search(r"\$.", value):
                raise DockerfileError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead"
                )
            continue
        ro_auto = _set_mount_field(mount, key, expand(value), item) and ro_auto
    _validate_mount(mount, ro_auto)
    return mount


def _set_mount_field(mount: Mount, key: str, value: str, item: str) -> bool:
    """Set one key=value on `mount`; returns False when it decided read-only-ness explicitly."""
    try:
        if key == "type":
            if value.lower() not in _MOUNT_TYPES:
                raise DockerfileError(f"unsupported mount type {gotext.quote(value)}")
            mount.type = value.lower()
        elif key == "from":
            mount.from_ = value
        elif key in ("source", "src"):
            mount.source = value
        elif key in ("target", "dst", "destination"):
            mount.target = value
        elif key in ("readonly", "ro", "readwrite", "rw"):
            flag = gotext.parse_bool(value)
            mount.read_only = flag if key in ("readonly", "ro") else not flag
            return False
        elif key == "required":
            if mount.type not in ("secret", "ssh"):
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mount.type}'")
            mount.required = gotext.parse_bool(value)
        elif key == "size":
            if mount.type != "tmpfs":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{mount.type}'")
            mount.size_limit = _ram_in_bytes(value)
        elif key == "id":
            mount.cache_id = value
        elif key == "sharing":
            if value.lower() not in _SHARING_MODES:
                raise DockerfileError(f"unsupported sharing value {gotext.quote(value)}")
            mount.cache_sharing = value.lower()
        elif key == "mode":
            mount.mode = gotext.parse_uint(value, 8, 32)
        elif key in ("uid", "gid"):
            setattr(mount, key, gotext.parse_uint(value, 10, 32))
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{item}'")
    except ValueError:
        if key in ("mode", "uid", "gid"):
            raise DockerfileError(f"invalid value {value} for {key}") from None
        raise DockerfileError(f"invalid value for {key}: {value}") from None
    return True


def _ram_in_bytes(value: str) -> int:
    # docker/go-units RAMInBytes: binary multiples, "64m" = 64 MiB
    match = _RAM_SIZE.fullmatch(value)
    if not match:
        raise ValueError(value)
    multiplier = 1024 ** ("kmgtp".index(match.group(2).lower()) + 1) if match.group(2) else 1
    return int(float(match.group(1)) * multiplier)


def _validate_mount(mount: Mount, ro_auto: bool) -> None:
    if mount.type not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if getattr(mount, key) is not None:
                raise DockerfileError(f"{key} not allowed for {gotext.quote(mount.type)} type mounts")
    if ro_auto:
        mount.read_only = mount.type not in ("cache", "tmpfs")
    if mount.type == "secret":
        if mount.from_:
            raise DockerfileError("secret mount should not have a from")
        if mount.cache_sharing:
            raise DockerfileError("secret mount should not define sharing")
        if not (mount.source or mount.target or mount.cache_id):
            raise DockerfileError("invalid secret mount. one of source, target required")
        if mount.source and mount.cache_id:
            raise DockerfileError("both source and id can't be set")
    if mount.cache_sharing and mount.type != "cache":
        raise DockerfileError(f"invalid cache sharing set for {mount.type} mount")


def _split_csv(spec: str) -> list[str]:
    """One record of Go's encoding/csv: commas separate fields, a field may be "quoted" ("" is a quote)."""
    if not spec:
        raise DockerfileError("failed to parse csv mounts: EOF")
    fields: list[str] = []
    pos = 0
    while True:
        if spec.startswith('"', pos):
            value, pos = _csv_quoted(spec, pos + 1)
        else:
            end = spec.find(",", pos)
            end = len(spec) if end < 0 else end
            value = spec[pos:end]
            if '"' in value:
                column = len(gotext.encode(spec[: pos + value.index('"')])) + 1
                raise DockerfileError(
                    f"failed to parse csv mounts: parse error on line 1, column {column}: "
                    'bare " in non-quoted-field'
                )
            pos = end
        fields.append(value)
        if pos >= len(spec):
            return fields
        pos += 1  # the comma


def _csv_quoted(spec: str, pos: int) -> tuple[str, int]:
    value: list[str] = []
    while True:
        end = spec.find('"', pos)
        if end < 0:
            break
        value.append(spec[pos:end])
        if spec.startswith('"', end + 1):  # "" stands for one quote
            value.append('"')
            pos = end + 2
            continue
        if end + 1 == len(spec) or spec[end + 1] == ",":
            return "".join(value), end + 1
        break
    column = len(gotext.encode(spec)) + 1
    raise DockerfileError(
        f"failed to parse csv mounts: parse error on line 1, column {column}: "
        'extraneous or missing " in quoted-field'
    )
