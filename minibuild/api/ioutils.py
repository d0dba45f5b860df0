"""A streamed HTTP answer written message by message (moby pkg/ioutils/writeflusher.go).

`WriteFlusher` is the sink behind a build's output: `write()` is synchronous (builders call it from the
event loop or from worker threads), and each write goes out as its own HTTP chunk, in order, as soon
as the loop gets to it. The response (200, chunked) is started by the first write, so until then an
error can still become an ordinary HTTP error: `flushed` tells which case applies.
"""

import asyncio
import threading

from aiohttp import web


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
        await self.response.prepare(self.request)
        while (data := await self._queue.get()) is not None:
            if self.error is not None:
                continue  # the client is gone: drain without writing
            try:
                await self.response.write(data)
            except (ConnectionError, RuntimeError) as err:  # aiohttp raises either for a closed transport
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
