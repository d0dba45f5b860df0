"""Streaming tar reader with Go's strictness (Go archive/tar reader.go, as moby reads layers with it).

Python's `tarfile` treats a damaged header after the first member as the end of the archive; Go reports
it. Layers and build contexts must not be silently cut short, so this reader walks the 512-byte blocks
itself, decodes each header as `tarfile.TarInfo.frombuf` does (`decode_header`, frombuf itself for
anything unusual), and applies PAX and GNU long-name records the way Go does. Errors use Go's words:
"unexpected EOF", "archive/tar: invalid tar header".
"""

import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from minibuild.archive.errors import ArchiveError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_MAX_SPECIAL_FILE = 1 << 20  # Go's maxSpecialFileSize: PAX and GNU long-name payloads
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_ENTRY_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE,
                tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE)  # fmt: skip

ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_HEADER = "archive/tar: invalid tar header"
ERR_FIELD_TOO_LONG = "archive/tar: header field too long"

# The fields frombuf reads, at the offsets it reads them: name, mode, uid, gid, size, mtime, chksum, type,
# linkname, (magic and version skipped), uname, gname, devmajor, devminor, prefix, (padding skipped).
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")
_ASCII = bytes(range(128))  # deleted from a block, what is left are the bytes with the high bit set


class TarEntry(tarfile.TarInfo):
    """A header with its extended attributes (PAX `SCHILY.xattr.*`) as raw bytes."""

    __slots__ = ("xattrs",)

    def __init__(self, name: str = ""):
        super().__init__(name)
        self.xattrs: dict[str, bytes] = {}


def read_full(src: BinaryIO, size: int) -> bytes:
    """Read exactly `size` bytes; b"" at a clean end of stream; ArchiveError if it stops part way."""
    data = src.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = src.read(size - got)
        if not chunk:
            raise ArchiveError(ERR_UNEXPECTED_EOF)
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = read_full(src, size)
    if len(data) != size:
        raise ArchiveError(ERR_UNEXPECTED_EOF)
    return data


def _skip(src: BinaryIO, size: int) -> None:
    """Move past `size` bytes: by seeking in a regular file (its content is never read), else by reading."""
    end = _file_size(src) if size else None
    if end is not None:
        if src.seek(size, os.SEEK_CUR) > end:
            raise ArchiveError(ERR_UNEXPECTED_EOF)
        return
    while size:
        chunk = src.read(min(size, 1 << 16))
        if not chunk:
            raise ArchiveError(ERR_UNEXPECTED_EOF)
        size -= len(chunk)


