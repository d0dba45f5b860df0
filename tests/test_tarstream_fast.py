"""The fast header decoder agrees with tarfile.TarInfo.frombuf: same values, same refusals."""

import io
import os
import posixpath
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.archive import ArchiveError, tarstream, untar
from minibuild.archive.archive import _clean_name, _is_clean
from minibuild.archive.tarstream import ERR_HEADER, TarEntry, _decode_plain, decode_header, read_entries

_FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
           "devmajor", "devminor", "offset", "offset_data", "sparse", "pax_headers", "xattrs")  # fmt: skip
# (offset, width) of the numeric and text fields a header block holds
_NUMBERS = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (329, 8), (337, 8)]
_TEXTS = [(0, 100), (157, 100), (265, 32), (297, 32), (345, 155)]


def frombuf(block: bytes) -> dict | str:
    """What read_entries decoded before it had a decoder of its own: frombuf, and no negative size."""
    try:
        info = TarEntry.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return ERR_HEADER
    if info.size < 0:
        return ERR_HEADER
    return _values(info)


def decoded(block: bytes) -> dict | str:
    try:
        return _values(decode_header(block))
    except ArchiveError as err:
        return str(err)


def _values(info: TarEntry) -> dict:
    values = {field: getattr(info, field) for field in _FIELDS}
    values["sparse_structs"] = getattr(info, "_sparse_structs", None)
    return values


def with_checksum(block: bytes, *, signed: bool = False) -> bytes:
    """The block with its checksum field set to its unsigned (or signed-char) sum, as tar writes it."""
    data = bytearray(block)
    data[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in data)
    data[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(data)


def header(info: tarfile.TarInfo, fmt: int) -> bytes:
    """The last block tarfile writes for `info`: the entry's own header (after any extension)."""
    return info.tobuf(fmt, "utf-8", "surrogateescape")[-512:]


# --- headers tar writers produce ---------------------------------------------------------------------

_name = st.text(st.sampled_from("abc/._-é\u00ff\udcff"), min_size=1, max_size=140)
_kind = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    name=_name,
    linkname=_name,
    kind=_kind,
    mode=st.integers(0, 0o7777),
    ids=st.tuples(st.integers(0, 2**21), st.integers(0, 2**40)),
    size=st.integers(0, 2**40),
    mtime=st.integers(-(2**40), 2**40),
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
)
def test_written_headers_decode_as_frombuf_decodes_them(name, linkname, kind, mode, ids, size, mtime, fmt):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size, info.mtime = kind, linkname, mode, size, mtime
    info.uid, info.gid = ids
    info.uname, info.gname = "root", "wheel"
    try:
        block = header(info, fmt)  # USTAR cannot hold every name or number: those are not headers
    except ValueError:
        return
    assert decoded(block) == frombuf(block)


def test_plain_headers_take_the_fast_path():
    info = tarfile.TarInfo("usr/share/" + "d" * 100 + "/f")  # split into ustar prefix and name
    info.size, info.mtime, info.uname = 512, 1_700_000_000, "root"
    block = header(info, tarfile.USTAR_FORMAT)
    assert _decode_plain(block) is not None
    assert decoded(block) == frombuf(block)
    assert decoded(block)["name"] == "usr/share/" + "d" * 100 + "/f"


def test_signed_and_unsigned_checksums_are_both_accepted():
    info = tarfile.TarInfo("caf\u00e9/\u00ff")  # bytes with the high bit set sum differently as signed chars
    block = header(info, tarfile.USTAR_FORMAT)
    for signed in (False, True):
        block = with_checksum(block, signed=signed)
        assert _decode_plain(block) is not None
        assert decoded(block) == frombuf(block) != ERR_HEADER
    wrong = block[:148] + b"000001\0 " + block[156:]
    assert decoded(wrong) == frombuf(wrong) == ERR_HEADER


def test_base256_numbers_decode_through_frombuf():
    info = tarfile.TarInfo("big")
    info.size, info.uid, info.mtime = 2**40, 2**30, -5  # GNU's base-256 encoding, negative included
    block = header(info, tarfile.GNU_FORMAT)
    assert _decode_plain(block) is None
    values = decoded(block)
    assert values == frombuf(block)
    assert (values["size"], values["uid"], values["mtime"]) == (2**40, 2**30, -5)


def test_old_v7_directory_and_old_gnu_header():
    v7 = bytearray(header(tarfile.TarInfo("old/dir/"), tarfile.USTAR_FORMAT))
    v7[156:157] = tarfile.AREGTYPE
    v7[257:265] = bytes(8)  # no magic: a V7 header
    block = with_checksum(bytes(v7))
    assert decoded(block) == frombuf(block)
    assert decoded(block)["type"] == tarfile.DIRTYPE and decoded(block)["name"] == "old/dir"
    gnu = header(tarfile.TarInfo("f"), tarfile.GNU_FORMAT)
    assert gnu[257:265] == b"ustar  \0" and decoded(gnu) == frombuf(gnu)


