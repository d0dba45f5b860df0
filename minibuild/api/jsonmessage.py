"""The JSON message stream and how the docker CLI displays it (moby pkg/jsonmessage/jsonmessage.go).

Every streaming endpoint (`/build`, `/images/load`, `/images/create`) writes a sequence of JSONMessage
objects. `JSONMessage.to_json()` gives the exact wire form (Go field order, empty fields omitted);
`decode_stream` reads them back and `display_json_messages_stream` prints them like the docker CLI.
"""

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from minibuild import gojson
from minibuild.api.units import human_size


class JSONError(Exception):
    """An `errorDetail`: the error that ends a stream; `code` is a RUN's exit status (0 when absent)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.code:
            out["code"] = self.code
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class JSONProgress:
    """`progressDetail`, and the bar Docker draws from it (`[=====>    ]  1.5MB/3MB`)."""

    current: int = 0
    total: int = 0
    start: int = 0
    hide_counts: bool = False
    units: str = ""

    def to_dict(self) -> dict[str, Any]:
        pairs = [
            ("current", self.current),
            ("total", self.total),
            ("start", self.start),
            ("hidecounts", self.hide_counts),
            ("units", self.units),
        ]
        return {k: v for k, v in pairs if v}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JSONProgress":
        return cls(
            int(d.get("current") or 0),
            int(d.get("total") or 0),
            int(d.get("start") or 0),
            bool(d.get("hidecounts")),
            str(d.get("units") or ""),
        )

    def string(self, width: int = 200, now: float | None = None) -> str:
        """JSONProgress.String(); a daemon has no terminal, so Go uses a width of 200 there."""
        if self.current <= 0 and self.total <= 0:
            return ""
        if self.total <= 0:
            return f"{human_size(self.current):>8}" if not self.units else f"{self.current} {self.units}"
        percentage = min(int(self.current / self.total * 100) // 2, 50)
        bar = ""
        if width > 110:
            bar = "[" + "=" * percentage + ">" + " " * max(50 - percentage, 0) + "] "
        numbers = ""
        if self.hide_counts:
            pass
        elif not self.units:
            numbers = f"{human_size(self.current):>8}"
            if self.current <= self.total:
                numbers += "/" + human_size(self.total)
        else:
            numbers = f"{self.current} {self.units}"
            if self.current <= self.total:
                numbers = f"{self.current}/{self.total} {self.units}"
        time_left = ""
        if self.current > 0 and self.start > 0 and percentage < 50 and width > 50:
            elapsed = (now if now is not None else time.time()) - self.start
            left = int(elapsed / self.current * (self.total - self.current))
            time_left = " " + _go_duration(left)
        return bar + numbers + time_left


def _go_duration(seconds: int) -> str:
    """time.Duration.String() for whole seconds: `0s`, `45s`, `1m5s`, `2h0m3s`."""
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


@dataclass
class JSONMessage:
    """One message of a stream; attributes are Go's JSONMessage fields."""

    stream: str = ""
    status: str = ""
    progress: JSONProgress | None = None
    progress_message: str = ""
    id: str = ""
    from_: str = ""
    time: int = 0
    time_nano: int = 0
    error: JSONError | None = None
    error_message: str = ""
    aux: Any = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (
            ("stream", self.stream),
            ("status", self.status),
            ("progressDetail", self.progress.to_dict() if self.progress is not None else None),
            ("progress", self.progress_message),
            ("id", self.id),
            ("from", self.from_),
            ("time", self.time),
            ("timeNano", self.time_nano),
            ("errorDetail", self.error.to_dict() if self.error is not None else None),
            ("error", self.error_message),
            ("aux", self.aux),
        ):
            if value or (value is not None and key in ("progressDetail", "errorDetail")):
                out[key] = value
        return out

    def to_json(self) -> bytes:
        """The wire form: compact Go JSON followed by CR LF."""
        return gojson.dumpb(self.to_dict()) + b"\r\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JSONMessage":
        detail = d.get("errorDetail")
        return cls(
            stream=str(d.get("stream") or ""),
            status=str(d.get("status") or ""),
            progress=JSONProgress.from_dict(d["progressDetail"])
            if d.get("progressDetail") is not None
            else None,
            progress_message=str(d.get("progress") or ""),
            id=str(d.get("id") or ""),
            from_=str(d.get("from") or ""),
            time=int(d.get("time") or 0),
            time_nano=int(d.get("timeNano") or 0),
            error=JSONError(str(detail.get("message") or ""), int(detail.get("code") or 0))
            if isinstance(detail, dict)
            else None,
            error_message=str(d.get("error") or ""),
            aux=d.get("aux"),
        )


