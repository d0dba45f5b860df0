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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from minibuild.archive import overlay_opaque_xattr, untar
from minibuild.archive.changes import Change, overlay_changes
from minibuild.ioutils import temp_name
from minibuild.layer import Layer
from minibuild.runtime import ContainerError, Mount, Runtime, default_runtime
from minibuild.snapshot.snapshotter import Snapshot, SnapshotError, Snapshotter, remove_tree

MAX_OPTIONS = 4095  # the kernel copies mount data as one page
_SHORT = 16
_volatile_probed: dict[Path, bool] = {}
_volatile_lock = threading.Lock()


def overlay_options() -> tuple[str, ...]:
    """The fixed options; `userxattr` when whiteouts are user.* xattrs (unprivileged)."""
    options = ("index=off", "metacopy=off", "redirect_dir=nofollow")
    return (*options, "userxattr") if overlay_opaque_xattr().startswith("user.") else options


def volatile_mounts(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """The overlay mounts with `volatile`: unmounting then skips syncing the whole upper filesystem.

    Without it the kernel writes back every dirty page of the filesystem holding the snapshot (the
    spooled context, its unpacked copy, the files just copied) when the view goes away: about a second
    for a 200 MB COPY here. A snapshot is scratch space: its durable form is the layer tar, which the
    layer store fsyncs, and the daemon never reuses a snapshot after a crash (leftovers are removed at
    start). Only the daemon's own view (`mounted`) uses it; RUN's mounts are the runtime's to make.
    """
    return tuple(replace(m, options=(*m.options, "volatile")) if m.type == "overlay" else m for m in mounts)


def overlay_volatile_supported(directory: Path, runtime: Runtime) -> bool:
    """Whether overlayfs takes `volatile` here (Linux 5.10+). Probed once per directory."""
    directory = Path(directory).resolve()
    with _volatile_lock:
        if directory not in _volatile_probed:
            _volatile_probed[directory] = _probe_volatile(directory, runtime)
        return _volatile_probed[directory]


def _probe_volatile(directory: Path, runtime: Runtime) -> bool:
    base = temp_name(directory, "volatile-probe-")
    try:
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir(parents=True)
        dirs = (f"lowerdir={base / 'lower'}", f"upperdir={base / 'upper'}", f"workdir={base / 'work'}")
        mount = Mount(type="overlay", source="overlay", options=(*dirs, *overlay_options()))
        with runtime.mounted(base / "merged", volatile_mounts([mount])):
            return True
    except (ContainerError, OSError):
        return False
    finally:
        remove_tree(base)


class OverlaySnapshotter(Snapshotter):
    name = "overlay"
    graph_driver = "overlay2"

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
        self.volatile: bool | None = None  # probed on the first mounted()

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

    @contextmanager
    def mounted(self, snapshot: Snapshot) -> Iterator[Path]:
        """The merged tree, mounted `volatile` where the kernel can (see volatile_mounts)."""
        if self.volatile is None:
            self.volatile = overlay_volatile_supported(self.tmp, self.runtime)  # a crash leaves it in tmp/
        if not self.volatile:
            with self.runtime.mounted(snapshot.rootfs, snapshot.mounts) as path:
                yield path
            return
        try:
            with self.runtime.mounted(snapshot.rootfs, volatile_mounts(snapshot.mounts)) as path:
                yield path
        finally:
            # The mount is gone and the machine did not crash meanwhile: clear the marker that would
            # refuse the next mount of this snapshot (overlayfs leaves that decision to us).
            remove_tree(Path(snapshot.path) / "work" / "work")

    def remove_layer(self, chain_id: str) -> None:
        """Drop the unpacked layer of `chain_id` (its layer was deleted)."""
        name = chain_id.removeprefix("sha256:")
        remove_tree(self.links / name[:_SHORT])
        remove_tree(self.layers / name)
