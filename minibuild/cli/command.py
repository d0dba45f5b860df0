"""Commands, flags and help text in the docker CLI's shape (docker cli/cobra.go, spf13/pflag's usage).

Each command is a function with its help text beside it: `Command(name, usage, short, flags, run)`.
Flags are declared once (`Flag`) and drive both parsing (argparse) and the help, which reads like
`docker build --help`: `Usage:  minibuild build [OPTIONS] PATH | URL | -`, the one-line description,
then `Options:` aligned as pflag aligns them, with a type word (`string`, `list`) and `(default …)`.
Bad flags or arguments print `See 'minibuild build --help'.` and exit 125 (flags) or 1 (arguments),
as the docker CLI does.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROG = "minibuild"


class StatusError(Exception):
    """An exit status with an optional message for stderr (cli.StatusError)."""

    def __init__(self, status: str, code: int) -> None:
        super().__init__(status)
        self.status = status
        self.code = code


@dataclass
class Flag:
    """One option. kind: bool, string, list (repeatable), int; `type_word` overrides the help's word."""

    names: tuple[str, ...]
    help: str
    kind: str = "bool"
    default: Any = None
    dest: str | None = None
    type_word: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def long(self) -> str:
        return next(n for n in self.names if n.startswith("--"))

    def attr(self) -> str:
        return self.dest or self.long[2:].replace("-", "_")

    def usage_left(self) -> str:
        short = next((n for n in self.names if not n.startswith("--")), None)
        left = f"  {short}, {self.long}" if short else f"      {self.long}"
        word = self.type_word or {"bool": "", "string": "string", "list": "list", "int": "int"}[self.kind]
        return left + (f" {word}" if word else "")

    def usage_right(self) -> str:
        default = self.default
        if self.kind == "bool" and default:
            return f"{self.help} (default true)"
        if self.kind == "string" and default:
            return f'{self.help} (default "{default}")'
        if self.kind == "int" and default:
            return f"{self.help} (default {default})"
        return self.help


@dataclass
class Command:
    name: str
    usage: str  # what follows the command name, e.g. "[OPTIONS] PATH | URL | -"
    short: str
    run: Callable[[argparse.Namespace, Any], int | None]
    flags: list[Flag] = field(default_factory=list)
    # How many positional arguments, (min, max or None), as the docker CLI's validators: (0, 0) NoArgs,
    # (n, n) ExactArgs, (n, None) RequiresMinArgs, (0, n) RequiresMaxArgs, else RequiresRangeArgs.
    args: tuple[int, int | None] = (0, 0)
    aliases: tuple[str, ...] = ()

    def help_text(self, parent: str = PROG) -> str:
        lines = [f"Usage:  {parent} {self.name} {self.usage}".rstrip(), "", self.short]
        if self.aliases:
            lines += ["", "Aliases:", "  " + ", ".join((self.name, *self.aliases))]
        if self.flags:
            lines += ["", "Options:"]
            lefts = [f.usage_left() for f in self.flags]
            width = max(len(x) for x in lefts) + 3  # pflag: the longest flag, then three spaces
            for left, flag in zip(lefts, self.flags, strict=True):
                lines.append(left.ljust(width) + flag.usage_right())
        return "\n".join(lines) + "\n"

    def parse(self, argv: list[str], parent: str = PROG) -> argparse.Namespace:
        parser = _Parser(self, parent)
        for flag in self.flags:
            kwargs: dict[str, Any] = {"dest": flag.attr()}
            if flag.kind == "bool":
                kwargs.update(action=_BoolAction, default=bool(flag.default))
            elif flag.kind == "list":
                kwargs.update(action="append", default=None)
            elif flag.kind == "int":
                kwargs.update(type=int, default=flag.default or 0)
            else:
                kwargs.update(default=flag.default if flag.default is not None else "", choices=flag.choices)
            parser.add_argument(*flag.names, **kwargs)
        parser.add_argument("-h", "--help", action="store_true", dest="_help")
        parser.add_argument("args", nargs="*")
        argv, falses = _split_bool_values(argv, self.flags)
        ns = parser.parse_intermixed_args(argv)
        for flag in falses:
            setattr(ns, flag.attr(), False)
        for flag in self.flags:
            if flag.kind == "list" and getattr(ns, flag.attr()) is None:
                setattr(ns, flag.attr(), [])
        if ns._help:
            raise StatusError(self.help_text(parent), 0)  # printed on stdout, exit status 0
        lo, hi = self.args
        if len(ns.args) < lo or (hi is not None and len(ns.args) > hi):
            raise StatusError(self._args_message(lo, hi, parent), 1)
        return ns

    def _args_message(self, lo: int, hi: int | None, parent: str) -> str:
        """The docker CLI's cli/required.go wording, by the validator the (min, max) pair stands for."""
        full = f"{parent} {self.name}"
        if hi == 0:  # NoArgs
            what = f'"{full}" accepts no arguments.'
        elif lo == hi:  # ExactArgs
            what = f'"{full}" requires exactly {_arguments(lo)}.'
        elif hi is None:  # RequiresMinArgs
            what = f'"{full}" requires at least {_arguments(lo)}.'
        elif lo == 0:  # RequiresMaxArgs
            what = f'"{full}" requires at most {_arguments(hi)}.'
        else:  # RequiresRangeArgs: the plural follows the maximum
            what = f'"{full}" requires at least {lo} and at most {_arguments(hi)}.'
        return f"{what}\nSee '{full} --help'.\n\nUsage:  {full} {self.usage}\n\n{self.short}"


def _arguments(count: int) -> str:
    """`1 argument`, `2 arguments` (pluralize)."""
    return f"{count} argument" + ("" if count == 1 else "s")


def _split_bool_values(argv: list[str], flags: list[Flag]) -> tuple[list[str], list[Flag]]:
    """pflag accepts `--rm=false`: take such values out, and report which flags were set false."""
    by_name = {n: f for f in flags if f.kind == "bool" for n in f.names}
    rest, falses = [], []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in by_name and value.lower() in ("true", "false", "1", "0", "t", "f"):
            if value.lower() in ("false", "0", "f"):
                falses.append(by_name[name])
            else:
                rest.append(name)
        else:
            rest.append(arg)
    return rest, falses


class _BoolAction(argparse.Action):
    """pflag's bool: `--rm`, `--rm=false`, `--rm=true` (never a separate value)."""

    def __init__(self, option_strings: list[str], dest: str, default: bool = False, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, **kw)

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: str | None = None
    ):
        setattr(ns, self.dest, True)


class _Parser(argparse.ArgumentParser):
    def __init__(self, command: Command, parent: str) -> None:
        super().__init__(prog=f"{parent} {command.name}", add_help=False, allow_abbrev=False)
        self.command = command
        self.parent = parent

    def error(self, message: str) -> None:  # type: ignore[override]
        full = f"{self.parent} {self.command.name}"
        raise StatusError(f"{message}\nSee '{full} --help'.", 125)
