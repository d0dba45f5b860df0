"""Hashing beside the I/O: the ordered hashing thread, the context hashes computed while untar writes,
and tar reading that seeks past contents in regular files."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.archive import ArchiveError, untar
from minibuild.archive import tarsum as tarsum_module
from minibuild.archive.digester import HashPipeline
from minibuild.archive.tarstream import read_entries
from minibuild.archive.tarsum import TarSum, file_hash
from minibuild.builder.remotecontext import Source, from_archive


def tar_of(*entries: tuple[str, bytes | str | None], **fields) -> bytes:
    """Entries (name, content) for files, (name, None) for directories, (name, "->target") for hard
    links and (name, "~>target") for symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_600_000_000, fields.get("mode", 0o644)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(data, str):
                info.type = tarfile.LNKTYPE if data.startswith("->") else tarfile.SYMTYPE
                info.linkname = data[2:]
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else None)
    return buf.getvalue()


def fresh_hashes(root: Path) -> dict[str, str]:
    """Every regular file's hash, computed from the file itself."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = file_hash(path, str(path.relative_to(root)), st)
    return out


# --- HashPipeline -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=30), st.integers(0, 20_000))
def test_pipeline_hashes_in_order_whether_inline_or_threaded(blocks, inline_bytes):
    pipeline = HashPipeline(inline_bytes=inline_bytes)
    h, digests = hashlib.sha256(), []
    expected = hashlib.sha256()
    for i, block in enumerate(blocks):
        pipeline.update(h, block)
        expected.update(block)
        if i % 7 == 3:
            want = expected.hexdigest()
            pipeline.call(lambda want=want, h=h: digests.append(h.hexdigest() == want))
    pipeline.close()
    assert h.hexdigest() == expected.hexdigest() and all(digests)


def test_pipeline_reports_a_failed_callback_at_close():
    pipeline = HashPipeline(inline_bytes=0)
    h = hashlib.sha256()
    pipeline.update(h, b"x")
    pipeline.call(lambda: 1 / 0)
    pipeline.update(h, b"y")  # work after a failure is dropped, not run on a broken state
    with pytest.raises(ZeroDivisionError):
        pipeline.close()
    pipeline.close()  # reported once


# --- tar reading from a regular file ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4000))
def test_a_regular_file_is_read_like_a_stream(tmp_path_factory, cut):
    """Skipping by seeking (a file) and by reading (a stream) find the same entries and the same
    truncation errors, wherever the archive is cut."""
    data = tar_of(("a", b"1" * 700), ("d", None), ("b", b"2" * 1500))[:cut]
    path = tmp_path_factory.mktemp("t") / "x.tar"
    path.write_bytes(data)

    def names(src) -> list[str] | str:
        try:
            return [info.name for info, _ in read_entries(src)]
        except ArchiveError as err:
            return str(err)

    with open(path, "rb") as f:
        assert names(f) == names(io.BytesIO(data))


# --- TarSum: the context's hashes, computed while it is unpacked ----------------------------------------


def test_sums_computed_during_untar_are_the_files_hashes(tmp_path, monkeypatch):
    big = os.urandom(3 << 20)  # hashed in the pipeline's thread; the small ones inline
    data = tar_of(("small", b"s"), ("empty", b""), ("d", None), ("d/big", big), ("link", "~>small"))
    source = from_archive(io.BytesIO(data), tmp_path / "ctx")
    assert sorted(source.tarsum.sums) == ["d/big", "empty", "small"]
    expected = fresh_hashes(source.root)
    calls = []
    real = tarsum_module.file_hash
    monkeypatch.setattr("minibuild.builder.remotecontext.file_hash", lambda *a: calls.append(a) or real(*a))
    assert {name: source.hash(name) for name in expected} == expected
    assert source.hash("link") == expected["small"]  # a symlink is followed inside the context
    assert calls == []  # nothing was read again


def test_a_later_entry_replaces_the_sum(tmp_path):
    data = tar_of(("f", b"first" * 100_000), ("f", b"second"), ("g", b"x"), ("g", None))
    source = from_archive(io.BytesIO(data), tmp_path / "ctx")
    assert source.hash("f") == fresh_hashes(source.root)["f"]
    assert "g" not in source.tarsum.sums  # a directory now


def test_an_archive_with_hard_links_keeps_no_sums(tmp_path):
    """A hard link entry can change a file written before through another name: hash the files."""
    data = tar_of(("a", b"content"), ("b", "->a"))
    source = from_archive(io.BytesIO(data), tmp_path / "ctx")
    assert source.tarsum.hard_links
    expected = fresh_hashes(source.root)
    assert source.hash("a") == expected["a"] and source.hash("b") == expected["b"]


def test_a_file_changed_after_the_untar_is_hashed_again(tmp_path):
    source = from_archive(io.BytesIO(tar_of(("f", b"old"))), tmp_path / "ctx")
    st = os.lstat(source.root / "f")
    assert source.tarsum.lookup("f", st) is not None
    (source.root / "f").write_bytes(b"new")
    os.utime(source.root / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert source.tarsum.lookup("f", os.lstat(source.root / "f")) is None
    assert Source(source.root).hash("f") == source.hash("f")


def test_a_file_that_does_not_get_the_headers_fields_has_no_sum(tmp_path, monkeypatch):
    """The fields are predicted from the header; a file that ends up otherwise (here: an owner we
    pretend not to be able to set) is hashed from what is on disk."""
    monkeypatch.setattr(os, "geteuid", lambda: 12345)  # as if unprivileged: the owner would be ours
    tarsum = TarSum(tmp_path / "ctx")
    monkeypatch.undo()
    untar(io.BytesIO(tar_of(("f", b"x"))), tmp_path / "ctx", observe=tarsum)
    tarsum.close()
    assert tarsum.sums == {}
