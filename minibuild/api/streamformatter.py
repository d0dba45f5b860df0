"""Writers that turn build output into the JSON message stream (moby pkg/streamformatter).

Builders never format JSON themselves: they write text to `StdoutWriter`/`StderrWriter`
(`{"stream":…}`; stderr wrapped in ANSI bright red, as dockerd does), emit image ids through
`AuxFormatter` (`{"aux":{"ID":…}}`), report progress through `JSONProgressOutput`, and the router ends a
failed stream with `format_error` (`{"errorDetail":{"code":3,"message":…},"error":…}`, key order exact).
Every message is compact Go JSON followed by CR LF.

The writers wrap a `Sink`: anything with a synchronous `write(bytes)`. The daemon's sink sends each
message as its own HTTP chunk; quiet builds (`q=1`) use a `BufferSink` that the router sends whole only
if the build fails (reference §5.7). The raw formatter at the end is the CLI's, for plain-text progress.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from minibuild.api.jsonmessage import JSONError, JSONMessage, JSONProgress

STREAM_NEWLINE = b"\r\n"


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class BufferSink:
    """Collects messages in memory (quiet builds keep the verbose log to send it only on failure)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data

    def getvalue(self) -> bytes:
        return bytes(self.buffer)


def format_status(id: str, status: str) -> bytes:
    """`{"status":…,"id":…}` + CR LF (jsonProgressFormatter.formatStatus)."""
    return JSONMessage(status=status, id=id).to_json()


def format_error(err: BaseException) -> bytes:
    """The message that ends a failed stream; a JSONError keeps its code (a RUN's exit status)."""
    detail = err if isinstance(err, JSONError) else JSONError(str(err))
    return JSONMessage(error=detail, error_message=str(err)).to_json()


class StreamWriter:
    """A writer whose every write becomes one `{"stream":…}` message (streamformatter.streamWriter)."""

    def __init__(self, sink: Sink, line_format: Callable[[str], str] = lambda s: s) -> None:
        self.sink = sink
        self.line_format = line_format

    def write(self, data: bytes | str) -> int:
        # Go's string(buf) + json.Marshal: invalid UTF-8 becomes U+FFFD.
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        self.sink.write(JSONMessage(stream=self.line_format(text)).to_json())
        return len(data)


def new_stdout_writer(sink: Sink) -> StreamWriter:
    """NewStdoutWriter: text as is."""
    return StreamWriter(sink)


def new_stderr_writer(sink: Sink) -> StreamWriter:
    """NewStderrWriter: each piece wrapped in bright red, the only way clients can tell stderr apart."""
    return StreamWriter(sink, lambda s: "\x1b[91m" + s + "\x1b[0m")


@dataclass
class AuxFormatter:
    """Emits out-of-band data: `{"aux":{"ID":"sha256:…"}}` after each stage, BuildKit traces with an id."""

    sink: Sink

    def emit(self, id: str, aux: Any) -> None:
        self.sink.write(JSONMessage(id=id, aux=aux).to_json())


@dataclass
class Progress:
    """One progress update (moby pkg/progress.Progress): a non-empty `message` is a status line, else
    `action` with byte counts (pulls and pushes make them through minibuild.distribution.progress)."""

    id: str = ""
    message: str = ""
    action: str = ""
    current: int = 0
    total: int = 0
    units: str = ""
    aux: Any = None
    last_update: bool = False
    hide_counts: bool = False


def progress_message(prog: Progress) -> JSONMessage:
    """The message for one update (jsonProgressOutput.WriteProgress): a status, or an action with its
    counts and the bar drawn for old clients."""
    if prog.message:
        return JSONMessage(status=prog.message, id=prog.id)
    detail = JSONProgress(prog.current, prog.total, hide_counts=prog.hide_counts, units=prog.units)
    return JSONMessage(
        status=prog.action, progress=detail, progress_message=detail.string(), id=prog.id, aux=prog.aux
    )


class JSONProgressOutput:
    """Progress as JSON messages (NewJSONProgressOutput): pulls, pushes, load/import layers, downloads."""

    def __init__(self, sink: Sink, newlines: bool = False) -> None:
        self.sink = sink
        self.newlines = newlines

    def write_progress(self, prog: Progress) -> None:
        self.sink.write(progress_message(prog).to_json())
        if self.newlines and prog.last_update:
            self.sink.write(format_status("", ""))


def raw_format_progress(action: str, progress: JSONProgress, width: int = 200) -> bytes:
    """rawProgressFormatter.formatProgress: the CLI's `Sending build context …` line, ended by CR."""
    text = progress.string(width)
    endl = "\r" if text else "\r\n"
    return (action + " " + text + endl).encode()


def raw_format_status(status: str) -> bytes:
    """rawProgressFormatter.formatStatus: the text and CR LF."""
    return status.encode() + STREAM_NEWLINE
