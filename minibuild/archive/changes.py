"""Layer diffs: what changed between two trees, and the tar recording it (moby pkg/archive/changes.go,
changes_linux.go, and archive_linux.go's overlay whiteout conversion).

Two ways to find the changes, one result:

* `changes_dirs(new, old)` walks both trees, as moby's naive differ (vfs) does;
* `overlay_changes(upper, lower_dirs)` walks only an overlay upper directory, where a character device
  0:0 is a deletion and an `opaque` xattr a directory whose lower contents are gone, and looks each
  entry up in the lower layers.

Both compare what moby's naive differ compares (type and mode, owner, device number, and for
non-directories size and mtime, plus the security.capability xattr), report every directory above a
change (it must be in the layer, "to properly save and restore filesystem permissions"), and treat a
directory whose every old entry is gone as opaque. So the same step gives the same changes on both
snapshotters — unlike moby, whose overlay2 tars the raw upper directory (copied-up but unchanged
entries included).

`export_changes` writes the layer tar: entries sorted by path, `.wh.NAME` for a deletion,
`.wh..wh..opq` after an opaque directory (as overlay2 writes them), hard links as tar links, owner
names empty (moby no longer looks them up), times in whole seconds, clamped to SOURCE_DATE_EPOCH
when given (as BuildKit does).
"""

import enum
import os
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from minibuild.archive.archive import WHITEOUT_OPAQUE_DIR, WHITEOUT_PREFIX
from minibuild.archive.errors import ArchiveError

CAPABILITY_XATTR = "security.capability"
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_BLOCK = 512
_CHUNK = 1 << 20


class ChangeKind(enum.IntEnum):
    """moby's ChangeType, printed as `docker diff` prints it."""

    MODIFY = 0
    ADD = 1
    DELETE = 2

    def __str__(self) -> str:
        return "CAD"[self]


@dataclass(frozen=True)
class Change:
    """One changed path (`/etc/passwd`); `opaque` marks a directory whose old entries are all gone."""

    path: str
    kind: ChangeKind
    opaque: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


# --- comparing ---------------------------------------------------------------------------------


def _scan(directory: str) -> dict[str, os.stat_result]:
    with os.scandir(directory) as entries:
        return {entry.name: entry.stat(follow_symlinks=False) for entry in entries}


def _capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _same_fs_time(a: int, b: int) -> bool:
    """moby's sameFsTimeSpec: tar keeps whole seconds, so a zero nanosecond part matches any."""
    (a_sec, a_ns), (b_sec, b_ns) = divmod(a, 1_000_000_000), divmod(b, 1_000_000_000)
    return a_sec == b_sec and (a_ns == b_ns or a_ns == 0 or b_ns == 0)


def _different(old: os.stat_result, new: os.stat_result, old_path: str, new_path: str) -> bool:
    """moby's statDifferent plus the capability check; a directory's size and mtime do not count."""
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (
        new.st_mode,
        new.st_uid,
        new.st_gid,
        new.st_rdev,
    ):
        return True
    if not stat.S_ISDIR(old.st_mode) and (
        old.st_size != new.st_size or not _same_fs_time(old.st_mtime_ns, new.st_mtime_ns)
    ):
        return True
    return _capability(old_path) != _capability(new_path)


class _Changes:
    """Changes keyed by path, so a directory found opaque later can be marked."""

    def __init__(self) -> None:
        self.by_path: dict[str, Change] = {}

    def add(self, path: str, kind: ChangeKind) -> None:
        self.by_path[path] = Change(path, kind)

    def mark_opaque(self, path: str) -> None:
        self.by_path[path] = replace(self.by_path.get(path, Change(path, ChangeKind.MODIFY)), opaque=True)

    def result(self) -> list[Change]:
        """Sorted by path, with every directory above a change as a modification."""
        for path in list(self.by_path):
            parent = os.path.dirname(path)
            while parent != "/" and parent not in self.by_path:
                self.by_path[parent] = Change(parent, ChangeKind.MODIFY)
                parent = os.path.dirname(parent)
        return sorted(self.by_path.values(), key=lambda change: change.path)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}"


def _gone(old_names: set[str], kept: set[str], rel: str, deleted: Iterable[str], changes: _Changes) -> None:
    """Record deletions in directory `rel`, or mark it opaque when none of its old entries is kept."""
    if old_names and not kept and rel:
        changes.mark_opaque(rel)
        return
    for name in sorted(deleted):
        changes.add(_join(rel, name), ChangeKind.DELETE)