def _file_size(src: BinaryIO) -> int | None:
    """The size of the regular file `src` reads, or None when it is a stream that cannot seek."""
    try:
        if not src.seekable():
            return None
        st = os.fstat(src.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the latter
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class EntryReader:
    """The content of one entry: reads at most its size, and reports truncation as unexpected EOF."""

    def __init__(self, src: BinaryIO, size: int):
        self._src = src
        self.remaining = size

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.remaining:
            size = self.remaining
        if size == 0:
            return b""
        data = self._src.read(size)
        if not data:
            raise ArchiveError(ERR_UNEXPECTED_EOF)
        self.remaining -= len(data)
        return data


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """PAX records `"<len> <key>=<value>\\n"`; values stay bytes (xattrs are binary)."""
    records: dict[str, bytes] = {}
    while data:
        space = data.find(b" ")
        try:
            length = int(data[:space]) if space > 0 else -1
        except ValueError:
            length = -1
        if length < space + 3 or length > len(data) or data[length - 1 : length] != b"\n":
            raise ArchiveError(ERR_HEADER)
        key, sep, value = data[space + 1 : length - 1].partition(b"=")
        if not sep or not key or b"\0" in key:
            raise ArchiveError(ERR_HEADER)
        if key in (b"path", b"linkpath", b"uname", b"gname") and b"\0" in value:
            raise ArchiveError(ERR_HEADER)  # Go's validPAXRecord
        records[key.decode("utf-8", "surrogateescape")] = value
        data = data[length:]
    return records


def _pax_int(value: bytes) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArchiveError(ERR_HEADER)
    if number < 0:
        raise ArchiveError(ERR_HEADER)
    return number


def pax_time_ns(value: str) -> int:
    """A PAX time ("1700000000.123456789", maybe negative) as integer nanoseconds, without float rounding."""
    sign = -1 if value.startswith("-") else 1
    whole, _, frac = value.lstrip("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ArchiveError(ERR_HEADER)
    return sign * (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))


def _apply_pax(info: TarEntry, records: dict[str, bytes]) -> None:
    """Override header fields with PAX records, as Go's mergePAX does; keep raw records on the entry."""
    text = {k: v.decode("utf-8", "surrogateescape") for k, v in records.items()}
    for key, value in records.items():
        if key.startswith("GNU.sparse."):
            raise ArchiveError("archive/tar: sparse files are not supported")  # minibuild: no sparse layers
        if key == "path":
            info.name = text[key]
        elif key == "linkpath":
            info.linkname = text[key]
        elif key == "uname":
            info.uname = text[key]
        elif key == "gname":
            info.gname = text[key]
        elif key in ("uid", "gid", "size"):
            setattr(info, key, _pax_int(value))
        elif key in ("mtime", "atime"):
            pax_time_ns(text[key])  # validate now; callers read the precise value from pax_headers
            if key == "mtime":
                info.mtime = float(text[key])
    info.pax_headers = text
    info.xattrs = {k[len("SCHILY.xattr.") :]: v for k, v in records.items() if k.startswith("SCHILY.xattr.")}


def _read_special(src: BinaryIO, info: tarfile.TarInfo) -> bytes:
    if info.size > _MAX_SPECIAL_FILE:
        raise ArchiveError(ERR_FIELD_TOO_LONG)
    data = _read_exact(src, info.size)
    _skip(src, -info.size % BLOCK)
    return data


def decode_header(block: bytes) -> TarEntry:
    """One 512-byte header decoded as `tarfile.TarInfo.frombuf` decodes it; ArchiveError if it is invalid.

    frombuf costs tens of microseconds a header, most of it Python-level field parsing; nearly every
    header holds plain text and octal, which `_decode_plain` reads in a few C calls. Anything else
    (base-256 or blank numbers, old GNU sparse maps, a checksum that does not match) goes to frombuf
    itself, so both ways give the same values and refuse the same blocks.
    """
    info = _decode_plain(block)
    if info is None:
        try:
            info = TarEntry.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            raise ArchiveError(ERR_HEADER)
    if info.size < 0:
        raise ArchiveError(ERR_HEADER)
    return info


def _octal(field: bytes) -> int:
    """A NUL-terminated octal number; ValueError for any field frombuf's `nti` might read differently.

    `int` accepts exactly the ASCII that `nti` accepts after its own strip (never base-256's high bytes);
    a blank field of spaces it refuses, so that one falls back too.
    """
    digits = field.partition(b"\0")[0]
    return int(digits, 8) if digits else 0


def _checksums(block: bytes, field: bytes) -> tuple[int, int]:
    """The block's unsigned and signed-char sums (old tars used the latter), `field` counted as spaces."""
    if block.isascii():
        # Adler-32's low half is 1 + the byte sum mod 65521: exact, as 512 ASCII bytes sum to at most 65024.
        unsigned = (zlib.adler32(block) & 0xFFFF) - 1 - sum(field) + 8 * 32
        return unsigned, unsigned
    unsigned = sum(block) - sum(field) + 8 * 32
    high = len(block.translate(None, _ASCII)) - len(field.translate(None, _ASCII))
    return unsigned, unsigned - 256 * high


def _text(field: bytes) -> str:
    return field.partition(b"\0")[0].decode("utf-8", "surrogateescape")


class _Remembered(dict):
    """raw field -> `decode(field)`, decoded once: archives repeat their modes, owners, times and names."""

    def __init__(self, decode: Callable[[bytes], int | str]):
        super().__init__()
        self.decode = decode

    def __missing__(self, field: bytes) -> int | str:
        value = self.decode(field)  # a ValueError leaves nothing remembered
        if len(self) >= 1024:
            self.clear()  # forgotten in bulk: memory stays bounded whatever the archive holds
        self[field] = value
        return value


_NUMBERS = _Remembered(_octal)
_TEXTS = _Remembered(_text)


def _decode_plain(block: bytes) -> TarEntry | None:
    """frombuf's decoding for a header of plain fields, or None to leave the block to frombuf."""
    if len(block) != BLOCK:
        return None
    (name, mode, uid, gid, size, mtime, chksum, kind, linkname, uname, gname, devmajor, devminor,
     prefix) = _HEADER.unpack(block)  # fmt: skip
    if kind == tarfile.GNUTYPE_SPARSE:
        return None
    try:
        checksum = _octal(chksum)
        numbers = [_NUMBERS[field] for field in (mode, uid, gid, size, mtime, devmajor, devminor)]
    except ValueError:
        return None
    if checksum not in _checksums(block, chksum):
        return None
    info = TarEntry(_text(name))
    info.mode, info.uid, info.gid, info.size, info.mtime, info.devmajor, info.devminor = numbers
    info.chksum, info.type = checksum, kind
    info.linkname, info.uname, info.gname, prefix_text = [_TEXTS[f] for f in (linkname, uname, gname, prefix)]
    if kind == tarfile.AREGTYPE and info.name.endswith("/"):
        info.type = tarfile.DIRTYPE  # an old V7 directory
    if info.type == tarfile.DIRTYPE:
        info.name = info.name.rstrip("/")
    if prefix_text and info.type not in tarfile.GNU_TYPES:
        info.name = prefix_text + "/" + info.name
    return info


def _read_header(src: BinaryIO) -> TarEntry | None:
    """One raw header block, or None at the end of the archive (two zero blocks, or a clean EOF)."""
    block = read_full(src, BLOCK)
    if not block:
        return None  # Go accepts an archive that simply stops at a header boundary
    if block == _ZERO_BLOCK:
        block = read_full(src, BLOCK)
        if not block or block == _ZERO_BLOCK:
            return None
        raise ArchiveError(ERR_HEADER)
    return decode_header(block)


def read_entries(src: BinaryIO) -> Iterator[tuple[TarEntry, EntryReader]]:
    """Yield (header, content reader) per entry; unread content is skipped when the caller moves on.

    Each header carries `pax_headers` (text) and `xattrs` (name -> raw bytes) from its PAX records.
    PAX global headers are read and ignored, as moby ignores them.
    """
    records: dict[str, bytes] = {}
    long_name = long_link = None
    while True:
        info = _read_header(src)
        if info is None:
            if records or long_name is not None or long_link is not None:
                raise ArchiveError(ERR_UNEXPECTED_EOF)  # an extension header with no entry after it
            return
        if info.type in _PAX_TYPES:
            records.update(_parse_pax(_read_special(src, info)))
            continue
        if info.type == tarfile.XGLTYPE:
            _parse_pax(_read_special(src, info))
            continue
        if info.type == tarfile.GNUTYPE_LONGNAME:
            long_name = _read_special(src, info).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if info.type == tarfile.GNUTYPE_LONGLINK:
            long_link = _read_special(src, info).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveError("archive/tar: sparse files are not supported")
        if long_name is not None:
            info.name = long_name
        if long_link is not None:
            info.linkname = long_link
        if records:  # without any, the header keeps the empty pax_headers and xattrs it was made with
            _apply_pax(info, records)
            records = {}
        long_name = long_link = None
        if info.type == tarfile.AREGTYPE:
            info.type = tarfile.REGTYPE
        # Links, directories and devices carry no content, whatever their size field says (Go agrees).
        has_data = info.type in (tarfile.REGTYPE, tarfile.CONTTYPE) or info.type not in _ENTRY_TYPES
        size = info.size if has_data else 0
        reader = EntryReader(src, size)
        yield info, reader
        if leftover := reader.remaining + (-size % BLOCK):
            _skip(src, leftover)


# --- writing, as Go's tar.Writer does: headers, padded content, two zero blocks, no record padding ---


def write_entry(out: BinaryIO, info: tarfile.TarInfo, content: BinaryIO | None = None) -> None:
    """Write one entry (USTAR, or PAX records where a field does not fit); copy `info.size` bytes."""
    out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    if not info.isreg():
        return
    remaining = info.size
    while remaining:
        chunk = content.read(min(remaining, 1 << 20)) if content is not None else b""
        if not chunk:
            raise ArchiveError(f"{info.name}: content shorter than its size")
        out.write(chunk)
        remaining -= len(chunk)
    out.write(bytes(-info.size % BLOCK))


def write_end(out: BinaryIO) -> None:
    """The end-of-archive marker: two zero blocks."""
    out.write(bytes(2 * BLOCK))


def tar_header(
    name: str, mode: int, mtime: int, size: int = 0, kind: bytes = tarfile.REGTYPE
) -> tarfile.TarInfo:
    """A header with the fixed owner Docker writes as root (0:0, root/root), for reproducible archives."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, max(mtime, 0), size
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
