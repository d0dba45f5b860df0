"""Copy a whole tree, every attribute kept (moby daemon/graphdriver/copy/copy.go DirCopy, as vfs uses it).

Hard links stay hard links, symlinks are copied as links, devices and fifos are recreated, owners
(as root), modes, extended attributes and nanosecond times are kept; directory times are set after
their contents are written. File data is copied by the kernel (copy_file_range, which reflinks where
the filesystem can).
"""

import errno
import os
import stat
from pathlib import Path

from minibuild.snapshot.snapshotter import SnapshotError

_NO_COPY_FILE_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def copy_file_data(fd_in: int, fd_out: int) -> None:
    """Copy the rest of `fd_in` to `fd_out` inside the kernel: copy_file_range (a reflink where the
    filesystem can), else sendfile (across filesystems, to or from an overlay), else read and write."""
    for kernel_copy in (os.copy_file_range, lambda i, o, n: os.sendfile(o, i, None, n)):
        try:
            while kernel_copy(fd_in, fd_out, 1 << 30):
                pass
            return
        except OSError as err:
            if err.errno not in _NO_COPY_FILE_RANGE:
                raise
    while data := os.read(fd_in, 1 << 20):
        view = memoryview(data)
        while view:
            view = view[os.write(fd_out, view) :]


def _copy_data(src: str, dst: str, mode: int) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o777)
        try:
            copy_file_data(fd_in, fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # trusted.* as non-root, or a filesystem without that namespace: moby skips them too


def dir_copy(src: Path, dst: Path) -> None:
    """Copy the tree `src` to the new directory `dst`."""
    is_root = os.geteuid() == 0
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []

    def copy(source: str, target: str, st: os.stat_result) -> None:
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            os.mkdir(target, 0o700)
            with os.scandir(source) as entries:
                for entry in entries:
                    copy(entry.path, os.path.join(target, entry.name), entry.stat(follow_symlinks=False))
            dirs.append((target, st))
        elif kind == stat.S_IFREG:
            if st.st_nlink > 1:
                first = links.setdefault((st.st_dev, st.st_ino), target)
                if first != target:
                    os.link(first, target)
                    return
            _copy_data(source, target, st.st_mode)
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(source), target)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            if kind != stat.S_IFIFO and not is_root:
                return  # mknod of a device needs root; moby's rootless copy skips them as well
            os.mknod(target, st.st_mode, st.st_rdev)
        else:
            return  # sockets are not copied
        _copy_metadata(source, target, st, is_root=is_root, is_dir=kind == stat.S_IFDIR)

    try:
        copy(str(src), str(dst), os.lstat(src))
        for target, st in dirs:  # after their contents: writing into a directory changes its mtime
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    except OSError as err:
        raise SnapshotError(f"copy {src} to {dst}: {err}") from err


def _copy_metadata(source: str, target: str, st: os.stat_result, *, is_root: bool, is_dir: bool) -> None:
    if is_root:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    _copy_xattrs(source, target)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
    if not is_dir:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
