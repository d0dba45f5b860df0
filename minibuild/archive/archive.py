"""Safe tar extraction (moby pkg/archive/archive.go, archive_linux.go, diff.go; pkg/symlink/fs.go).

dockerd extracts inside a chroot of the destination (pkg/chrootarchive), so nothing in the tree can
lead out of it. minibuild does not chroot: it resolves every parent directory with
`follow_symlink_in_scope`, which gives the answer a chroot would give, and never follows a symlink in
the last component of a path it creates. The destination itself is taken as given, like the chroot's
directory, so one reached through a link (`/proc/<pid>/root/…`, a symlinked path) is filled where the
link leads. Rules, as pkg/archive's Unpack checks them:

* entry names are cleaned; absolute names land inside the destination (`/etc/x` -> `dest/etc/x`);
  names that still climb out (`../x`, `a/../../x`) are refused as breakouts (the chroot would have
  clamped them to the root instead; refusing is pkg/archive's own rule and the safer one);
* a symlink may point anywhere absolute (resolved inside the rootfs when used), but a relative target
  that climbs out of the destination is refused; a hard link must name a path inside;
* device nodes are skipped when we are not real root (rootless or in a user namespace), as moby does;
* ownership is applied only as root; xattrs the filesystem refuses (ENOTSUP, EPERM) are skipped;
* directory times (and modes) are set after their contents are written;
* an archive holds at most the entries, and unpacks to at most the bytes of file content, of the limits
  in force (minibuild.archive.limits: the daemon's --max-archive-entries and --max-archive-size), or
  of the caller's own `size_limit`: tar bombs are refused.

Whiteouts: "keep" writes `.wh.*` entries as plain files (build contexts, imports); "apply" makes them
delete what they name (moby's UnpackLayer/ApplyLayer); "overlay" turns them into overlayfs whiteouts
(moby overlay2's ConvertRead). An error may leave a partial tree: callers extract into a fresh
directory and discard it on failure, as moby's layer store does.
"""

