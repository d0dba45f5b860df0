"""Context packing: what goes into the tar and how its entries look (as the docker CLI writes them)."""

import bz2
import gzip
import io
import lzma
import os
import socket
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.client import context as bc


def make_context(root, files: dict[str, bytes], ignore: str | None = None):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def pack(root, dockerfile="Dockerfile", **kw) -> tuple[str, bytes]:
    name, chunks = bc.tar_context(root, dockerfile, bc.read_dockerignore(root), **kw)
    return name, b"".join(chunks)


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_dockerignore_is_honoured_but_build_files_always_go(tmp_path):
    make_context(
        tmp_path,
        {
            "Dockerfile": b"FROM scratch\n",
            "keep.txt": b"k",
            "skip.log": b"s",
            "dir/a.log": b"a",
            "dir/b.txt": b"b",
        },
        ignore="*.log\n**/*.log\nDockerfile\n.dockerignore\n",
    )
    _, data = pack(tmp_path)
    assert sorted(members(data)) == [".dockerignore", "Dockerfile", "dir", "dir/b.txt", "keep.txt"]


def test_entries_look_like_the_docker_clis(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n", "bin/run.sh": b"#!/bin/sh\n"})
    os.chmod(tmp_path / "bin/run.sh", 0o755)
    os.utime(tmp_path / "Dockerfile", (1_600_000_000.7, 1_600_000_000.7))
    os.symlink("bin/run.sh", tmp_path / "link")
    os.link(tmp_path / "Dockerfile", tmp_path / "hard")
    _, data = pack(tmp_path)
    m = members(data)
    assert list(m) == ["Dockerfile", "bin", "bin/run.sh", "hard", "link"]  # walk order: sorted by name
    for info in m.values():
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
    assert m["Dockerfile"].mtime == 1_600_000_000  # whole seconds
    assert m["bin/run.sh"].mode == 0o755 and m["Dockerfile"].mode == 0o644
    assert m["bin"].isdir() and m["link"].issym() and m["link"].linkname == "bin/run.sh"
    assert m["hard"].islnk() and m["hard"].linkname == "Dockerfile"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("Dockerfile").read() == b"FROM scratch\n"
    assert data.endswith(b"\0" * 1024) and len(data) % 512 == 0
    raw_names = [data[i : i + 100].rstrip(b"\0") for i in range(0, 512 * 3, 512)]
    assert b"bin/" in raw_names  # directories end with a slash, as Go's tar writer names them


def test_the_stream_is_exactly_go_sized(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"x" * 10})
    _, data = pack(tmp_path)
    assert len(data) == 512 + 512 + 1024  # header, one data block, two zero blocks: no 10 KiB record padding


def test_large_files_are_streamed_in_chunks(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n", "big": os.urandom(1 << 20)})
    _, chunks = bc.tar_context(tmp_path, "Dockerfile", [])
    sizes = [len(c) for c in chunks]
    assert max(sizes) <= 1 << 16 and sum(sizes) > 1 << 20


def test_dockerfile_from_outside_travels_under_a_random_name(tmp_path):
    make_context(tmp_path, {"a.txt": b"a"}, ignore="*.tmp\n")
    name, data = pack(tmp_path, "Dockerfile", dockerfile_content=b"FROM scratch\n")
    assert name.startswith(".dockerfile.") and len(name) == len(".dockerfile.") + 20
    m = members(data)
    assert name in m and m[name].mode == 0o600
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile(name).read() == b"FROM scratch\n"
        assert tar.extractfile(".dockerignore").read() == b"*.tmp\n\n" + name.encode() + b"\n"


def test_added_dockerignore_when_there_is_none(tmp_path):
    make_context(tmp_path, {"a.txt": b"a"})
    name, data = pack(tmp_path, dockerfile_content=b"FROM scratch\n")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile(".dockerignore").read() == b".dockerignore\n" + name.encode() + b"\n"


@pytest.mark.parametrize(
    ("compression", "decompress", "magic"),
    [
        ("identity", lambda b: b, b""),
        ("gzip", gzip.decompress, b"\x1f\x8b\x08"),
        ("bzip2", bz2.decompress, b"BZh"),
        ("xz", lzma.decompress, b"\xfd7zXZ\x00"),
    ],
)
def test_compression_round_trips(tmp_path, compression, decompress, magic):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n", "data": os.urandom(100_000) + b"z" * 200_000})
    _, data = pack(tmp_path)
    packed = b"".join(bc.compress(bc.tar_context(tmp_path, "Dockerfile", [])[1], compression))
    assert packed.startswith(magic) and decompress(packed) == data
    assert bc.is_archive(packed)


def test_gzip_header_is_gos():
    packed = b"".join(bc.compress([b"abc"], "gzip"))
    assert packed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(packed) == b"abc"
    with pytest.raises(bc.ContextError, match="unsupported compression"):
        list(bc.compress([b"x"], "zstd"))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=6), st.sampled_from(bc.COMPRESSIONS))