def test_negative_size_is_invalid_either_way():
    info = tarfile.TarInfo("f")
    info.size = -1
    block = header(info, tarfile.GNU_FORMAT)
    assert decoded(block) == frombuf(block) == ERR_HEADER
    plain = bytearray(header(tarfile.TarInfo("f"), tarfile.USTAR_FORMAT))
    plain[124:136] = b"-0000000001\0"  # octal, yet negative: int() reads the sign as nti does
    plain = with_checksum(bytes(plain))
    assert _decode_plain(plain) is not None
    assert decoded(plain) == frombuf(plain) == ERR_HEADER


# --- damaged and odd headers ----------------------------------------------------------------------------

_BASE = [
    header(tarfile.TarInfo("usr/bin/tool"), tarfile.USTAR_FORMAT),
    header(tarfile.TarInfo("usr/" + "p" * 120 + "/x"), tarfile.USTAR_FORMAT),
    header(tarfile.TarInfo("gnu"), tarfile.GNU_FORMAT),
]
# What odd writers and damage put into a field: blanks, signs, Python's own literal syntax, high bytes.
_TOKEN = st.sampled_from([b"", b" ", b"\0", b"0", b"7", b"644", b"0o17", b"0O7", b"1_0", b"_", b"+7", b"-1",
                          b" 12 ", b"\t5", b"\n", b"\x0b", b"\x1c", b"\x1f5", b"8", b"9", b"0x1", b"\x80",
                          b"\xff", b"\xc3\xa9", b"\xed\xb3\xbf", b"/", b"a", b"\xff" * 11])  # fmt: skip
_FIELD = st.sampled_from(_NUMBERS + _TEXTS + [(156, 1), (257, 8), (386, 24), (482, 13)])


@settings(max_examples=1500, deadline=None)
@given(
    base=st.sampled_from(_BASE),
    edits=st.lists(st.tuples(_FIELD, st.lists(_TOKEN, max_size=5), st.booleans()), min_size=1, max_size=4),
    kind=st.one_of(st.none(), st.sampled_from([b"0", b"\0", b"5", b"S", b"L", b"K", b"x", b"g", b"7", b"Z"])),
    checksum=st.sampled_from(["unsigned", "signed", "as damaged"]),
)
def test_odd_and_damaged_headers_decode_or_fail_as_frombuf_does(base, edits, kind, checksum):
    block = bytearray(base)
    for (offset, width), tokens, pad_with_spaces in edits:
        value = b"".join(tokens)[:width]
        block[offset : offset + width] = value + (b" " if pad_with_spaces else b"\0") * (width - len(value))
    if kind is not None:
        block[156:157] = kind
    data = bytes(block)
    if checksum != "as damaged":
        data = with_checksum(data, signed=checksum == "signed")
    assert decoded(data) == frombuf(data)


@given(st.binary(min_size=0, max_size=600))
@settings(max_examples=300, deadline=None)
def test_random_blocks_decode_or_fail_as_frombuf_does(data):
    assert decoded(data) == frombuf(data)
    if len(data) == 512:
        fixed = with_checksum(data)
        assert decoded(fixed) == frombuf(fixed)


def test_entries_without_pax_records_keep_empty_ones():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        plain = tarfile.TarInfo("plain")
        tar.addfile(plain)
        extended = tarfile.TarInfo("extended")
        extended.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "1.5"}
        tar.addfile(extended)
        tar.addfile(tarfile.TarInfo("after"))
    entries = [info for info, _ in read_entries(io.BytesIO(buf.getvalue()))]
    assert [(e.name, e.pax_headers, e.xattrs) for e in entries] == [
        ("plain", {}, {}),
        ("extended", {"SCHILY.xattr.user.k": "v", "mtime": "1.5"}, {"user.k": b"v"}),
        ("after", {}, {}),
    ]
    assert entries[1].mtime == 1.5


@pytest.mark.parametrize("field", [(100, 8), (124, 12), (148, 8)])
def test_blank_number_fields_read_as_zero_like_frombuf(field):
    block = bytearray(header(tarfile.TarInfo("f"), tarfile.USTAR_FORMAT))
    offset, width = field
    block[offset : offset + width] = b" " * width
    data = bytes(block) if field == (148, 8) else with_checksum(bytes(block))
    assert decoded(data) == frombuf(data)


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("ab./"), max_size=12))
def test_names_taken_as_clean_are_what_cleaning_gives(name):
    if _is_clean(name):
        assert posixpath.normpath(name) == name == _clean_name(name)


def test_usual_names_are_taken_as_clean():
    assert all(map(_is_clean, ["usr/bin/env", "a", "x.y/z..w", "a b/c-d"]))
    assert not any(map(_is_clean, ["", ".", "./a", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a/.."]))


def test_remembered_fields_stay_bounded_and_right():
    for size in range(3000):
        info = tarfile.TarInfo(f"f{size}")
        info.size, info.uname = size, f"user{size}"
        entry = decode_header(header(info, tarfile.USTAR_FORMAT))
        assert (entry.size, entry.uname) == (size, f"user{size}")
    assert len(tarstream._NUMBERS) <= 1024 and len(tarstream._TEXTS) <= 1024


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:100])))  # at most 100 bytes
    content = bytes(range(256)) * 5
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    assert untar(io.BytesIO(buf.getvalue()), tmp_path / "dest") == len(content)
    assert (tmp_path / "dest" / "f").read_bytes() == content
