"""Safe extraction: every case with a hand-made tar (moby pkg/archive's Unpack rules)."""

import bz2
import contextlib
import gzip
import io
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibuild import archive
from minibuild.archive import (
    ArchiveError,
    apply_layer,
    decompress_stream,
    detect_compression,
    follow_symlink_in_scope,
    untar,
)

IS_ROOT = os.geteuid() == 0


def entry(name, kind=tarfile.REGTYPE, data=b"", **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.mtime = fields.pop("mtime", 1_600_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(*entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def extract(data: bytes, dest: Path, **kw) -> int:
    return untar(io.BytesIO(data), dest, **kw)


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "dest"
    d.mkdir()
    return d


# --- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"BZh91AY", "bzip2"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "identity"),  # zstd: unknown to moby 20.10
        (b"Dockerfile\x00", "identity"),
        (b"", "identity"),
        (b"\x1f\x8b", "identity"),  # too short to be gzip
    ],
)
def test_detect_compression_by_magic(head, kind):
    assert detect_compression(head) == kind


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress])
def test_untar_reads_every_compression(dest, compress):
    data = make_tar(entry("hello.txt", data=b"hi\n"))
    assert extract(compress(data), dest) == 3
    assert (dest / "hello.txt").read_bytes() == b"hi\n"


def test_decompress_stream_is_streaming():
    class Chunks(io.RawIOBase):
        """A source that must never be asked for everything at once."""

        def __init__(self, data):
            self.data, self.pos, self.biggest = data, 0, 0

        def readable(self):
            return True

        def read(self, n=-1):
            assert n is not None and n >= 0, "read the whole input"
            self.biggest = max(self.biggest, n)
            chunk = self.data[self.pos : self.pos + min(n, 1000)]  # short reads, like a socket
            self.pos += len(chunk)
            return chunk

    payload = os.urandom(300_000)
    src = Chunks(gzip.compress(payload))
    out = decompress_stream(src)
    assert out.read() == payload
    assert src.biggest <= 1 << 16