def test_compress_any_chunking(chunks, compression):
    packed = b"".join(bc.compress(chunks, compression))
    plain = {"identity": lambda b: b, "gzip": gzip.decompress, "bzip2": bz2.decompress, "xz": lzma.decompress}
    assert plain[compression](packed) == b"".join(chunks)


def test_dockerfile_resolution(tmp_path, monkeypatch):
    make_context(tmp_path / "ctx", {"dockerfile": b"FROM scratch\n", "sub/My.Dockerfile": b"FROM scratch\n"})
    assert bc.get_context_from_local_dir(str(tmp_path / "ctx"), "")[1] == "dockerfile"  # lower-case fallback
    monkeypatch.chdir(tmp_path)
    assert bc.get_context_from_local_dir("ctx", "ctx/sub/My.Dockerfile")[1] == "sub/My.Dockerfile"
    (tmp_path / "outside.Dockerfile").write_text("FROM scratch\n")
    assert bc.get_context_from_local_dir("ctx", "outside.Dockerfile")[1] == "../outside.Dockerfile"
    with pytest.raises(bc.ContextError) as info:
        bc.get_context_from_local_dir("ctx", "nope")
    assert (
        str(info.value)
        == f"unable to evaluate symlinks in Dockerfile path: lstat {tmp_path}/nope: no such file or directory"
    )


def test_context_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(bc.ContextError, match="^context must be a directory: "):
        bc.resolve_and_validate_context_path(str(tmp_path / "file"))
    with pytest.raises(
        bc.ContextError, match="^unable to evaluate symlinks in context path: lstat .*: no such file"
    ):
        bc.resolve_and_validate_context_path(str(tmp_path / "missing"))


def test_sockets_are_refused(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n"})
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        with pytest.raises(bc.ContextError, match="sockets not supported"):
            pack(tmp_path)
    finally:
        sock.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_files_are_refused_before_sending(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n", "secret": b"s"})
    os.chmod(tmp_path / "secret", 0)
    with pytest.raises(bc.ContextError, match="no permission to read from"):
        pack(tmp_path)


def test_bad_dockerignore_is_reported(tmp_path):
    make_context(tmp_path, {"Dockerfile": b"FROM scratch\n"}, ignore="!\n")
    with pytest.raises(bc.ContextError) as info:
        pack(tmp_path)
    assert str(info.value) == "error checking context: 'illegal exclusion pattern: \"!\"'."


def test_single_dockerfile_tar_and_archive_sniffing():
    data = b"".join(bc.tar_single_dockerfile(b"FROM scratch\n"))
    assert list(members(data)) == ["Dockerfile"] and bc.is_archive(data[:512])
    assert not bc.is_archive(b"FROM scratch\n")
    assert not bc.is_archive(b"x" * 600)
