"""Build progress: vertex events and their wire form (buildkit util/progress, client/graph.go,
api/services/control/control.proto StatusResponse).

The solver reports what happens to each vertex (announced, started, completed, cached, failed), the
sub-steps of a vertex (`VertexStatus`: `exporting layers`, `writing image sha256:…`) and the output of
RUN steps (`VertexLog`). A `ProgressWriter` collects them for one build; readers get them as
`StatusResponse` batches, the message dockerd marshals into every `moby.buildkit.trace` aux.

The encoding is dockerd's: proto3 binary of moby.buildkit.v1.StatusResponse (field numbers and wire
types as the reference records them), so `StatusResponse.unmarshal` reads dockerd's traces and ours.
Every update re-sends the whole vertex, as BuildKit does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

STDOUT, STDERR = 1, 2
CANCELED = "context canceled"  # what an interrupted vertex reports, as Go's context.Canceled reads


@dataclass
class Vertex:
    """client.Vertex: a vertex as the progress stream shows it. Times are Unix seconds (float)."""

    digest: str
    inputs: list[str] = field(default_factory=list)
    name: str = ""
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""


@dataclass
class VertexStatus:
    """client.VertexStatus: a named sub-step of a vertex, with optional counters."""

    id: str
    vertex: str
    name: str = ""
    current: int = 0
    total: int = 0
    timestamp: float | None = None
    started: float | None = None
    completed: float | None = None


@dataclass
class VertexLog:
    """client.VertexLog: one piece of a RUN's output, as it was read (stream 1 stdout, 2 stderr)."""

    vertex: str
    stream: int
    data: bytes
    timestamp: float | None = None


@dataclass
class VertexWarning:
    """client.VertexWarning (newer BuildKit); decoded so that such traces still read."""

    vertex: str
    level: int = 0
    short: bytes = b""
    detail: list[bytes] = field(default_factory=list)
    url: str = ""


@dataclass
class StatusResponse:
    """One progress message: the vertices, statuses and logs that changed since the last one."""

    vertexes: list[Vertex] = field(default_factory=list)
    statuses: list[VertexStatus] = field(default_factory=list)
    logs: list[VertexLog] = field(default_factory=list)
    warnings: list[VertexWarning] = field(default_factory=list)

    def marshal(self) -> bytes:
        """proto3 binary encoding (what `sr.Marshal()` gives dockerd)."""
        out = bytearray()
        for v in self.vertexes:
            _put_message(out, 1, _vertex_bytes(v))
        for s in self.statuses:
            _put_message(out, 2, _status_bytes(s))
        for log in self.logs:
            _put_message(out, 3, _log_bytes(log))
        for w in self.warnings:
            _put_message(out, 4, _warning_bytes(w))
        return bytes(out)

    @classmethod
    def unmarshal(cls, data: bytes) -> StatusResponse:
        """Decode a StatusResponse; unknown fields are skipped. Raises ProtobufError on bad bytes."""
        sr = cls()
        for num, _wire, value in _fields(data):
            if num == 1:
                sr.vertexes.append(_parse_vertex(value))
            elif num == 2:
                sr.statuses.append(_parse_status(value))
            elif num == 3:
                sr.logs.append(_parse_log(value))
            elif num == 4:
                sr.warnings.append(_parse_warning(value))
        return sr


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


# ---- protobuf wire format ----------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1  # negative int64s are ten bytes of two's complement
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _put_key(out: bytearray, num: int, wire: int) -> None:
    _put_varint(out, num << 3 | wire)


def _put_bytes(out: bytearray, num: int, data: bytes) -> None:
    if data:  # proto3: default values are not written
        _put_message(out, num, data)


def _put_message(out: bytearray, num: int, data: bytes) -> None:
    _put_key(out, num, 2)
    _put_varint(out, len(data))
    out += data


def _put_str(out: bytearray, num: int, text: str) -> None:
    _put_bytes(out, num, text.encode())


def _put_int(out: bytearray, num: int, value: int) -> None:
    if value:
        _put_key(out, num, 0)
        _put_varint(out, value)


