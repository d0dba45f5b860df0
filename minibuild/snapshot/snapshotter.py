"""What a snapshotter does for a build step (containerd's snapshots.Snapshotter; moby's graphdriver.Driver).

`prepare(key, parent_chain)` gives a writable root filesystem on top of a stack of layers: a
`Snapshot` whose `rootfs` the runtime uses as root after mounting `mounts` on it (an overlay, or
nothing when the tree is a plain directory). `diff(snapshot, out)` writes the layer tar of what the
step changed; `remove(snapshot)` throws the snapshot away. `mounted(snapshot)` gives the daemon a view
of the tree (COPY, ADD) without leaving a mount behind.

On disk, under the snapshotter's root:

    layers/ or chains/   what the layers unpack to, once per chain ID (shared by every step on it)
    snapshots/<key>/     one step's writable tree
    tmp/                 staging, and removed snapshots being deleted: everything appears and
                         disappears by rename, so a crash leaves whole entries or leftovers in tmp/,
                         which the next start removes
"""

import logging
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minibuild.archive.changes import Change, export_changes
from minibuild.ioutils import temp_name
from minibuild.layer import Layer
from minibuild.runtime import Mount

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
log = logging.getLogger("minibuild.snapshot")
_reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-reaper")  # joined at exit


class SnapshotError(Exception):
    """A snapshot cannot be prepared, read or removed."""


@dataclass(frozen=True)
class Snapshot:
    """A step's writable tree.

    `rootfs` is what the runtime pivots into, after mounting `mounts` on it. The step's changes end
    up in `upper` (the overlay upper directory, or the tree itself) and are computed against
    `lower_dirs` (the unpacked layers, top first, or the parent's tree).
    """

    key: str
    path: Path
    rootfs: Path
    mounts: tuple[Mount, ...]
    upper: Path
    lower_dirs: tuple[Path, ...]


class Snapshotter(ABC):
    """The parts both snapshotters share: layout, keys, staging, diff export, removal."""

    name = ""
    graph_driver = ""  # the storage driver dockerd names for the same layout (/info Driver, inspect)

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.snapshots = self.root / "snapshots"
        for directory in (self.root, self.tmp, self.snapshots):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # a crash's half-made entries
            remove_tree(leftover)
        self.host_root = None if os.geteuid() == 0 else (os.getuid(), os.getgid())

    @abstractmethod
    def prepare(self, key: str, parent_chain: Sequence[Layer]) -> Snapshot:
        """A new writable snapshot `key` on top of `parent_chain` (bottom first; empty for scratch)."""

    @abstractmethod
    def changes(self, snapshot: Snapshot) -> list[Change]:
        """What the step changed, sorted by path."""

    @abstractmethod
    def mounted(self, snapshot: Snapshot) -> AbstractContextManager[Path]:
        """The snapshot's tree as the host can reach it, while the context lasts."""

    def diff(self, snapshot: Snapshot, out: BinaryIO, *, source_date_epoch: int | None = None) -> None:
        """Write the layer tar of the step's changes to `out`."""
        export_changes(
            snapshot.upper,
            self.changes(snapshot),
            out,
            source_date_epoch=source_date_epoch,
            host_root=self.host_root,
        )

    def remove(self, snapshot: Snapshot) -> None:
        """Throw the snapshot away: out of snapshots/ at once (a rename into tmp/), its files deleted
        by a helper thread, off the build's path (freeing a big tree waits on the filesystem's journal
        when the disk is busy). What a stopped daemon did not delete, the next start finds in tmp/."""
        doomed = temp_name(self.tmp, "rm-")
        try:
            os.rename(snapshot.path, doomed)
        except FileNotFoundError:
            return
        _reaper.submit(remove_tree, doomed).add_done_callback(_report)

    def _new_snapshot_dir(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise SnapshotError(f"invalid snapshot key: {key!r}")
        path = self.snapshots / key
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise SnapshotError(f"snapshot {key} already exists")
        return path

    @contextmanager
    def _staged(self, final: Path) -> Iterator[Path | None]:
        """A fresh staging directory that becomes `final` by rename; None if `final` exists already.

        Two builds unpacking the same layer at once both do the work; the second rename loses and its
        copy is dropped. A failure leaves nothing behind.
        """
        if final.exists():
            yield None
            return
        staging = temp_name(self.tmp, final.name + "-")
        try:
            yield staging
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists():
                    raise
        finally:
            remove_tree(staging)


def remove_tree(path: Path) -> None:
    """rm -rf. Unprivileged, first open up directories we own but may not search (overlay's work/work)."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        with suppress(FileNotFoundError):
            os.unlink(path)
        return
    if os.geteuid() != 0:
        with suppress(OSError):
            os.chmod(path, 0o700)  # the top itself may be unsearchable (overlay's work/work)
        for dirpath, dirnames, _files in os.walk(path):  # top-down: opened before walked into
            for name in [".", *dirnames]:
                with suppress(OSError):
                    full = os.path.join(dirpath, name)
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
    shutil.rmtree(path, onerror=_gone_is_fine)


def _report(done: Future[None]) -> None:
    if done.exception() is not None:  # left in tmp/ for the next start to remove
        log.warning("removing a snapshot failed: %s", done.exception())


def _gone_is_fine(function: object, path: str, exc_info: tuple) -> None:
    """rmtree's error handler: what someone else deleted meanwhile (a sweep, the reaper) is no error."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
