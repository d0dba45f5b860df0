"""Compression sniffing and streaming decompression (moby pkg/archive/archive.go).

`DetectCompression` looks at the first bytes of a stream; `DecompressStream` wraps the stream in the
matching decompressor without reading it whole. A build context, an import body or a layer may arrive
as identity, gzip, bzip2 or xz: the daemon sniffs, it does not trust a header.
"""

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO

from minibuild.archive.errors import ArchiveError

# Magic bytes, as moby 20.10's DetectCompression compares them. It knows no zstd (moby 23.0 added it):
# a zstd body is read as a plain tar and fails like any non-tar body, as on dockerd 20.10.24 (measured).
_MAGIC = {
    "bzip2": b"BZh",
    "gzip": b"\x1f\x8b\x08",
    "xz": b"\xfd7zXZ\x00",
}
_HEAD_SIZE = max(len(m) for m in _MAGIC.values())


def detect_compression(head: bytes) -> str:
    """Name the compression of a stream from its first bytes: identity, gzip, bzip2 or xz."""
    for name, magic in _MAGIC.items():
        if head.startswith(magic):
            return name
    return "identity"


class _Prefixed(io.RawIOBase):
    """The bytes already read to sniff the format, then the rest of the source."""

    def __init__(self, head: bytes, src: BinaryIO):
        self._head = memoryview(head)
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if isinstance(self._src, io.BufferedReader | io.FileIO):  # a file: into the caller's buffer
            return self._src.readinto(buf) or 0
        data = self._src.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _Decompressed(io.RawIOBase):
    """A decompressor whose failures surface as ArchiveError, with Go's wording for truncation."""

    def __init__(self, inner: BinaryIO):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            data = self._inner.read(len(buf))
        except EOFError:  # the compressed stream stopped before its end marker
            raise ArchiveError("unexpected EOF")
        except (OSError, lzma.LZMAError, zlib.error, ValueError) as err:
            raise ArchiveError(str(err)) from err
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


_OPENERS = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    "xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # noqa: SIM115 (closed by _Decompressed)
}


def _read_head(src: BinaryIO, size: int) -> bytes:
    """Read up to `size` bytes, looping over short reads (sockets, pipes)."""
    head = b""
    while len(head) < size:
        chunk = src.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


def decompress_stream(src: BinaryIO) -> BinaryIO:
    """Return a reader of `src` decompressed according to its magic bytes (identity passes through)."""
    head = _read_head(src, _HEAD_SIZE)
    raw = io.BufferedReader(_Prefixed(head, src), buffer_size=1 << 16)
    kind = detect_compression(head)
    if kind == "identity":
        return raw
    return io.BufferedReader(_Decompressed(_OPENERS[kind](raw)), buffer_size=1 << 16)