def test_truncated_gzip_is_unexpected_eof(dest):
    data = gzip.compress(make_tar(entry("f", data=os.urandom(5000))))
    with pytest.raises(ArchiveError, match="unexpected EOF"):
        extract(data[: len(data) // 2], dest)


def test_corrupt_gzip_is_archive_error(dest):
    data = bytearray(gzip.compress(make_tar(entry("f", data=b"x" * 5000))))
    data[20:40] = b"\xff" * 20
    with pytest.raises(ArchiveError):
        extract(bytes(data), dest)


def test_zstd_is_read_as_a_plain_tar_as_moby_20_10_reads_it(dest):
    with pytest.raises(ArchiveError, match="unexpected EOF"):
        extract(b"\x28\xb5\x2f\xfd" + bytes(100), dest)


# --- malformed tars ------------------------------------------------------------------------------


def test_empty_input_is_an_empty_archive(dest):
    assert extract(b"", dest) == 0  # Go's tar reader: io.EOF at a header boundary
    assert list(dest.iterdir()) == []


def test_short_garbage_is_unexpected_eof(dest):
    with pytest.raises(ArchiveError, match="^unexpected EOF$"):
        extract(b"this is not a tar", dest)


def test_block_of_garbage_is_invalid_header(dest):
    with pytest.raises(ArchiveError, match=r"^archive/tar: invalid tar header$"):
        extract(b"x" * 1024, dest)


def test_garbage_after_first_entry_is_reported_not_ignored(dest):
    good = make_tar(entry("a", data=b"1"))[:1024]  # header + data block, no end marker
    with pytest.raises(ArchiveError, match="invalid tar header"):
        extract(good + b"y" * 512, dest)


def test_truncated_content_is_unexpected_eof(dest):
    data = make_tar(entry("big", data=b"z" * 4000))
    with pytest.raises(ArchiveError, match="^unexpected EOF$"):
        extract(data[:2048], dest)


def test_truncated_header_is_unexpected_eof(dest):
    data = make_tar(entry("a", data=b"1"), entry("b", data=b"2"))
    with pytest.raises(ArchiveError, match="^unexpected EOF$"):
        extract(data[: 1024 + 100], dest)


def test_zero_block_then_header_is_invalid(dest):
    data = make_tar(entry("a", data=b"1"))[:1024]
    second = make_tar(entry("b", data=b"2"))[:512]
    with pytest.raises(ArchiveError, match="invalid tar header"):
        extract(data + bytes(512) + second, dest)


def test_pax_header_without_entry_is_unexpected_eof(dest):
    data = make_tar(entry("x" * 200, data=b"1"))  # PAX header for the long name, then the entry
    with pytest.raises(ArchiveError, match="unexpected EOF"):
        extract(data[:1024], dest)


def test_unknown_entry_type_is_refused(dest):
    with pytest.raises(ArchiveError, match="unhandled tar header type 90"):
        extract(make_tar(entry("odd", kind=b"Z")), dest)


def test_sparse_entries_are_refused(dest):
    data = bytearray(make_tar(entry("s", data=b"")))
    data[156:157] = b"S"
    chksum = sum(data[:148]) + 8 * 32 + sum(data[156:512])
    data[148:156] = b"%06o\x00 " % chksum
    with pytest.raises(ArchiveError, match="sparse"):
        extract(bytes(data), dest)


# --- what is preserved -----------------------------------------------------------------------------


def test_files_dirs_links_modes_and_times(dest):
    data = make_tar(
        entry("dir", tarfile.DIRTYPE, mode=0o750, mtime=1_000_000_000),
        entry("dir/file", data=b"content", mode=0o4755, mtime=1_100_000_000),
        entry("dir/link", tarfile.SYMTYPE, linkname="file", mtime=1_200_000_000),
        # moby applies a hard link's mode and times to the shared inode, so they match the file's.
        entry("dir/hard", tarfile.LNKTYPE, linkname="dir/file", mode=0o4755, mtime=1_100_000_000),
        entry("sticky", tarfile.DIRTYPE, mode=0o1777),
        entry("fifo", tarfile.FIFOTYPE, mode=0o600),
    )
    assert extract(data, dest) == 7
    f = (dest / "dir/file").stat()
    assert stat.S_IMODE(f.st_mode) == 0o4755
    assert f.st_mtime == 1_100_000_000
    assert os.readlink(dest / "dir/link") == "file"
    assert os.lstat(dest / "dir/link").st_mtime == 1_200_000_000
    assert os.stat(dest / "dir/hard").st_ino == f.st_ino
    d = (dest / "dir").stat()
    assert stat.S_IMODE(d.st_mode) == 0o750
    assert d.st_mtime == 1_000_000_000  # set after its contents were written
    assert stat.S_IMODE((dest / "sticky").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)


def test_nanosecond_pax_times(dest):
    info, data = entry("f", data=b"x")
    info.pax_headers = {"mtime": "1600000000.123456789", "atime": "1700000000.5"}
    extract(make_tar((info, data)), dest)
    st_ = (dest / "f").stat()
    assert st_.st_mtime_ns == 1_600_000_000_123_456_789
    assert st_.st_atime_ns == 1_700_000_000_500_000_000


def test_long_names_gnu_and_pax(dest):
    long = "d/" + "n" * 150 + "/" + "f" * 120
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        target = "t" * 160
        extract(
            make_tar(entry(long, data=b"1"), entry("sym", tarfile.SYMTYPE, linkname=target), fmt=fmt),
            dest,
        )
        assert (dest / long).read_bytes() == b"1"
        assert os.readlink(dest / "sym") == target


def test_non_utf8_names_round_trip(dest):
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    extract(make_tar(entry(name, data=b"1"), fmt=tarfile.GNU_FORMAT), dest)
    assert os.listdir(os.fsencode(dest)) == [b"caf\xe9"]


@pytest.mark.skipif(not IS_ROOT, reason="ownership is applied only as root")
def test_ownership_as_root(dest):
    extract(make_tar(entry("f", data=b"1", uid=1234, gid=5678), entry("l", tarfile.SYMTYPE, linkname="f",
                                                                       uid=42, gid=43)), dest)  # fmt: skip
    assert ((dest / "f").stat().st_uid, (dest / "f").stat().st_gid) == (1234, 5678)
    assert (os.lstat(dest / "l").st_uid, os.lstat(dest / "l").st_gid) == (42, 43)


def test_setuid_survives_chown(dest):
    extract(make_tar(entry("su", data=b"#!", mode=0o6755, uid=0, gid=0)), dest)
    assert stat.S_IMODE((dest / "su").stat().st_mode) == 0o6755


def test_xattrs_are_restored(dest):
    probe = dest / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    probe.unlink()
    info, data = entry("f", data=b"1")
    value = b"\x01\x00\xff binary"
    info.pax_headers = {"SCHILY.xattr.user.test": value.decode("utf-8", "surrogateescape")}
    extract(make_tar((info, data)), dest)
    assert os.getxattr(dest / "f", "user.test") == value


@pytest.mark.skipif(not IS_ROOT or archive.running_in_user_ns(), reason="devices need real root")
def test_devices_are_created_as_root(dest):
    extract(make_tar(entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)), dest)
    st_ = os.lstat(dest / "null")
    assert stat.S_ISCHR(st_.st_mode) and (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == (1, 3)


def test_devices_are_skipped_when_unprivileged(dest, monkeypatch):
    monkeypatch.setattr(archive.archive, "_privileged", lambda: False)
    data = make_tar(
        entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        entry("after", data=b"ok"),
    )
    extract(data, dest)
    assert sorted(os.listdir(dest)) == ["after"]


def test_unprivileged_extraction_for_real(tmp_path):
    """Run untar as `nobody` in a forked child: devices skipped, ownership left, read-only dirs filled."""
    if not IS_ROOT:
        pytest.skip("needs root to switch to nobody")
    data = make_tar(
        entry("ro", tarfile.DIRTYPE, mode=0o555),
        entry("ro/file", data=b"x", uid=0),
        entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3),
    )
    base = Path(tempfile.mkdtemp(prefix="minibuild-unpriv-"))  # pytest's own temp dirs are root-only
    os.chmod(base, 0o755)
    out = base / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if extract(data, out) == 1 else 2
        except BaseException as err:  # noqa: BLE001 - reported through the exit status
            sys.stderr.write(f"{err!r}\n")
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (out / "ro/file").read_bytes() == b"x"
        assert (out / "ro/file").stat().st_uid == 65534
        assert stat.S_IMODE((out / "ro").stat().st_mode) == 0o555
        assert not (out / "null").exists()
    finally:
        shutil.rmtree(base)


# --- destinations reached through links --------------------------------------------------------------


@contextlib.contextmanager
def private_mount(directory: Path) -> Iterator[Path]:
    """`directory` as a process with its own mount namespace sees it, a tmpfs on top: /proc/<pid>/root/…

    Skips where `unshare` or namespaces are unavailable. The process is ended by its pid on exit.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("the unshare command (util-linux) is not installed")
    user_ns = [] if IS_ROOT else ["--user", "--map-root-user"]
    script = 'mount -t tmpfs tmpfs "$1" && echo ready && exec sleep 3600'
    holder = subprocess.Popen(
        [unshare, *user_ns, "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        if holder.stdout.readline() != b"ready\n":
            pytest.skip("cannot make a mount namespace here")
        yield Path(f"/proc/{holder.pid}/root") / str(directory).lstrip("/")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_untar_into_another_mount_namespace_through_proc_root(tmp_path):
    """A destination under /proc/<pid>/root is that process's view; realpath would name the host's."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    data = make_tar(
        entry("etc", tarfile.DIRTYPE),
        entry("etc/hostname", data=b"inside\n"),
        entry("abs", tarfile.SYMTYPE, linkname="/etc"),
        entry("abs/through-link", data=b"via /etc\n"),  # an absolute link resolves inside the view too
    )
    with private_mount(mount_point) as view:
        assert extract(data, view / "rootfs") == len(b"inside\n") + len(b"via /etc\n")
        assert (view / "rootfs/etc/hostname").read_bytes() == b"inside\n"
        assert (view / "rootfs/etc/through-link").read_bytes() == b"via /etc\n"
        assert os.readlink(view / "rootfs/abs") == "/etc"
        assert list(mount_point.iterdir()) == []  # nothing landed on the host's side of the mount point