def _put_time(out: bytearray, num: int, t: float | None) -> None:
    """A google.protobuf.Timestamp: present (possibly empty) whenever the time is set."""
    if t is None:
        return
    ns = round(t * 1e9)
    seconds, nanos = divmod(ns, 1_000_000_000)
    ts = bytearray()
    _put_int(ts, 1, seconds)
    _put_int(ts, 2, nanos)
    _put_message(out, num, bytes(ts))


def _vertex_bytes(v: Vertex) -> bytes:
    out = bytearray()
    _put_str(out, 1, v.digest)
    for digest in v.inputs:
        _put_message(out, 2, digest.encode())  # repeated strings keep empty entries
    _put_str(out, 3, v.name)
    _put_int(out, 4, int(v.cached))
    _put_time(out, 5, v.started)
    _put_time(out, 6, v.completed)
    _put_str(out, 7, v.error)
    return bytes(out)


def _status_bytes(s: VertexStatus) -> bytes:
    out = bytearray()
    _put_str(out, 1, s.id)
    _put_str(out, 2, s.vertex)
    _put_str(out, 3, s.name)
    _put_int(out, 4, s.current)
    _put_int(out, 5, s.total)
    _put_time(out, 6, s.timestamp)
    _put_time(out, 7, s.started)
    _put_time(out, 8, s.completed)
    return bytes(out)


def _log_bytes(log: VertexLog) -> bytes:
    out = bytearray()
    _put_str(out, 1, log.vertex)
    _put_time(out, 2, log.timestamp)
    _put_int(out, 3, log.stream)
    _put_bytes(out, 4, log.data)
    return bytes(out)


