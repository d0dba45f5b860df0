"""`minibuild [--host URL] COMMAND` (docker cmd/docker/docker.go, cli/cobra.go).

The daemon to talk to is `--host`, else $MINIBUILD_HOST, else the default socket. Errors are printed
as the docker CLI prints them, on stderr: `Error response from daemon: …` for a refused request, the
bare message of a failed build step; the exit status is the step's, 1 otherwise, 125 for bad flags.
"""

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import minibuild
from minibuild.api.jsonmessage import JSONError
from minibuild.cli.build import BUILD
from minibuild.cli.command import PROG, Command, StatusError
from minibuild.cli.image import BUSYBOX, HISTORY, IMAGES, IMPORT, INSPECT, LOAD, RMI, SAVE, TAG
from minibuild.cli.registry import LOGIN, LOGOUT, PULL, PUSH
from minibuild.cli.system import BUILDER_PRUNE, DAEMON, VERSION
from minibuild.client import APIClient
from minibuild.client.client import ClientError
from minibuild.client.context import ContextError
from minibuild.defaults import default_host
from minibuild.distribution.configfile import CONFIG_FILE_NAME, ConfigFile
from minibuild.distribution.errors import ConfigFileError

COMMANDS: list[Command] = [
    BUILD, BUSYBOX, DAEMON, HISTORY, IMAGES, IMPORT, INSPECT, LOAD, LOGIN, LOGOUT, PULL, PUSH, RMI, SAVE,
    TAG, VERSION,
]  # fmt: skip
MANAGEMENT: dict[str, tuple[str, list[Command]]] = {"builder": ("Manage builds", [BUILDER_PRUNE])}


@dataclass
class CLI:
    """What a command runs with: streams, environment, and a client made on first use."""

    host: str
    stdout: TextIO
    stderr: TextIO
    stdin: Any
    env: dict[str, str]
    clock: Callable[[], float] = time.time
    _client: APIClient | None = field(default=None, repr=False)

    def client(self) -> APIClient:
        if self._client is None:
            self._client = APIClient(self.host)
        return self._client

    def config_file(self) -> ConfigFile:
        """The docker CLI's config file ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).

        An unreadable file is reported and treated as empty, as the docker CLI does (a login then
        writes a fresh one).
        """
        home = self.env.get("HOME") or str(Path.home())
        path = Path(self.env.get("DOCKER_CONFIG") or Path(home) / ".docker") / CONFIG_FILE_NAME
        try:
            return ConfigFile.load(path)
        except ConfigFileError as err:
            self.stderr.write(f"WARNING: Error loading config file: {err}\n")
            return ConfigFile(path)

    def credentials(self) -> dict[str, Any]:
        """Every credential in the config file, sent with builds as X-Registry-Config."""
        return self.config_file().get_all_credentials()


def main_help() -> str:
    lines = [
        f"Usage:  {PROG} [OPTIONS] COMMAND",
        "",
        "docker build's path through dockerd, rebuilt in Python: a daemon speaking the Engine API 1.40",
        "",
        "Options:",
        f"  -H, --host string   Daemon socket to connect to (default $MINIBUILD_HOST, else {default_host()})",
        "  -v, --version       Print version information and quit",
        "",
        "Management Commands:",
    ]
    lines += [f"  {name:<10}  {short}" for name, (short, _) in MANAGEMENT.items()]
    lines += ["", "Commands:"]
    lines += [f"  {c.name:<10}  {c.short}" for c in COMMANDS]
    lines += ["", f"Run '{PROG} COMMAND --help' for more information on a command."]
    return "\n".join(lines) + "\n"


def _find(argv: list[str]) -> tuple[Command, list[str], str]:
    """The command named by argv (a management group takes a sub-command), its arguments, its path."""
    name, rest = argv[0], argv[1:]
    if name in MANAGEMENT:
        short, subcommands = MANAGEMENT[name]
        group = f"{PROG} {name}"
        if not rest or rest[0] in ("-h", "--help"):
            listing = "\n".join(f"  {c.name:<10}  {c.short}" for c in subcommands)
            raise StatusError(
                f"\nUsage:  {group} COMMAND\n\n{short}\n\nCommands:\n{listing}\n", 0 if rest else 1
            )
        for command in subcommands:
            if command.name == rest[0]:
                return command, rest[1:], group
        raise StatusError(f"{group}: '{rest[0]}' is not a {PROG} command.\nSee '{group} --help'", 1)
    for command in COMMANDS:
        if command.name == name or name in command.aliases:
            return command, rest, PROG
    raise StatusError(f"{PROG}: '{name}' is not a {PROG} command.\nSee '{PROG} --help'", 1)


def run(argv: list[str], cli: CLI) -> int:
    """Parse global options, run the command; the exit status. Errors are printed here."""
    try:
        while argv and argv[0].startswith("-"):
            opt = argv.pop(0)
            if opt in ("-h", "--help"):
                cli.stdout.write(main_help())
                return 0
            if opt in ("-v", "--version"):
                cli.stdout.write(f"{PROG} version {minibuild.__version__}\n")
                return 0
            if opt in ("-H", "--host") and argv:
                cli.host = argv.pop(0)
            elif opt.startswith(("--host=", "-H=")):
                cli.host = opt.split("=", 1)[1]
            else:
                raise StatusError(f"unknown flag: {opt}\nSee '{PROG} --help'.", 125)
        if not argv:
            cli.stdout.write(main_help())
            return 0
        command, args, parent = _find(argv)
        ns = command.parse(args, parent)
        return command.run(ns, cli) or 0
    except StatusError as err:
        if err.status:
            (cli.stdout if err.code == 0 else cli.stderr).write(err.status.rstrip("\n") + "\n")
        return err.code
    except (ClientError, ContextError, JSONError, ValueError, OSError) as err:
        cli.stderr.write(f"{err}\n")  # a stream's error too: the docker CLI exits 1 with its message
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """The `minibuild` console script."""
    cli = CLI(
        host=os.environ.get("MINIBUILD_HOST") or default_host(),
        stdout=sys.stdout,
        stderr=sys.stderr,
        stdin=sys.stdin,
        env=dict(os.environ),
    )
    try:
        return run(list(sys.argv[1:] if argv is None else argv), cli)
    except BrokenPipeError:
        return 1
    finally:
        if cli._client is not None:
            cli._client.close()


if __name__ == "__main__":
    sys.exit(main())