def test_untar_through_a_symlinked_destination(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to("real")
    data = make_tar(
        entry("d/f", data=b"x"),
        entry("up", tarfile.SYMTYPE, linkname="d"),
        entry("hard", tarfile.LNKTYPE, linkname="/d/f"),
    )
    extract(data, tmp_path / "link" / "sub")
    assert (real / "sub/d/f").read_bytes() == b"x"
    assert os.readlink(real / "sub/up") == "d"
    assert os.stat(real / "sub/hard").st_ino == os.stat(real / "sub/d/f").st_ino
    with pytest.raises(ArchiveError, match="invalid symlink"):  # still judged against the destination
        extract(make_tar(entry("out", tarfile.SYMTYPE, linkname="../../x")), tmp_path / "link" / "sub")


# --- safety ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "..", "./../evil"])
def test_names_climbing_out_are_refused(tmp_path, dest, name):
    with pytest.raises(ArchiveError, match="is outside of"):
        extract(make_tar(entry(name, data=b"x")), dest)
    assert not (tmp_path / "evil").exists()


def test_absolute_names_land_inside(dest):
    extract(make_tar(entry("/etc/evil", data=b"x"), entry("/../up", data=b"y")), dest)
    assert (dest / "etc/evil").read_bytes() == b"x"
    assert (dest / "up").read_bytes() == b"y"  # Go's Clean("/../up") is "/up"


def test_relative_symlink_out_of_dest_is_refused(dest):
    with pytest.raises(ArchiveError, match="invalid symlink"):
        extract(make_tar(entry("a/link", tarfile.SYMTYPE, linkname="../../outside")), dest)


def test_absolute_symlink_is_kept_and_written_through_inside(tmp_path, dest):
    """`a -> /etc` then `a/passwd`: the write lands in dest/etc/passwd, as a chroot would put it."""
    host_file = tmp_path / "etc-like"
    host_file.mkdir()
    data = make_tar(
        entry("a", tarfile.SYMTYPE, linkname=str(host_file)),
        entry("a/passwd", data=b"root::0:0::/:/bin/sh\n"),
    )
    extract(data, dest)
    assert os.readlink(dest / "a") == str(host_file)
    assert list(host_file.iterdir()) == []
    assert (dest / str(host_file).lstrip("/") / "passwd").read_bytes().startswith(b"root")


def test_symlink_to_parent_chain_stays_inside(tmp_path, dest):
    """A relative symlink that stays inside, then entries written through a chain of links."""
    (tmp_path / "outside").mkdir()
    data = make_tar(
        entry("x/y", tarfile.DIRTYPE),
        entry("x/y/up", tarfile.SYMTYPE, linkname=".."),  # -> x, inside
        entry("root", tarfile.SYMTYPE, linkname="/"),
        entry("root/x/y/up/up/../../../../outside/f", data=b"1"),
    )
    extract(data, dest)
    assert not (tmp_path / "outside/f").exists()
    assert (dest / "outside/f").read_bytes() == b"1"


def test_existing_symlink_is_replaced_not_written_through(tmp_path, dest):
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    (dest / "f").symlink_to(victim)
    extract(make_tar(entry("f", data=b"new")), dest)
    assert victim.read_bytes() == b"original"
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"new"


def test_hard_link_out_of_dest_is_refused(tmp_path, dest):
    (tmp_path / "secret").write_bytes(b"s")
    with pytest.raises(ArchiveError, match="invalid hardlink"):
        extract(make_tar(entry("h", tarfile.LNKTYPE, linkname="../secret")), dest)


def test_absolute_hard_link_is_resolved_inside(dest):
    """`h => /etc/passwd` names dest/etc/passwd; when that is missing, nothing on the host is linked."""
    with pytest.raises(ArchiveError, match="no such file"):
        extract(make_tar(entry("h", tarfile.LNKTYPE, linkname="/etc/passwd")), dest)
    assert not (dest / "h").exists()


def test_hard_link_through_symlinked_dir_is_resolved_inside(tmp_path, dest):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    data = make_tar(
        entry("root", tarfile.SYMTYPE, linkname="/"),
        entry(str(tmp_path).lstrip("/") + "/secret", data=b"inside"),
        entry("h", tarfile.LNKTYPE, linkname="root" + str(secret)),
    )
    extract(data, dest)
    assert os.stat(dest / "h").st_ino != secret.stat().st_ino
    assert (dest / "h").read_bytes() == b"inside"


def test_hard_link_to_symlink_links_the_symlink(dest):
    extract(make_tar(entry("s", tarfile.SYMTYPE, linkname="/nowhere"),
                     entry("h", tarfile.LNKTYPE, linkname="s")), dest)  # fmt: skip
    assert os.readlink(dest / "h") == "/nowhere"


def test_root_entry_cannot_replace_destination(dest):
    before = dest.stat()
    extract(make_tar(entry("./", tarfile.DIRTYPE, mode=0o700, mtime=5)), dest)
    after = dest.stat()  # the root entry is skipped, as moby skips it
    assert (after.st_mode, after.st_mtime) == (before.st_mode, before.st_mtime)
    with pytest.raises(ArchiveError, match="cannot replace the extraction root"):
        extract(make_tar(entry(".", data=b"x")), dest)
    assert dest.is_dir()


def test_size_limit_stops_a_tar_bomb(dest):
    bomb = gzip.compress(make_tar(entry("a", data=bytes(600_000)), entry("b", data=bytes(600_000))))
    assert len(bomb) < 5000
    with pytest.raises(ArchiveError, match="size limit of 1000000 bytes"):
        extract(bomb, dest, size_limit=1_000_000)
    assert not (dest / "b").exists()
    assert extract(bomb, dest / "ok", size_limit=1_200_000) == 1_200_000


def test_file_where_a_directory_is_needed(dest):
    with pytest.raises(ArchiveError, match="not a directory"):
        extract(make_tar(entry("f", data=b"1"), entry("f/g", data=b"2")), dest)


# --- replacing existing content ----------------------------------------------------------------------


def test_entries_replace_what_is_there(dest):
    (dest / "was_dir").mkdir()
    (dest / "was_dir/inner").write_bytes(b"1")
    (dest / "was_file").write_bytes(b"1")
    (dest / "kept_dir").mkdir()
    (dest / "kept_dir/inner").write_bytes(b"keep")
    data = make_tar(
        entry("was_dir", data=b"now a file"),
        entry("was_file", tarfile.DIRTYPE),
        entry("kept_dir", tarfile.DIRTYPE, mode=0o700),
    )
    extract(data, dest)
    assert (dest / "was_dir").read_bytes() == b"now a file"
    assert (dest / "was_file").is_dir()
    assert (dest / "kept_dir/inner").read_bytes() == b"keep"
    assert stat.S_IMODE((dest / "kept_dir").stat().st_mode) == 0o700


def test_rewriting_a_hard_linked_file_breaks_the_link(dest):
    (dest / "a").write_bytes(b"1")
    os.link(dest / "a", dest / "b")
    extract(make_tar(entry("b", data=b"2")), dest)
    assert (dest / "a").read_bytes() == b"1"


# --- whiteouts -------------------------------------------------------------------------------------------


def lower_tree(dest: Path) -> None:
    (dest / "dir/sub").mkdir(parents=True)
    (dest / "dir/old").write_bytes(b"old")
    (dest / "dir/sub/deep").write_bytes(b"deep")
    (dest / "gone").write_bytes(b"gone")
    (dest / "gonedir/x").mkdir(parents=True)


def test_whiteouts_kept_as_files(dest):
    extract(make_tar(entry(".wh.gone"), entry("dir/.wh..wh..opq")), dest)
    assert sorted(p.name for p in dest.rglob("*")) == [".wh..wh..opq", ".wh.gone", "dir"]


def test_apply_layer_deletes_and_makes_opaque(dest):
    lower_tree(dest)
    layer = make_tar(
        entry("dir", tarfile.DIRTYPE),
        entry("dir/new", data=b"new"),  # written by this layer before the opaque marker: kept
        entry("dir/.wh..wh..opq"),
        entry("dir/after", data=b"after"),
        entry(".wh.gone"),
        entry(".wh.gonedir"),
        entry(".wh.never-existed"),
    )
    apply_layer(io.BytesIO(layer), dest)
    assert sorted(os.listdir(dest / "dir")) == ["after", "new"]
    assert not (dest / "gone").exists() and not (dest / "gonedir").exists()
    assert not any(p.name.startswith(".wh.") for p in dest.rglob("*"))


def test_apply_layer_skips_aufs_metadata(dest):
    layer = make_tar(entry(".wh..wh.plnk", tarfile.DIRTYPE), entry(".wh..wh.plnk/123", data=b"x"),
                     entry("real", data=b"1"))  # fmt: skip
    apply_layer(io.BytesIO(layer), dest)
    assert os.listdir(dest) == ["real"]


def test_apply_layer_whiteout_through_symlink_stays_inside(tmp_path, dest):
    (tmp_path / "precious").write_bytes(b"p")
    (dest / "link").symlink_to(tmp_path)
    apply_layer(io.BytesIO(make_tar(entry("link/.wh.precious"))), dest)
    assert (tmp_path / "precious").exists()


@pytest.mark.skipif(not IS_ROOT, reason="overlay xattrs and whiteout devices as root")
def test_overlay_whiteouts(dest):
    layer = make_tar(
        entry("dir", tarfile.DIRTYPE),
        entry("dir/.wh..wh..opq"),
        entry("dir/f", data=b"1"),
        entry(".wh.gone", uid=0, gid=0),
    )
    untar(io.BytesIO(layer), dest, whiteouts="overlay")
    st_ = os.lstat(dest / "gone")
    assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == 0
    assert os.getxattr(dest / "dir", archive.overlay_opaque_xattr()) == b"y"
    assert sorted(os.listdir(dest / "dir")) == ["f"]
    assert not (dest / ".wh.gone").exists()


def test_unknown_whiteout_mode_is_a_programming_error(dest):
    with pytest.raises(ValueError):
        extract(make_tar(entry("f")), dest, whiteouts="aufs")


# --- follow_symlink_in_scope ---------------------------------------------------------------------------


def test_follow_symlink_in_scope(tmp_path):
    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "abs").symlink_to("/a/b")
    (root / "rel").symlink_to("../../../../a")
    (root / "a/b/loop").symlink_to("loop")
    assert follow_symlink_in_scope(str(root / "abs/c"), root) == root / "a/b/c"
    assert follow_symlink_in_scope("rel/b", root) == root / "a/b"
    assert follow_symlink_in_scope("../../..", root) == root
    assert follow_symlink_in_scope(str(root), root) == root
    with pytest.raises(ArchiveError, match="too many links"):
        follow_symlink_in_scope("a/b/loop", root)
    with pytest.raises(ArchiveError, match="is not in"):
        follow_symlink_in_scope("/etc/passwd", root)


