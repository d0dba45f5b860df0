"""Writing a layer's diff into the store: hashed while it is written, made durable while it is written
(moby layer/layer_store.go applyTar, which digests the tar through a TeeReader as it is applied).

A `LayerWriter` is the file a snapshotter's diff goes to. Every byte is written once, to the file that
becomes `layer.tar`, and hashed on the way: the diff ID is known the moment the last byte is written,
without reading the file back. Two costs that would otherwise come one after the other overlap:

* hashing: past the first few megabytes, sha256 runs in a helper thread (archive.digester), beside
  the writer's own reads and writes instead of after them;
* durability: every `FLUSH_BEHIND` bytes a helper thread fdatasyncs what is written so far, so the disk
  works while the diff is still being produced and the final fsync (always done, in commit) finds
  little left to write.

Small writes (tar headers) are gathered into 1 MiB blocks before they are written and hashed.
"""

import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from minibuild.archive.digester import HashPipeline
from minibuild.archive.errors import ArchiveError
from minibuild.archive.limits import ArchiveLimits
from minibuild.archive.tarstream import read_entries

if TYPE_CHECKING:
    from minibuild.layer.store import Layer

BLOCK = 1 << 20
FLUSH_BEHIND = 32 << 20
HASH_IN_THREAD_AFTER = 4 << 20  # smaller diffs (most steps) are not worth a thread
_flusher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="layer-flush")


class LayerWriter:
    """A diff tar written straight into a staging directory of the layer store.

    `commit()` validates the tar (reading only its headers: the content is skipped by seeking, never
    re-read), then hands the diff ID and content size to the store, which fsyncs and publishes the
    layer. Leaving the `with` block without a commit discards the staging directory.
    """

    def __init__(self, staging: Path, publish: Callable[[str, int], "Layer"]) -> None:
        self._staging = staging
        self._publish = publish
        self._fd = os.open(staging / "layer.tar", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.sha256()
        self._hashing = HashPipeline(HASH_IN_THREAD_AFTER)
        self._buffer = bytearray()
        self._on_disk = 0
        self._flushed_at = 0
        self._flush: Future[None] | None = None
        self.written = 0  # bytes accepted so far
        self._layer: Layer | None = None

    def __enter__(self) -> "LayerWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._layer is None:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = len(data)
        if len(self._buffer) + size < BLOCK:
            self._buffer += data
        else:
            self._drain()
            if size < BLOCK:
                self._buffer += data
            else:
                self._write_block(bytes(data))  # a caller's mutable buffer may change once we return
        self.written += size
        return size

    def _drain(self) -> None:
        if self._buffer:
            block, self._buffer = bytes(self._buffer), bytearray()
            self._write_block(block)

    def _write_block(self, block: bytes) -> None:
        self._hashing.update(self._hash, block)
        view = memoryview(block)
        while view:
            view = view[os.write(self._fd, view) :]
        self._on_disk += len(block)
        if self._on_disk - self._flushed_at >= FLUSH_BEHIND and (self._flush is None or self._flush.done()):
            self._flush_result()
            self._flushed_at = self._on_disk
            self._flush = _flusher.submit(os.fdatasync, self._fd)

    def _flush_result(self) -> None:
        """Wait for the flush in flight, if any (its error, say EIO, is the write's error)."""
        flush, self._flush = self._flush, None
        if flush is not None:
            flush.result()

    @property
    def diff_id(self) -> str:
        """The sha256 of everything written so far."""
        self._drain()
        self._hashing.close()
        return "sha256:" + self._hash.hexdigest()

    def commit(self, limits: ArchiveLimits | None = None) -> "Layer":
        """Validate and publish the layer; return it, holding one reference (as LayerStore.register).
        With `limits`, a diff over them is refused (ArchiveError) and nothing is stored."""
        if self._layer is not None:
            return self._layer
        try:
            diff_id = self.diff_id
            self._close()
            self._layer = self._publish(diff_id, content_size(self._staging / "layer.tar", limits))
            return self._layer
        finally:
            if self._layer is None:
                self.abort()

    def _close(self) -> None:
        if self._fd >= 0:
            try:
                self._flush_result()  # never close a descriptor a flush still uses
            finally:
                os.close(self._fd)
                self._fd = -1

    def abort(self) -> None:
        """Throw the staged diff away (a no-op after commit)."""
        try:
            self._hashing.close()
        finally:
            try:
                self._close()
            except OSError:
                pass  # the diff is being thrown away: a failed flush of it does not matter
            shutil.rmtree(self._staging, ignore_errors=True)


def content_size(path: Path, limits: ArchiveLimits | None = None) -> int:
    """Bytes of regular-file content in a tar, validated header by header on the way (and against
    `limits`, with untar's words)."""
    size = entries = 0
    max_size, max_entries = (limits.max_size, limits.max_entries) if limits else (None, None)
    with open(path, "rb") as tar:
        for info, _content in read_entries(tar):  # a regular file: contents are skipped by seeking
            entries += 1
            if max_entries is not None and entries > max_entries:
                raise ArchiveError(f"archive exceeds the limit of {max_entries} entries")
            if info.isreg():
                size += info.size
                if max_size is not None and size > max_size:
                    raise ArchiveError(f"archive exceeds the size limit of {max_size} bytes")
    return size
