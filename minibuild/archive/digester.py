"""Hashing beside the I/O that feeds it (opencontainers/go-digest digester.go, which moby's layer store
and pkg/tarsum feed through io.TeeReader and io.MultiWriter as the data streams past).

Go hashes in the goroutine that copies. Python's hashlib releases the GIL on large buffers, so a helper
thread can hash block n while the caller reads or writes block n+1: on two cores the hash no longer
adds to the copy's time. `HashPipeline` runs hash updates, and callbacks that read the results, in the
order they were queued, on one helper thread. Until `inline_bytes` have been queued it does the work
inline (small inputs are not worth a thread). The queue is bounded, so a caller that outruns the
hashing waits instead of piling blocks up in memory.
"""

import queue
import threading
from collections.abc import Callable
from typing import Protocol

DEFAULT_INLINE_BYTES = 1 << 20
_QUEUED = 16


class Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


class HashPipeline:
    """Ordered hashing work, moved off the caller's thread once there is enough of it."""

    def __init__(self, inline_bytes: int = DEFAULT_INLINE_BYTES) -> None:
        self.inline_bytes = inline_bytes
        self._seen = 0
        self._queue: queue.Queue[tuple[Callable[..., None], tuple] | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def update(self, hasher: Hash, data: bytes) -> None:
        """`hasher.update(data)`, in order; `data` must not change afterwards (pass bytes)."""
        self._seen += len(data)
        self._submit(hasher.update, (data,))

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` once every update queued before it is done (to read a digest, say)."""
        self._submit(fn, ())

    def _submit(self, fn: Callable[..., None], args: tuple) -> None:
        if self._thread is None and self._seen >= self.inline_bytes:
            self._queue = queue.Queue(_QUEUED)
            self._thread = threading.Thread(target=self._run, name="hash-pipeline", daemon=True)
            self._thread.start()
        if self._queue is None:
            fn(*args)
        else:
            self._queue.put((fn, args))

    def _run(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item[0](*item[1])
                except BaseException as err:  # reported by close(), in the caller's thread
                    self._error = err

    def close(self) -> None:
        """Wait until everything queued is done (work queued later runs inline until the next
        `inline_bytes`); raise what a callback raised."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None
            self._seen = 0
        error, self._error = self._error, None
        if error is not None:
            raise error