def changes_dirs(new: Path, old: Path) -> list[Change]:
    """What changed from tree `old` to tree `new` (moby's ChangesDirs), walking both."""
    changes = _Changes()
    _compare_dirs(str(new), str(old), "", old_is_dir=True, changes=changes)
    return changes.result()


def _compare_dirs(new: str, old: str, rel: str, *, old_is_dir: bool, changes: _Changes) -> None:
    new_entries = _scan(new + rel)
    old_entries = _scan(old + rel) if old_is_dir else {}
    _gone(
        set(old_entries),
        set(old_entries) & set(new_entries),
        rel,
        set(old_entries) - set(new_entries),
        changes,
    )
    for name in sorted(new_entries):
        path, now = _join(rel, name), new_entries[name]
        before = old_entries.get(name)
        if before is None:
            changes.add(path, ChangeKind.ADD)
        elif _different(before, now, old + path, new + path):
            changes.add(path, ChangeKind.MODIFY)
        if stat.S_ISDIR(now.st_mode):
            below = before is not None and stat.S_ISDIR(before.st_mode)
            _compare_dirs(new, old, path, old_is_dir=below, changes=changes)


def is_whiteout(st: os.stat_result) -> bool:
    """An overlay whiteout: a character device 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    """An overlay opaque directory (trusted.* as root, user.* with userxattr)."""
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


class _Lowers:
    """The merged view of overlay lower layers (top first), for looking old entries up."""

    def __init__(self, lower_dirs: Sequence[Path]):
        self.layers = [str(d) for d in lower_dirs]
        self._dir_layers: dict[str, list[str]] = {"": self.layers}

    def dir_layers(self, rel: str) -> list[str]:
        """The layers whose `rel` makes up that directory in the merged view; [] if it is none there."""
        if rel not in self._dir_layers:
            parent, name = rel.rsplit("/", 1)
            kept = []
            for layer in self.dir_layers(parent):
                try:
                    st = os.lstat(layer + rel)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break  # a whiteout or a file hides this name in every layer below
                kept.append(layer)
                if is_opaque(layer + rel):
                    break
            self._dir_layers[rel] = kept
        return self._dir_layers[rel]

    def entry(self, rel: str) -> tuple[os.stat_result, str] | None:
        """(stat, host path) of `rel` in the merged view, or None."""
        parent, name = rel.rsplit("/", 1)
        for layer in self.dir_layers(parent):
            try:
                st = os.lstat(layer + rel)
            except FileNotFoundError:
                continue
            return None if is_whiteout(st) else (st, layer + rel)
        return None

    def names(self, rel: str) -> set[str]:
        """The entries of directory `rel` in the merged view."""
        seen: set[str] = set()
        found: set[str] = set()
        for layer in self.dir_layers(rel):
            for name, st in _scan(layer + rel).items():
                if name not in seen:
                    seen.add(name)
                    if not is_whiteout(st):
                        found.add(name)
        return found


def overlay_changes(upper: Path, lower_dirs: Sequence[Path]) -> list[Change]:
    """What an overlay mount changed, from its upper directory and its lower layers (top first)."""
    changes = _Changes()
    _walk_upper(str(upper), _Lowers(lower_dirs), "", old_is_dir=True, hidden=False, changes=changes)
    return changes.result()


def _walk_upper(
    upper: str, lowers: _Lowers, rel: str, *, old_is_dir: bool, hidden: bool, changes: _Changes
) -> None:
    """`hidden`: an opaque directory above hides the lower layers here too."""
    entries = _scan(upper + rel)
    whiteouts = {name for name, st in entries.items() if is_whiteout(st)}
    present = {name: st for name, st in entries.items() if name not in whiteouts}
    opaque = hidden or (rel != "" and is_opaque(upper + rel))
    if old_is_dir and (opaque or whiteouts):  # else every old entry is still there
        old_names = lowers.names(rel)
        if opaque:
            kept, deleted = old_names & set(present), old_names - set(present)
        else:
            kept, deleted = old_names - whiteouts, old_names & whiteouts
        _gone(old_names, kept, rel, deleted, changes)
    for name in sorted(present):
        path, now = _join(rel, name), present[name]
        before = lowers.entry(path) if old_is_dir else None
        if before is None:
            changes.add(path, ChangeKind.ADD)
        elif _different(before[0], now, before[1], upper + path):
            changes.add(path, ChangeKind.MODIFY)
        if stat.S_ISDIR(now.st_mode):
            below = before is not None and stat.S_ISDIR(before[0].st_mode)
            _walk_upper(upper, lowers, path, old_is_dir=below, hidden=opaque, changes=changes)


# --- exporting ---------------------------------------------------------------------------------


def _clamp(mtime: int, source_date_epoch: int | None) -> int:
    return mtime if source_date_epoch is None else min(mtime, source_date_epoch)


class _TarWriter:
    """Headers from tarfile, framing as Go's tar.Writer: no padding to a 10 KiB record at the end."""

    def __init__(self, out: BinaryIO):
        self.out = out

    def add(self, info: tarfile.TarInfo, content: BinaryIO | None = None) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if content is None or info.size == 0:
            return
        left = info.size
        while left:
            chunk = content.read(min(left, _CHUNK))
            if not chunk:
                raise ArchiveError(f"{info.name}: file changed while it was being archived")
            self.out.write(chunk)
            left -= len(chunk)
        self.out.write(bytes(-info.size % _BLOCK))

    def close(self) -> None:
        self.out.write(bytes(2 * _BLOCK))


