"""Request bodies in, streamed answers out (moby pkg/ioutils/writeflusher.go, bytespipe.go).

`WriteFlusher` is the sink behind a build's output: `write()` is synchronous (builders call it from the
event loop or from worker threads), and each write goes out as its own HTTP chunk, in order, as soon
as the loop gets to it. The response (200, chunked) is started by the first write, so until then an
error can still become an ordinary HTTP error: `flushed` tells which case applies.

`ThreadedResponseWriter` is for bulk data produced by a worker thread (`docker save`): each write waits
until the bytes are sent, so a slow client slows the producer instead of filling memory.
`spool_request_body` streams a request body (chunked or not) to a file, never holding it in memory,
and refuses one larger than any archive within the daemon's limits (minibuild's guard: dockerd unpacks
as it reads, so its disk use is bounded by what it unpacks).
"""

import asyncio
import io
import os
import secrets
import threading
from pathlib import Path

from aiohttp import web

from minibuild import errdefs
from minibuild.archive.limits import current_limits, max_body_size

_READ_CHUNK = 1 << 20
_IOV_MAX = 1024  # what one writev takes (sysconf IOV_MAX on Linux)


async def spool_request_body(request: web.Request, directory: Path, prefix: str) -> Path:
    """Write the request body to a new file `<directory>/<prefix><random>`; the caller removes it.
    A body past `max_body_size` of the limits in force is refused (400) and its file removed."""
    limit = max_body_size(current_limits())
    if limit is not None and (request.content_length or 0) > limit:
        raise _body_too_large(limit)  # known from the headers: not a byte is read
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{prefix}{secrets.token_hex(8)}"
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        pending: list[bytes] = []
        size = total = 0
        async for chunk in request.content.iter_chunked(_READ_CHUNK):
            total += len(chunk)
            if limit is not None and total > limit:
                raise _body_too_large(limit)
            pending.append(chunk)
            size += len(chunk)
            if size >= _READ_CHUNK:  # write in a worker thread, keep the loop free
                await loop.run_in_executor(None, _write_all, fd, pending)
                pending, size = [], 0
        if pending:
            await loop.run_in_executor(None, _write_all, fd, pending)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def _body_too_large(limit: int) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(
        f"request body exceeds {limit} bytes, more than an archive within the daemon's limits can take "
        "(--max-archive-size, --max-archive-entries)"
    )


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write the chunks as they are (writev: no joined copy), however short each write is."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]


class WriteFlusher:
    """Sends each write as one chunk of `response`; `flushed` is true once anything was written."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.flushed = False
        self.closed = False
        self.error: BaseException | None = None  # the client went away while we were writing
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pump: asyncio.Task | None = None

    def write(self, data: bytes) -> None:
        """Queue `data` as the next chunk; safe from any thread; dropped once closed."""
        if self.closed or not data:
            return
        self.flushed = True
        if threading.get_ident() == self._loop_thread:
            self._put(data)
        else:
            self._loop.call_soon_threadsafe(self._put, data)

    def _put(self, data: bytes) -> None:
        if self._pump is None:
            self._pump = self._loop.create_task(self._run())
        self._queue.put_nowait(data)

    async def _run(self) -> None:
        # aiohttp raises ConnectionError or RuntimeError once the client has gone.
        try:
            await self.response.prepare(self.request)
        except (ConnectionError, RuntimeError) as err:
            self.error = err
        while (data := await self._queue.get()) is not None:
            if self.error is not None:
                continue  # the client is gone: drain without writing
            try:
                await self.response.write(data)
            except (ConnectionError, RuntimeError) as err:
                self.error = err

    async def close(self) -> None:
        """Send everything queued, then end the chunked body."""
        if self.closed:
            return
        self.closed = True
        if self._pump is None:
            return
        self._queue.put_nowait(None)
        await self._pump
        if self.error is None:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError) as err:
                self.error = err

    def abort(self) -> None:
        """Stop sending (the request was cancelled)."""
        self.closed = True
        if self._pump is not None:
            self._pump.cancel()


class ThreadedResponseWriter(io.RawIOBase):
    """A file a worker thread writes an answer to; `write` returns once the bytes are sent.

    Wrap it in io.BufferedWriter to send fewer, larger chunks. The response starts with the first
    write (`flushed`), so an error raised before any byte can still be an HTTP error.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, loop: asyncio.AbstractEventLoop):
        self.request, self.response, self.loop = request, response, loop
        self.flushed = False

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        if data:
            asyncio.run_coroutine_threadsafe(self._send(data), self.loop).result()
        return len(data)

    async def _send(self, data: bytes) -> None:
        if not self.flushed:
            self.flushed = True
            await self.response.prepare(self.request)
        await self.response.write(data)