import errno
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from minibuild.archive.compression import decompress_stream
from minibuild.archive.errors import ArchiveError
from minibuild.archive.limits import current_limits
from minibuild.archive.tarstream import EntryReader, TarEntry, pax_time_ns, read_entries
from minibuild.dockerfile.gotext import quote  # Go's %q

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE_DIR = ".wh..wh..opq"
_WHITEOUT_MODES = ("keep", "apply", "overlay")
_MAX_SYMLINKS = 255  # pkg/symlink's maxIter
_CHUNK = 1 << 20
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _os_error(op: str, path: str, err: OSError) -> ArchiveError:
    """Go's *PathError wording: `mkdir /a/b: not a directory`."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    return ArchiveError(f"{op} {path}: {reason[:1].lower()}{reason[1:]}")


def running_in_user_ns() -> bool:
    """True inside a user namespace (moby pkg/userns): the uid map is not the full identity map."""
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields != ["0", "0", "4294967295"]


def _privileged() -> bool:
    return os.geteuid() == 0 and not running_in_user_ns()


def overlay_opaque_xattr() -> str:
    """The xattr marking an opaque overlay directory: trusted.* as real root, user.* (userxattr) otherwise."""
    return "trusted.overlay.opaque" if _privileged() else "user.overlay.opaque"


def follow_symlink_in_scope(path: str, root: Path) -> Path:
    """Resolve `path` as if `root` were `/` (moby pkg/symlink FollowSymlinkInScope).

    `path` is a host path under `root` (moby's convention) or a path relative to `root`. Every symlink
    is followed with `root` as its `/`, so `..` and absolute targets never leave it. Components that do
    not exist are kept as written. The result is a host path under `root`.
    """
    root_path = os.path.abspath(root)
    full = os.path.join(root_path, path) if not os.path.isabs(path) else os.path.abspath(path)
    if full != root_path and not full.startswith(root_path.rstrip("/") + "/"):
        raise ArchiveError(f"evalSymlinksInScope: {full} is not in {root_path}")
    todo = full[len(root_path) :]
    resolved = ""  # the path resolved so far, relative to root, always clean, without a leading "/"
    for _ in range(_MAX_SYMLINKS + 1):
        if not todo:
            return Path(os.path.join(root_path, resolved)) if resolved else Path(root_path)
        part, _, todo = todo.lstrip("/").partition("/")
        if part in ("", "."):
            continue
        if part == "..":
            resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, part)
        host = os.path.join(root_path, candidate)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            resolved = candidate  # missing: accept it as written
            continue
        except OSError as err:
            raise _os_error("lstat", "/" + candidate, err)
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        target = os.readlink(host)
        if target.startswith("/"):
            resolved = ""
        todo = target + "/" + todo
    raise ArchiveError(f"evalSymlinksInScope: too many links in {full}")


def _clean_name(name: str) -> str:
    """An entry name cleaned like Go's filepath.Clean and made relative to the destination."""
    if _is_clean(name):
        return name
    cleaned = posixpath.normpath(name or ".")
    if cleaned.startswith("/"):
        return cleaned.lstrip("/") or "."  # filepath.Join(dest, "/etc/x") is dest/etc/x
    if cleaned == ".." or cleaned.startswith("../"):
        raise ArchiveError(f"{quote(name)} is outside of {quote('/')}")  # moby's breakoutError
    return cleaned


def _is_clean(name: str) -> bool:
    """True when cleaning cannot change `name`: relative, no empty, "." or ".." part, no trailing slash.

    Nearly every entry name is; this costs less than normpath (whose answer it would be) per entry.
    """
    return bool(name) and name[0] not in "./" and name[-1] != "/" and "//" not in name and "/." not in name


def _remove(path: str) -> None:
    """Remove a file, link or whole directory without following symlinks (os.RemoveAll)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may take only part of it)."""
    done = os.write(fd, data)
    while done < len(data):
        done += os.write(fd, memoryview(data)[done:])


def _time_ns(info: TarEntry, key: str) -> int:
    value = info.pax_headers.get(key)
    return pax_time_ns(value) if value is not None else int(info.mtime) * 1_000_000_000


class FileObserver(Protocol):
    """Sees one regular file as untar writes it: its content, then the finished file's descriptor."""

    def update(self, data: bytes) -> None: ...

    def written(self, fd: int) -> None:
        """The file is complete: content, owner, xattrs, mode and times (fstat it now)."""


Observe = Callable[[str, TarEntry], FileObserver | None]


class _Unpacker:
    """One extraction: the state moby's Unpack keeps in locals (directories to finish, paths written)."""

    def __init__(self, dest: Path, whiteouts: str, size_limit: int | None, observe: Observe | None = None):
        if whiteouts not in _WHITEOUT_MODES:
            raise ValueError(f"whiteouts must be one of {_WHITEOUT_MODES}, not {whiteouts!r}")
        # Cleaned, not resolved: a destination reached through /proc/<pid>/root (another mount namespace)
        # only leads there through the kernel's own walk; what lies below it is resolved in scope.
        self.root = os.path.abspath(dest)
        self.whiteouts = whiteouts
        self.size_limit = size_limit
        self.written = 0
        self.observe = observe
        self.privileged = _privileged()
        self.is_root = os.geteuid() == 0
        self.dirs: list[tuple[str, TarEntry]] = []
        self.unpacked: set[str] = set()  # host paths written by this layer (UnpackLayer's unpackedPaths)
        # Resolved parent directories; forgotten whenever something is removed or a link is made,
        # since either may change what a path resolves to.
        self.parents: dict[str, str] = {}

    def shown(self, path: str) -> str:
        """A host path as the chrooted extractor would print it."""
        return "/" + os.path.relpath(path, self.root).lstrip(".")

    def parent_dir(self, rel: str) -> str:
        """The entry's parent directory, resolved in scope and created (0755) when missing."""
        rel_dir = rel.rpartition("/")[0]  # posixpath.dirname, for a cleaned name
        if rel_dir in self.parents:
            return self.parents[rel_dir]
        parent = str(follow_symlink_in_scope(rel_dir, Path(self.root)))
        if not os.path.isdir(parent) or os.path.islink(parent):
            missing = []
            probe = parent
            while not os.path.lexists(probe):
                missing.append(probe)
                probe = os.path.dirname(probe)
            for path in reversed(missing):
                try:
                    os.mkdir(path, 0o755)
                    os.chmod(path, 0o755)  # not the umask's choice
                except OSError as err:
                    raise _os_error("mkdir", self.shown(path), err)
            if not os.path.isdir(parent):
                raise ArchiveError(f"mkdir {self.shown(parent)}: not a directory")
        self.parents[rel_dir] = parent
        return parent

    def run(self, stream: BinaryIO) -> int:
        limits = current_limits()
        if self.size_limit is None:
            self.size_limit = limits.max_size
        for count, (info, content) in enumerate(read_entries(stream), 1):
            if limits.max_entries is not None and count > limits.max_entries:
                raise ArchiveError(f"archive exceeds the limit of {limits.max_entries} entries")
            self.entry(info, content)
        for path, info in self.dirs:  # after their contents, so writing into them did not bump mtimes
            if os.path.isdir(path) and not os.path.islink(path):
                self.stamp(path, info, path, chmod=True)
        return self.written

    def entry(self, info: TarEntry, content: EntryReader) -> None:
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) or (
            self.whiteouts != "keep" and posixpath.basename(info.name.rstrip("/")).startswith(WHITEOUT_PREFIX)
        ):
            self.parents.clear()
        rel = _clean_name(info.name)
        base = rel.rpartition("/")[2]  # posixpath.basename, for a cleaned name
        if self.whiteouts == "apply" and rel.startswith(WHITEOUT_META_PREFIX) and rel != WHITEOUT_OPAQUE_DIR:
            return  # AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) is not part of the filesystem
        if rel == ".":
            if info.isdir():
                return  # moby skips the root entry: the destination keeps its own mode and times
            raise ArchiveError(f"cannot replace the extraction root with {quote(info.name)}")
        parent = self.parent_dir(rel)
        path = os.path.join(parent, base)
        if self.whiteouts != "keep" and base.startswith(WHITEOUT_PREFIX):
            self.whiteout(info, parent, base)
            return
        if not info.isreg():  # a regular file finds out what is there when it tries to create itself
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and not (stat.S_ISDIR(st.st_mode) and info.isdir()):
                self.replace(path)
        observer = self.observe(path, info) if self.observe is not None else None
        self.create(path, info, content, observer)
        self.unpacked.add(path)

    def replace(self, path: str) -> None:
        """Remove what is at `path` before writing there: never write through what was there."""
        self.parents.clear()
        try:
            _remove(path)
        except OSError as err:
            raise _os_error("remove", self.shown(path), err)

    def whiteout(self, info: TarEntry, parent: str, base: str) -> None:
        """A `.wh.` entry: delete (apply) or mark for overlayfs (overlay)."""
        if self.whiteouts == "overlay":
            if base == WHITEOUT_OPAQUE_DIR:
                try:
                    os.setxattr(parent, overlay_opaque_xattr(), b"y", follow_symlinks=False)
                except OSError as err:
                    raise _os_error("setxattr", self.shown(parent), err)
                return
            target = os.path.join(parent, base[len(WHITEOUT_PREFIX) :])
            try:
                _remove(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))  # unprivileged since Linux 5.8
                if self.is_root:
                    os.chown(target, info.uid, info.gid, follow_symlinks=False)
            except OSError as err:
                raise _os_error("mknod", self.shown(target), err)
            return
        try:
            if base == WHITEOUT_OPAQUE_DIR:
                self.empty_opaque(parent)
            else:
                _remove(os.path.join(parent, base[len(WHITEOUT_PREFIX) :]))
        except OSError as err:
            raise _os_error("remove", self.shown(parent), err)

    def empty_opaque(self, directory: str) -> None:
        """Remove what lower layers left in `directory`, keeping what this layer already wrote."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(directory, name)
            if path not in self.unpacked:
                _remove(path)
            elif os.path.isdir(path) and not os.path.islink(path):
                self.empty_opaque(path)

    def create(self, path: str, info: TarEntry, content: EntryReader, observer: FileObserver | None) -> None:
        """moby's createTarFile: make the node, then owner, xattrs, mode and times, in that order."""
        try:
            if info.isdir():
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)  # final mode is set after the contents are written
            elif info.isreg():
                self.write_file(path, info, content, observer)
                return
            elif info.islnk():
                self.hard_link(path, info)
            elif info.issym():
                self.symlink(path, info)
            elif info.ischr() or info.isblk():
                if not self.privileged:
                    return  # cannot create devices rootless or in a user namespace: skip, as moby does
                kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
                os.mknod(path, kind | (info.mode & 0o7777), os.makedev(info.devmajor, info.devminor))
            elif info.isfifo():
                os.mkfifo(path, info.mode & 0o7777)
            else:
                raise ArchiveError(f"unhandled tar header type {ord(info.type)}")
        except OSError as err:
            raise _os_error("create", self.shown(path), err)
        if info.islnk() and os.path.islink(path):
            return  # a hard link to a symlink: there is no lchmod, and its times belong to the target
        self.own(path, info, path)
        if info.isdir():
            self.dirs.append((path, info))  # mode and times once the contents are in
        else:
            self.stamp(path, info, path, chmod=not info.issym())

    def write_file(
        self, path: str, info: TarEntry, content: EntryReader, observer: FileObserver | None
    ) -> None:
        if self.size_limit is not None and self.written + info.size > self.size_limit:
            raise ArchiveError(f"archive exceeds the size limit of {self.size_limit} bytes")
        try:
            fd = os.open(path, _NEW_FILE, 0o600)
        except FileExistsError:
            self.replace(path)
            fd = os.open(path, _NEW_FILE, 0o600)
        # The bare descriptor, not a file object: most files are small, and a buffered writer's own
        # set-up (fstat, ioctl, lseek) and flush cost more than their content's single write.
        try:
            while chunk := content.read(_CHUNK):
                _write_all(fd, chunk)
                if observer is not None:
                    observer.update(chunk)
            self.own(fd, info, path)  # through the descriptor: no more path lookups for this file
            self.stamp(fd, info, path, chmod=True)
            if observer is not None:
                observer.written(fd)
        finally:
            os.close(fd)
        self.written += info.size

    def hard_link(self, path: str, info: TarEntry) -> None:
        target_rel = posixpath.normpath(info.linkname or ".")
        if not target_rel.startswith("/") and (target_rel == ".." or target_rel.startswith("../")):
            raise ArchiveError(f"invalid hardlink {quote(self.shown(path))} -> {quote(info.linkname)}")
        target_rel = target_rel.lstrip("/") or "."
        parent = follow_symlink_in_scope(posixpath.dirname(target_rel), Path(self.root))
        os.link(os.path.join(parent, posixpath.basename(target_rel)), path, follow_symlinks=False)

    def symlink(self, path: str, info: TarEntry) -> None:
        if not info.linkname.startswith("/"):
            target = os.path.normpath(os.path.join(os.path.dirname(path), info.linkname))
            if target != self.root and not target.startswith(self.root.rstrip("/") + "/"):
                raise ArchiveError(f"invalid symlink {quote(self.shown(path))} -> {quote(info.linkname)}")
        os.symlink(info.linkname, path)

    def own(self, target: str | int, info: TarEntry, path: str) -> None:
        """Owner (as root only) and xattrs (skipped where the filesystem refuses them, as moby does).

        `target` is the path, never followed if a symlink, or an open descriptor of it.
        """
        follow = isinstance(target, int)  # a descriptor is the file itself (os refuses it with False)
        if self.is_root:
            try:
                os.chown(target, info.uid, info.gid, follow_symlinks=follow)
            except OSError as err:
                # An id unmapped in our user namespace keeps ours (moby fails; rootless extraction needs it).
                if err.errno != errno.EINVAL or self.privileged:
                    raise ArchiveError(f"failed to Lchown {quote(self.shown(path))} for UID {info.uid}, "
                                       f"GID {info.gid}: {os.strerror(err.errno).lower()}")  # fmt: skip
        for name, value in info.xattrs.items():
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as err:
                if err.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise _os_error("lsetxattr", self.shown(path), err)

    def stamp(self, target: str | int, info: TarEntry, path: str, *, chmod: bool) -> None:
        """Mode (after chown, which clears set-id bits) and times (atime never before mtime, as moby)."""
        mtime = _time_ns(info, "mtime")
        atime = max(_time_ns(info, "atime"), mtime) if "atime" in info.pax_headers else mtime
        try:
            if chmod:
                os.chmod(target, info.mode & 0o7777)
            os.utime(target, ns=(atime, mtime), follow_symlinks=isinstance(target, int))
        except OSError as err:
            raise _os_error("chtimes", self.shown(path), err)