def _marker(name: str, *, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.REGTYPE, mode, uid, gid, mtime
    info.uname = info.gname = ""
    return info


def _header(
    name: str, path: str, st: os.stat_result, owner: tuple[int, int], mtime: int
) -> tarfile.TarInfo | None:
    """The tar header of a file, as moby's addTarFile writes it; None for a socket (tar has none)."""
    info = tarfile.TarInfo(name)
    info.mode, (info.uid, info.gid), info.mtime = stat.S_IMODE(st.st_mode), owner, mtime
    info.uname = info.gname = ""
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFREG:
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
    elif kind == stat.S_IFLNK:
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif kind == stat.S_IFIFO:
        info.type = tarfile.FIFOTYPE
    else:
        return None
    capability = _capability(path)
    if capability is not None:
        info.pax_headers = {f"SCHILY.xattr.{CAPABILITY_XATTR}": capability.decode("utf-8", "surrogateescape")}
    return info


def export_changes(
    root: Path,
    changes: Iterable[Change],
    out: BinaryIO,
    *,
    source_date_epoch: int | None = None,
    host_root: tuple[int, int] | None = None,
) -> None:
    """Write the layer tar of `changes`, reading added and modified files from `root` (moby's ExportChanges).

    `host_root` is the host uid and gid that are root in the container (a rootless user namespace maps
    only them): files they own are written as 0:0, as moby's idMap translates them.
    """

    def owner(st: os.stat_result) -> tuple[int, int]:
        if host_root is None:
            return st.st_uid, st.st_gid
        return (0 if st.st_uid == host_root[0] else st.st_uid), (
            0 if st.st_gid == host_root[1] else st.st_gid
        )

    writer = _TarWriter(out)
    links: dict[tuple[int, int], str] = {}
    base = str(root)
    for change in sorted(changes, key=lambda c: c.path):
        parent, name = change.path.rsplit("/", 1)
        if change.kind == ChangeKind.DELETE:
            # A whiteout's time is its directory's: the deletion changed that directory then.
            directory = os.lstat(base + parent if parent else base)
            mtime = _clamp(int(directory.st_mtime), source_date_epoch)
            writer.add(_marker(f"{parent}/{WHITEOUT_PREFIX}{name}"[1:], mode=0, uid=0, gid=0, mtime=mtime))
            continue
        path = base + change.path
        st = os.lstat(path)
        mtime = _clamp(int(st.st_mtime), source_date_epoch)
        info = _header(change.path[1:], path, st, owner(st), mtime)
        if info is None:
            continue
        if info.type == tarfile.REGTYPE and st.st_nlink > 1:
            first = links.setdefault((st.st_dev, st.st_ino), info.name)
            if first != info.name:
                info.type, info.linkname, info.size = tarfile.LNKTYPE, first, 0
        if info.type == tarfile.REGTYPE and info.size:
            with open(path, "rb") as content:
                writer.add(info, content)
        else:
            writer.add(info)
        if change.opaque:
            # overlay2's ConvertWrite: a regular file inheriting the directory's mode and owner.
            writer.add(
                _marker(
                    f"{change.path[1:]}/{WHITEOUT_OPAQUE_DIR}",
                    mode=stat.S_IMODE(st.st_mode),
                    uid=info.uid,
                    gid=info.gid,
                    mtime=mtime,
                )
            )
    writer.close()
