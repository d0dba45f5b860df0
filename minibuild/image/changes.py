"""Dockerfile lines applied to a config, for import and commit (moby builder/dockerfile/builder.go
BuildFromConfig, with the dispatchers of dispatchers.go for the instructions it accepts).

`docker import --change 'CMD ["sh"]' --change 'ENV A=1'` sends each line as `changes`; dockerd parses
them as a Dockerfile, refuses instructions that would need a build (`run is not a valid change
command`), and applies the rest to an empty container config, expanding variables from the config's
own Env as a build would.
"""

import copy
import dataclasses
import posixpath
import re
import signal
from typing import Any

from minibuild import errdefs
from minibuild.dockerfile import (
    CmdCommand,
    DockerfileError,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    LabelCommand,
    OnbuildCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse,
    parse_instruction,
)
from minibuild.dockerfile.shell import Lex

# moby's validCommitCommands; STOPSIGNAL is accepted by later Docker releases as well.
VALID_COMMIT_COMMANDS = frozenset(
    {"cmd", "entrypoint", "healthcheck", "env", "expose", "label", "onbuild", "stopsignal", "user", "volume",
     "workdir"}
)  # fmt: skip
DEFAULT_SHELL = ["/bin/sh", "-c"]
_PROTOS = ("tcp", "udp", "sctp")


def build_from_config(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile `changes` to a copy of the container `config`; errors are InvalidParameter."""
    config = copy.deepcopy(config)
    if not changes:
        return config
    try:
        result = parse("\n".join(changes))
    except DockerfileError as err:
        raise errdefs.InvalidParameter(_message(err)) from err
    nodes = result.ast.children
    for node in nodes:
        if node.value not in VALID_COMMIT_COMMANDS:
            raise errdefs.InvalidParameter(f"{node.value} is not a valid change command")
    lex = Lex(result.escape_token)
    state = {"cmd_set": False}
    for node in nodes:
        try:
            command = parse_instruction(node)
            _dispatch(config, command, lex, state)
        except DockerfileError as err:
            raise errdefs.InvalidParameter(_message(err)) from err
    return config


def _message(err: DockerfileError) -> str:
    line = err.line or (err.location[0] if err.location else None)
    return f"dockerfile parse error line {line}: {err.msg}" if line else err.msg


def _dispatch(config: dict[str, Any], command: Any, lex: Lex, state: dict[str, bool]) -> None:
    env = list(config.get("Env") or [])

    def expand(word: str) -> str:
        return lex.process_word(word, env)

    if hasattr(command, "expand"):  # the instructions that support single-word expansion
        command = command.expand(expand)
    if isinstance(command, EnvCommand):  # ENV k=v: replace a variable in place, or append it
        variables = list(config.get("Env") or [])
        for pair in command.env:
            names = [v.split("=", 1)[0] for v in variables]
            if pair.key in names:
                variables[names.index(pair.key)] = str(pair)
            else:
                variables.append(str(pair))
        config["Env"] = variables
    elif isinstance(command, LabelCommand):
        labels = dict(config.get("Labels") or {})
        labels.update({pair.key: pair.value for pair in command.labels})
        config["Labels"] = labels
    elif isinstance(command, CmdCommand):
        config["Cmd"] = _command_line(config, command)
        state["cmd_set"] = state["cmd_set"] or bool(command.cmd_line)
    elif isinstance(command, EntrypointCommand):
        config["Entrypoint"] = _command_line(config, command)
        if not state["cmd_set"]:
            config["Cmd"] = None  # an ENTRYPOINT resets the inherited CMD
    elif isinstance(command, ExposeCommand):
        command = command.expand_ports(lambda word: lex.process_words(word, env))
        ports = dict(config.get("ExposedPorts") or {})
        for spec in command.ports:
            ports.update({port: {} for port in parse_port_spec(spec)})
        config["ExposedPorts"] = ports
    elif isinstance(command, UserCommand):
        config["User"] = command.user
    elif isinstance(command, VolumeCommand):
        volumes = dict(config.get("Volumes") or {})
        for volume in command.volumes:
            if not volume.strip():
                raise DockerfileError("VOLUME specified can not be an empty string")
            volumes[volume.strip()] = {}
        config["Volumes"] = volumes
    elif isinstance(command, WorkdirCommand):
        config["WorkingDir"] = normalize_workdir(config.get("WorkingDir") or "", command.path)
    elif isinstance(command, OnbuildCommand):
        config["OnBuild"] = [*(config.get("OnBuild") or []), command.expression]
    elif isinstance(command, StopSignalCommand):
        parse_signal(command.signal)
        config["StopSignal"] = command.signal
    elif isinstance(command, HealthCheckCommand):
        health = dataclasses.asdict(command.health)
        config["Healthcheck"] = {
            "Test": health["test"],
            "Interval": health["interval"],
            "Timeout": health["timeout"],
            "StartPeriod": health["start_period"],
            "StartInterval": health["start_interval"],
            "Retries": health["retries"],
        }


def _command_line(config: dict[str, Any], command: CmdCommand | EntrypointCommand) -> list[str] | None:
    if command.cmd_line is None:
        return None
    if command.prepend_shell:
        return [*(config.get("Shell") or DEFAULT_SHELL), *command.cmd_line]
    return list(command.cmd_line)


def normalize_workdir(current: str, requested: str) -> str:
    """WORKDIR relative to the previous one, cleaned (moby's normalizeWorkdir on Linux)."""
    if not requested:
        raise DockerfileError("cannot normalize nothing")
    if not requested.startswith("/"):
        return posixpath.normpath(posixpath.join("/", current, requested))
    return requested


def parse_port_spec(spec: str) -> list[str]:
    """The exposed ports of one EXPOSE word, as go-connections' nat.ParsePortSpecs names them."""
    port, _, proto = spec.rpartition(":")[2].partition("/")
    proto = proto or "tcp"
    if not port:
        raise DockerfileError(f"No port specified: {spec}<empty>")
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", port)
    if match is None or int(match.group(1)) > 65535 or int(match.group(2) or 0) > 65535:
        raise DockerfileError(f"Invalid containerPort: {port}")
    start, end = int(match.group(1)), int(match.group(2) or match.group(1))
    if end < start:
        raise DockerfileError(f"Invalid containerPort: {port}")
    if proto.lower() not in _PROTOS:
        raise DockerfileError(f"Invalid proto: {proto}")
    return [f"{n}/{proto.lower()}" for n in range(start, end + 1)]


def parse_signal(raw: str) -> int:
    """A signal number or name, with or without SIG (moby pkg/signal ParseSignal)."""
    if re.fullmatch(r"[+-]?\d+", raw):
        if int(raw) == 0:
            raise DockerfileError(f"Invalid signal: {raw}")
        return int(raw)
    name = raw.upper().removeprefix("SIG")
    realtime = re.fullmatch(r"RTM(IN|AX)(?:([+-])(\d+))?", name)
    if realtime:  # RTMIN, RTMIN+3, RTMAX-2 (moby's SignalMap lists them by these names)
        base = signal.SIGRTMIN if realtime.group(1) == "IN" else signal.SIGRTMAX
        offset = int(realtime.group(3) or 0) * (1 if realtime.group(2) == "+" else -1)
        if signal.SIGRTMIN <= base + offset <= signal.SIGRTMAX:
            return int(base + offset)
    elif hasattr(signal.Signals, "SIG" + name):
        return int(getattr(signal.Signals, "SIG" + name))
    raise DockerfileError(f"Invalid signal: {raw}")
