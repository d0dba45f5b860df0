"""The overlay snapshotter (moby daemon/graphdriver/overlay2: overlay.go and its l/ short links).

Each layer is unpacked once, into its own directory, with overlayfs whiteouts (a character device 0:0
for a deleted file, an `opaque` xattr for a directory whose lower contents are gone). A step's root is
an overlay of those layers under a fresh upper and work directory.

Where the overlay is mounted: inside the step's own mount namespace, by the runtime (the snapshot
hands it `mounts`, as a containerd snapshotter does). The RUN process sees the merged tree; the host
never has the mount, only the upper directory, which is all a diff needs. A step killed at any moment
leaves no mount behind: its namespace, and the overlay with it, dies with its last process. For COPY
and friends, `mounted()` gives the host a view through a process holding the mount
(Runtime.mounted). As non-root the mount happens in a user namespace, with `userxattr`.

Options: `index=off`, `metacopy=off` and `redirect_dir=nofollow`, so that every change is a full
copy in the upper directory (moby falls back to a naive diff when redirect_dir or metacopy are on).
Lower directories are named through short links (l/<16 hex>) to keep the mount options within a page.
Whether overlayfs works here at all is probed with a real mount (`overlay_supported`, overlay2's
check.go).
"""

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from minibuild.archive import overlay_opaque_xattr, untar
from minibuild.archive.changes import Change, overlay_changes
from minibuild.ioutils import temp_name
from minibuild.layer import Layer
from minibuild.runtime import Mount, Runtime, default_runtime
from minibuild.snapshot.snapshotter import Snapshot, SnapshotError, Snapshotter, remove_tree

MAX_OPTIONS = 4095  # the kernel copies mount data as one page
_SHORT = 16


def overlay_options() -> tuple[str, ...]:
    """The fixed options; `userxattr` when whiteouts are user.* xattrs (unprivileged)."""
    options = ("index=off", "metacopy=off", "redirect_dir=nofollow")
    return (*options, "userxattr") if overlay_opaque_xattr().startswith("user.") else options


class OverlaySnapshotter(Snapshotter):
    name = "overlay"

    def __init__(self, root: Path, runtime: Runtime | None = None):
        super().__init__(root)
        if any(c in str(self.root) for c in ":,"):
            raise SnapshotError(f"overlay root {self.root} must not contain ':' or ','")
        self.layers = self.root / "layers"
        self.links = self.root / "l"
        for directory in (self.layers, self.links):
            directory.mkdir(mode=0o700, exist_ok=True)
        self.scratch = self.root / "scratch"
        self.scratch.mkdir(mode=0o755, exist_ok=True)
        self.runtime = runtime or default_runtime()

    def layer_dir(self, layer: Layer) -> Path:
        """The layer unpacked with overlay whiteouts, made on first use."""
        name = layer.chain_id.removeprefix("sha256:")
        final = self.layers / name
        with self._staged(final) as staging:
            if staging is not None:
                with layer.open() as diff:
                    untar(diff, staging, whiteouts="overlay")
        return final

    def _short_link(self, layer_dir: Path) -> Path:
        link = self.links / layer_dir.name[:_SHORT]
        if not link.is_symlink():
            staging = temp_name(self.tmp, "link-")
            os.symlink(f"../layers/{layer_dir.name}", staging)
            os.rename(staging, link)
        return link

    def prepare(self, key: str, parent_chain: Sequence[Layer]) -> Snapshot:
        lowers = [self.layer_dir(layer) for layer in reversed(parent_chain)] or [self.scratch]
        path = self._new_snapshot_dir(key)
        upper, work, rootfs = path / "upper", path / "work", path / "rootfs"
        try:
            top = os.stat(lowers[0])
            for directory in (upper, work, rootfs):
                directory.mkdir(mode=0o755)
            # The merged root takes the upper root's attributes: give it the parent's, as overlay2 does.
            os.chmod(upper, top.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(upper, top.st_uid, top.st_gid)
            names = [str(self._short_link(d)) if d != self.scratch else str(d) for d in lowers]
            dirs = (f"lowerdir={':'.join(names)}", f"upperdir={upper}", f"workdir={work}")
            options = (*dirs, *overlay_options())
            if len(",".join(options)) > MAX_OPTIONS:
                raise SnapshotError(f"too many layers for one overlay mount: {len(parent_chain)}")
        except BaseException:
            remove_tree(path)
            raise
        mount = Mount(type="overlay", source="overlay", options=options)
        return Snapshot(key, path, rootfs, mounts=(mount,), upper=upper, lower_dirs=tuple(lowers))

    def changes(self, snapshot: Snapshot) -> list[Change]:
        return overlay_changes(snapshot.upper, snapshot.lower_dirs)

    def mounted(self, snapshot: Snapshot) -> AbstractContextManager[Path]:
        return self.runtime.mounted(snapshot.rootfs, snapshot.mounts)

    def remove_layer(self, chain_id: str) -> None:
        """Drop the unpacked layer of `chain_id` (its layer was deleted)."""
        name = chain_id.removeprefix("sha256:")
        remove_tree(self.links / name[:_SHORT])
        remove_tree(self.layers / name)