def untar(
    src: BinaryIO,
    dest: Path,
    *,
    whiteouts: str = "keep",
    size_limit: int | None = None,
    observe: Observe | None = None,
) -> int:
    """Extract a tar stream (identity, gzip, bzip2 or xz) into `dest`; return the bytes of file data written.

    `whiteouts`: "keep", "apply" or "overlay" (see the module docstring). `size_limit` caps the file data
    written (a tar bomb raises ArchiveError). Every unsafe or malformed input raises ArchiveError.
    `observe(host_path, header)` is called before each entry is written (whiteouts that delete
    excepted); for a regular file, the FileObserver it returns, if any, sees the content as it is
    written (moby's tarsum reads the stream the same way while chrootarchive.Untar extracts it).
    """
    dest = Path(dest)
    try:
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as err:
        raise _os_error("mkdir", str(dest), err)
    unpacker = _Unpacker(dest, whiteouts, size_limit, observe)
    with decompress_stream(src) as stream:
        return unpacker.run(stream)


def apply_layer(src: BinaryIO, dest: Path, *, size_limit: int | None = None) -> int:
    """Apply a layer diff onto `dest`; whiteouts delete what they name (moby pkg/archive/diff.go)."""
    return untar(src, dest, whiteouts="apply", size_limit=size_limit)
