"""The naive snapshotter: each step gets a full copy of its parent's tree (moby daemon/graphdriver/vfs
driver.go, diffed by walking both trees as graphdriver.NaiveDiffDriver does).

A chain's tree is made once per chain ID, from its parent's tree: copy it, apply the layer's diff
(whiteouts delete). A step then gets its own copy of the top tree. Slow and simple, and it works on
any filesystem, in any sandbox.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from minibuild.archive import apply_layer
from minibuild.archive.changes import Change, changes_dirs
from minibuild.layer import Layer
from minibuild.snapshot.copy import dir_copy
from minibuild.snapshot.snapshotter import Snapshot, Snapshotter, remove_tree


class NaiveSnapshotter(Snapshotter):
    name = "naive"
    graph_driver = "vfs"

    def __init__(self, root: Path):
        super().__init__(root)
        self.chains = self.root / "chains"
        self.chains.mkdir(mode=0o700, exist_ok=True)
        self.scratch = self.chains / "scratch"
        self.scratch.mkdir(mode=0o755, exist_ok=True)

    def tree(self, chain: Sequence[Layer]) -> Path:
        """The tree of `chain` (bottom first), made on first use."""
        if not chain:
            return self.scratch
        final = self.chains / chain[-1].chain_id.removeprefix("sha256:")
        if final.exists():
            return final
        parent = self.tree(chain[:-1])
        with self._staged(final) as staging:
            if staging is not None:
                dir_copy(parent, staging)
                with chain[-1].open() as diff:
                    apply_layer(diff, staging)
        return final

    def prepare(self, key: str, parent_chain: Sequence[Layer]) -> Snapshot:
        parent = self.tree(parent_chain)
        path = self._new_snapshot_dir(key)
        rootfs = path / "rootfs"
        try:
            dir_copy(parent, rootfs)
        except BaseException:
            remove_tree(path)
            raise
        return Snapshot(key, path, rootfs, mounts=(), upper=rootfs, lower_dirs=(parent,))

    def changes(self, snapshot: Snapshot) -> list[Change]:
        return changes_dirs(snapshot.rootfs, snapshot.lower_dirs[0])

    @contextmanager
    def mounted(self, snapshot: Snapshot) -> Iterator[Path]:
        yield snapshot.rootfs

    def remove_layer(self, chain_id: str) -> None:
        """Drop the tree made for `chain_id` (its layer was deleted)."""
        remove_tree(self.chains / chain_id.removeprefix("sha256:"))
