"""Snapshotters: a writable root filesystem for each build step, and its diff as a layer tar
(moby daemon/graphdriver overlay2 and vfs, as containerd's snapshotters present them).

`select_snapshotter(root)` gives the overlay snapshotter where this process can mount overlayfs
(probed once, with a real mount), else the naive one. Both write identical layer tars for the same
change.
"""

import threading
from pathlib import Path

from minibuild.runtime import ContainerError, Mount, Runtime, default_runtime
from minibuild.snapshot.naive import NaiveSnapshotter
from minibuild.snapshot.overlay import OverlaySnapshotter, overlay_options
from minibuild.snapshot.snapshotter import Snapshot, SnapshotError, Snapshotter, remove_tree

__all__ = [
    "NaiveSnapshotter",
    "OverlaySnapshotter",
    "Snapshot",
    "SnapshotError",
    "Snapshotter",
    "overlay_supported",
    "remove_tree",
    "select_snapshotter",
]

_probed: dict[Path, bool] = {}
_probe_lock = threading.Lock()


def overlay_supported(directory: Path, runtime: Runtime | None = None) -> bool:
    """Can we mount an overlay (with our options) of directories under `directory`? Probed once."""
    directory = Path(directory).resolve()
    with _probe_lock:
        if directory not in _probed:
            _probed[directory] = _probe(directory, runtime or default_runtime())
        return _probed[directory]


def _probe(directory: Path, runtime: Runtime) -> bool:
    base = directory / "overlay-probe"
    remove_tree(base)
    try:
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir(parents=True)
        (base / "lower" / "probe").write_text("ok")
        options = (f"lowerdir={base / 'lower'}", f"upperdir={base / 'upper'}", f"workdir={base / 'work'}")
        mount = Mount(type="overlay", source="overlay", options=(*options, *overlay_options()))
        with runtime.mounted(base / "merged", [mount]) as view:
            return (view / "probe").read_text() == "ok"
    except (ContainerError, OSError):
        return False
    finally:
        remove_tree(base)


def select_snapshotter(root: Path, runtime: Runtime | None = None) -> Snapshotter:
    """Overlay under root/overlay where the kernel allows it, else naive under root/naive."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if overlay_supported(root, runtime):
        return OverlaySnapshotter(root / "overlay", runtime)
    return NaiveSnapshotter(root / "naive")
