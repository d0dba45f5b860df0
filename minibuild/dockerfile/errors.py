"""Dockerfile front-end errors (buildkit frontend/dockerfile/parser/errors.go and the parseError of
frontend/dockerfile/instructions/parse.go).

Two kinds of refusal reach the user, worded differently by dockerd (see the build API reference, §4.1):

* instruction errors, found while turning the AST into instructions, carry the instruction's first line
  and read ``dockerfile parse error line 2: COPY requires at least two arguments, ...``;
* parser errors (`ParseError`), found while reading the file itself, show no line number: dockerd
  frames them as ``failed to parse Dockerfile: <msg>``. That framing lives in `daemon_message` only.

Both keep the instruction's line range in `location` for tools that want to point at the source.
"""

from __future__ import annotations


class DockerfileError(Exception):
    """A Dockerfile the front end refuses.

    `msg` is the bare message. When `line` is set, str() is the classic builder's
    ``dockerfile parse error line N: msg``; otherwise str() is `msg` alone.
    """

    def __init__(self, msg: str, line: int | None = None, *, location: tuple[int, int] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.line = line
        if location is None and line is not None:
            location = (line, line)
        self.location = location  # (start line, end line), 1-based, when known

    def __str__(self) -> str:
        if self.line is None:
            return self.msg
        return f"dockerfile parse error line {self.line}: {self.msg}"  # newer BuildKit: "error on line"

    def __reduce__(self):  # keep line and location across pickling (e.g. to a worker process)
        return _rebuild, (type(self), self.msg, self.line, self.location)


class ParseError(DockerfileError):
    """Refused by the parser itself, before any instruction is built (dockerd shows no line number)."""


def _rebuild(cls: type[DockerfileError], msg: str, line: int | None, location: tuple[int, int] | None):
    return cls(msg, line, location=location)


def daemon_message(err: DockerfileError) -> str:
    """The text dockerd answers with for `err`: parser errors get moby's "failed to parse Dockerfile: "."""
    if isinstance(err, ParseError):
        return f"failed to parse Dockerfile: {err}"
    return str(err)
