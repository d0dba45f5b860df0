"""Content hashes of a build context's files (moby pkg/tarsum/tarsum.go version 1, as
builder/remotecontext/tarsum.go computes them while the context is unpacked).

A file's hash is the sha256 of selected tar header fields (name, mode, owner, size, type, link target,
device numbers, the security.capability xattr; not the times), then its content. minibuild takes the
fields from the unpacked file's lstat, so that a hash computed later (`file_hash`, for a file nobody
hashed yet) and one computed during the unpacking (`TarSum`) agree.

`TarSum` is the observer `untar` calls for each entry: for a regular file it starts a hash from the
fields the file will have once written (the header's, with our own uid/gid when we cannot chown),
hashes the content as it goes to disk (in a helper thread: archive.digester), and keeps the result
only if the finished file really has those fields. Without hard links, untar never touches a file
again once written: a later entry at the same path replaces it (and drops its sum). A hard link entry
can change a written file's metadata through another name, so an archive with one keeps no sums. A
sum is also checked against the file's identity (inode, links, size, times) when it is looked up;
whatever has no valid sum is hashed from the file itself.
"""

import hashlib
import os
import stat
from pathlib import Path

from minibuild.archive.digester import HashPipeline
from minibuild.archive.tarstream import TarEntry

CAPABILITY_XATTR = "security.capability"
_TYPEFLAGS = ((stat.S_ISREG, "0"), (stat.S_ISLNK, "2"), (stat.S_ISCHR, "3"), (stat.S_ISBLK, "4"),
              (stat.S_ISDIR, "5"), (stat.S_ISFIFO, "6"))  # fmt: skip
_CHUNK = 1 << 20
_IN_THREAD = 256 << 10  # smaller files are hashed inline: a thread handoff would cost more

FileKey = tuple[int, ...]


def header_fields(name: str, st: os.stat_result, linkname: str, capability: bytes | None) -> bytes:
    """The selected header fields of a file with this lstat, as tarsum v1 feeds them to the hash."""
    is_dir = stat.S_ISDIR(st.st_mode)
    typeflag = next((flag for test, flag in _TYPEFLAGS if test(st.st_mode)), "0")
    is_device = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
    fields = [
        ("name", name + "/" if is_dir and not name.endswith("/") else name),
        ("mode", str(st.st_mode)),
        ("uid", str(st.st_uid)),
        ("gid", str(st.st_gid)),
        ("size", str(st.st_size if stat.S_ISREG(st.st_mode) else 0)),
        ("typeflag", typeflag),
        ("linkname", linkname),
        ("uname", ""),
        ("gname", ""),
        ("devmajor", str(os.major(st.st_rdev) if is_device else 0)),
        ("devminor", str(os.minor(st.st_rdev) if is_device else 0)),
    ]
    if capability is not None:
        fields.append((CAPABILITY_XATTR, capability.decode("latin-1")))
    return b"".join((key + value).encode("utf-8", "surrogateescape") for key, value in fields)


def _capability(target: str | int) -> bytes | None:
    try:
        if isinstance(target, int):
            return os.getxattr(target, CAPABILITY_XATTR)
        return os.getxattr(target, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


def file_key(st: os.stat_result) -> FileKey:
    """What identifies a file's state: any change to its content or metadata changes its ctime."""
    return (st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)  # fmt: skip


def file_hash(path: Path, name: str, st: os.stat_result) -> str:
    """The hash of the file at `path` (lstat `st`), known in the context as `name`."""
    linkname = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    h = hashlib.sha256(header_fields(name, st, linkname, _capability(str(path))))
    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


class TarSum:
    """File hashes computed while `untar` writes the files under `root` (pass it as `observe`).

    Call `close()` once the untar is over (also after a failure): it waits for the helper thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.sums: dict[str, _FileSum] = {}
        self.hard_links = False
        self._pipeline = HashPipeline(inline_bytes=0)
        self._uid, self._gid = os.geteuid(), os.getegid()

    def __call__(self, path: str, info: TarEntry) -> "_FileSum | None":
        name = os.path.relpath(path, self.root)
        self.sums.pop(name, None)  # whatever was there is being replaced
        if info.islnk():
            # A hard link entry changes the owner, mode and times of a file written before, maybe
            # within the same clock tick (ctime may not move): trust no sum of this archive.
            self.hard_links = True
        if self.hard_links or not info.isreg():
            return None
        owner = (info.uid, info.gid) if self._uid == 0 else (self._uid, self._gid)
        expected = os.stat_result((stat.S_IFREG | (info.mode & 0o7777), 0, 0, 1, *owner, info.size, 0, 0, 0))
        fields = header_fields(name, expected, "", info.xattrs.get(CAPABILITY_XATTR))
        pipeline = self._pipeline if info.size >= _IN_THREAD else None
        return _FileSum(self, name, fields, pipeline)

    def lookup(self, name: str, st: os.stat_result) -> str | None:
        """The hash of `name` computed during the untar, if the file is still exactly as written."""
        found = None if self.hard_links else self.sums.get(name)
        if found is None or found.key != file_key(st):
            return None
        return found.digest

    def close(self) -> None:
        self._pipeline.close()


class _FileSum:
    """One file's hash: inline for a small file, in the pipeline's thread for a big one."""

    def __init__(self, tarsum: TarSum, name: str, fields: bytes, pipeline: HashPipeline | None) -> None:
        self.tarsum, self.name, self.fields, self.pipeline = tarsum, name, fields, pipeline
        self.hash = hashlib.sha256(fields)
        self.key: FileKey | None = None
        self.digest: str | None = None

    def update(self, data: bytes) -> None:
        if self.pipeline is None:
            self.hash.update(data)
        else:
            self.pipeline.update(self.hash, data)

    def written(self, fd: int) -> None:
        st = os.fstat(fd)
        if header_fields(self.name, st, "", _capability(fd)) != self.fields:
            return  # not the file the header described (an owner we could not set...): hash it later
        self.key = file_key(st)
        self.tarsum.sums[self.name] = self
        if self.pipeline is None:
            self.digest = self.hash.hexdigest()
        else:
            self.pipeline.call(self._finish)

    def _finish(self) -> None:
        self.digest = self.hash.hexdigest()