def _warning_bytes(w: VertexWarning) -> bytes:
    out = bytearray()
    _put_str(out, 1, w.vertex)
    _put_int(out, 2, w.level)
    _put_bytes(out, 3, w.short)
    for d in w.detail:
        _put_message(out, 4, d)
    _put_str(out, 5, w.url)
    return bytes(out)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field, in order."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtobufError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((num, wire, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError("truncated length-delimited field")
            out.append((num, wire, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise ProtobufError("truncated fixed-width field")
            out.append((num, wire, int.from_bytes(data[pos : pos + width], "little")))
            pos += width
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    return value


def _int(value: int | bytes) -> int:
    if isinstance(value, bytes):
        raise ProtobufError("expected a varint field")
    return _signed(value)


def _str(value: int | bytes) -> str:
    return _bytes(value).decode("utf-8", "replace")


def _parse_time(value: int | bytes) -> float:
    seconds = nanos = 0
    for num, _wire, v in _fields(_bytes(value)):
        if num == 1:
            seconds = _int(v)
        elif num == 2:
            nanos = _int(v)
    return seconds + nanos / 1e9


def _parse_vertex(data: int | bytes) -> Vertex:
    v = Vertex(digest="")
    for num, _wire, value in _fields(_bytes(data)):
        if num == 1:
            v.digest = _str(value)
        elif num == 2:
            v.inputs.append(_str(value))
        elif num == 3:
            v.name = _str(value)
        elif num == 4:
            v.cached = bool(_int(value))
        elif num == 5:
            v.started = _parse_time(value)
        elif num == 6:
            v.completed = _parse_time(value)
        elif num == 7:
            v.error = _str(value)
    return v


def _parse_status(data: int | bytes) -> VertexStatus:
    s = VertexStatus(id="", vertex="")
    for num, _wire, value in _fields(_bytes(data)):
        if num == 1:
            s.id = _str(value)
        elif num == 2:
            s.vertex = _str(value)
        elif num == 3:
            s.name = _str(value)
        elif num == 4:
            s.current = _int(value)
        elif num == 5:
            s.total = _int(value)
        elif num == 6:
            s.timestamp = _parse_time(value)
        elif num == 7:
            s.started = _parse_time(value)
        elif num == 8:
            s.completed = _parse_time(value)
    return s


def _parse_log(data: int | bytes) -> VertexLog:
    log = VertexLog(vertex="", stream=0, data=b"")
    for num, _wire, value in _fields(_bytes(data)):
        if num == 1:
            log.vertex = _str(value)
        elif num == 2:
            log.timestamp = _parse_time(value)
        elif num == 3:
            log.stream = _int(value)
        elif num == 4:
            log.data = _bytes(value)
    return log


def _parse_warning(data: int | bytes) -> VertexWarning:
    w = VertexWarning(vertex="")
    for num, _wire, value in _fields(_bytes(data)):
        if num == 1:
            w.vertex = _str(value)
        elif num == 2:
            w.level = _int(value)
        elif num == 3:
            w.short = _bytes(value)
        elif num == 4:
            w.detail.append(_bytes(value))
        elif num == 5:
            w.url = _str(value)
    return w


# ---- the writer a build reports to --------------------------------------------------------------------


class ProgressWriter:
    """The events of one build (util/progress: a writer with any number of readers).

    Writes never block (the solver must not wait for a slow client); each reader gets every event,
    in order, batched into StatusResponses. `vertices` keeps each vertex's latest state, which is
    what the timeline is made from.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.vertices: dict[str, Vertex] = {}
        self._history: list[StatusResponse] = []
        self._waiters: list[asyncio.Event] = []
        self.closed = False

    # -- writing --

    def _emit(self, sr: StatusResponse) -> None:
        if self.closed:
            return
        self._history.append(sr)
        for event in self._waiters:
            event.set()

    def announce(self, vertices: list[Vertex]) -> None:
        """The vertices of a solve, before any of them starts (one message, as BuildKit sends it)."""
        fresh = [v for v in vertices if v.digest not in self.vertices]
        for v in fresh:
            self.vertices[v.digest] = replace(v)
        if fresh:
            self._emit(StatusResponse(vertexes=[replace(v) for v in fresh]))

    def update(self, digest: str, **changes: object) -> Vertex:
        """Change a vertex (started=..., completed=..., cached=..., error=...) and send all of it."""
        v = self.vertices.get(digest) or Vertex(digest)
        v = replace(v, **changes)
        self.vertices[digest] = v
        self._emit(StatusResponse(vertexes=[replace(v, inputs=list(v.inputs))]))
        return v

    def start(self, digest: str) -> None:
        self.update(digest, started=self.clock(), completed=None, error="")

    def complete(self, digest: str, *, cached: bool = False, error: str = "") -> None:
        now = self.clock()
        v = self.vertices.get(digest)
        started = v.started if v is not None and v.started is not None else now
        self.update(digest, started=started, completed=now, cached=cached, error=error)

    def status(self, status: VertexStatus) -> None:
        self._emit(StatusResponse(statuses=[replace(status)]))

    def log(self, digest: str, stream: int, data: bytes) -> None:
        if data:
            self._emit(StatusResponse(logs=[VertexLog(digest, stream, bytes(data), self.clock())]))

    def close(self) -> None:
        """No more events: readers finish once they have read everything."""
        if not self.closed:
            self.closed = True
            for event in self._waiters:
                event.set()

    # -- reading --

    async def responses(self) -> AsyncIterator[StatusResponse]:
        """Every event from the beginning, batched: what was written while we waited is one message."""
        event = asyncio.Event()
        self._waiters.append(event)
        pos = 0
        try:
            while True:
                if pos < len(self._history):
                    batch = self._history[pos:]
                    pos += len(batch)
                    yield _merge(batch)
                    continue
                if self.closed:
                    return
                event.clear()
                await event.wait()
        finally:
            self._waiters.remove(event)


def _merge(batch: list[StatusResponse]) -> StatusResponse:
    """Several updates as one message; a vertex updated twice keeps only its latest state."""
    out = StatusResponse()
    positions: dict[str, int] = {}
    for sr in batch:
        for v in sr.vertexes:
            if v.digest in positions:
                out.vertexes[positions[v.digest]] = v
            else:
                positions[v.digest] = len(out.vertexes)
                out.vertexes.append(v)
        out.statuses += sr.statuses
        out.logs += sr.logs
        out.warnings += sr.warnings
    return out