# --- property: nothing is ever written outside the destination -------------------------------------------

_part = st.sampled_from(["a", "b", "..", ".", "", "/", "c"])
_name = st.lists(_part, min_size=1, max_size=5).map("/".join)
_target = st.one_of(_name, st.sampled_from(["/", "..", "../..", "/a", "a/../..", "../outside"]))
_entries = st.lists(
    st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), _name, _target), max_size=8
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_entries)
def test_never_writes_outside(tmp_path_factory, entries):
    base = tmp_path_factory.mktemp("prop")
    dest = base / "dest"
    outside = base / "outside"
    outside.mkdir()
    (outside / "sentinel").write_bytes(b"s")
    made = []
    for kind, name, target in entries:
        if kind == "file":
            made.append(entry(name, data=b"data"))
        elif kind == "dir":
            made.append(entry(name, tarfile.DIRTYPE))
        elif kind == "symlink":
            made.append(entry(name, tarfile.SYMTYPE, linkname=target.replace("outside", str(outside))))
        else:
            made.append(entry(name, tarfile.LNKTYPE, linkname=target))
    try:
        extract(make_tar(*made), dest)
    except ArchiveError:
        pass
    assert sorted(os.listdir(base)) == ["dest", "outside"]
    assert os.listdir(outside) == ["sentinel"] and (outside / "sentinel").read_bytes() == b"s"


# --- property: damaged archives fail with ArchiveError, nothing else ---------------------------------------

_SAMPLE = make_tar(
    entry("d", tarfile.DIRTYPE),
    entry("d/" + "long" * 40, data=b"x" * 700),
    entry("l", tarfile.SYMTYPE, linkname="d"),
    entry("h", tarfile.LNKTYPE, linkname="d/" + "long" * 40),
    entry(".wh.gone"),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(_SAMPLE)),
    st.sampled_from(["keep", "apply", "overlay"]),
)
def test_damaged_archives_only_raise_archive_error(tmp_path_factory, flips, cut, whiteouts):
    data = bytearray(_SAMPLE[:cut])
    for offset, value in flips:
        if offset < len(data):
            data[offset] = value
    base = tmp_path_factory.mktemp("fuzz")
    try:
        untar(io.BytesIO(bytes(data)), base / "dest", whiteouts=whiteouts)
    except ArchiveError:
        pass
    assert sorted(os.listdir(base)) == ["dest"]


def test_nul_in_pax_names_is_invalid(dest):
    info, data = entry("f", data=b"1")
    info.pax_headers = {"path": "a\0b"}
    with pytest.raises(ArchiveError, match="invalid tar header"):
        extract(make_tar((info, data)), dest)