def decode_stream(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Successive JSON values from a byte stream, as Go's json.Decoder reads them (any whitespace between)."""
    decoder = json.JSONDecoder()
    buf = ""
    pending = b""
    for chunk in chunks:
        pending += chunk
        try:
            buf += pending.decode("utf-8")
            pending = b""
        except UnicodeDecodeError as e:  # a character split across chunks: keep its start for later
            buf += pending[: e.start].decode("utf-8")
            pending = pending[e.start :]
        while True:
            stripped = buf.lstrip(" \t\r\n")
            if not stripped:
                buf = ""
                break
            try:
                value, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError:
                buf = stripped  # incomplete: wait for more bytes
                break
            buf = stripped[end:]
            yield value
    rest = (buf + pending.decode("utf-8", "replace")).strip(" \t\r\n")
    if rest:
        raise JSONError("unexpected EOF")  # Go's io.ErrUnexpectedEOF for a truncated last message


_ESC = "\x1b"


def _cursor_up(out: TextIO, n: int) -> None:
    if n:
        out.write(f"{_ESC}[{n}A")


def _cursor_down(out: TextIO, n: int) -> None:
    if n:
        out.write(f"{_ESC}[{n}B")


def display(jm: JSONMessage, out: TextIO, is_terminal: bool, width: int = 200) -> None:
    """JSONMessage.Display: print one message; raise its error if it carries one."""
    if jm.error is not None:
        if jm.error.code == 401:
            raise JSONError("authentication is required")
        raise jm.error
    endl = ""
    if is_terminal and not jm.stream and jm.progress is not None:
        out.write(f"{_ESC}[2K\r")  # clear the line the bar is redrawn on
        endl = "\r"
    elif jm.progress is not None and jm.progress.string(width):
        return  # no progress bars when not on a terminal
    if jm.id:
        out.write(f"{jm.id}: ")
    if jm.from_:
        out.write(f"(from {jm.from_}) ")
    if jm.progress is not None and is_terminal:
        out.write(f"{jm.status} {jm.progress.string(width)}{endl}")
    elif jm.progress_message:
        out.write(f"{jm.status} {jm.progress_message}{endl}")
    elif jm.stream:
        out.write(f"{jm.stream}{endl}")
    else:
        out.write(f"{jm.status}{endl}\n")


def display_json_messages_stream(
    messages: Iterable[dict[str, Any]],
    out: TextIO,
    is_terminal: bool,
    aux_callback: Callable[[JSONMessage], None] | None = None,
    width: int = 200,
) -> None:
    """DisplayJSONMessagesStream: print a stream; `aux` messages go to the callback; errors are raised."""
    ids: dict[str, int] = {}
    for raw in messages:
        jm = JSONMessage.from_dict(raw)
        if jm.aux is not None:
            if aux_callback is not None:
                aux_callback(jm)
            continue
        diff = 0
        if jm.id and (jm.progress is not None or jm.progress_message):
            # Each id keeps its own line on a terminal; move up to it, redraw, move back.
            line = ids.get(jm.id)
            if line is None:
                line = len(ids)
                ids[jm.id] = line
                if is_terminal:
                    out.write("\n")
            diff = len(ids) - line
            if is_terminal:
                _cursor_up(out, diff)
        else:
            ids = {}
        try:
            display(jm, out, is_terminal, width)
        finally:
            if jm.id and is_terminal:
                _cursor_down(out, diff)
        out.flush()


def display_json_messages_to_stream(
    messages: Iterable[dict[str, Any]],
    out: TextIO,
    aux_callback: Callable[[JSONMessage], None] | None = None,
) -> None:
    """DisplayJSONMessagesToStream: the same, drawn as a terminal only when `out` is one."""
    display_json_messages_stream(messages, out, out.isatty(), aux_callback)
