"""Content-addressed layer store (moby layer/layer_store.go, layer/layer.go, layer/filestore.go).

A layer is an uncompressed tar diff. Its diff ID is the sha256 of that tar; its chain ID names the
whole stack below it: chainID(1) = diffID(1), chainID(n) = sha256(chainID(n-1) + " " + diffID(n)).
Two images that share a base share its layers: a chain ID is stored once.

On disk (moby keeps the same metadata in layerdb/sha256/<chain id>/, with the tar in a graphdriver):

    <root>/sha256/<chain id hex>/layer.tar   the diff, as registered (decompressed)
                                 diff        its diff ID        size   bytes of file content
                                 parent      the parent's chain ID (absent for a base layer)
    <root>/tmp/                             staging; whatever is there at open is a crash's leftover

A layer becomes visible by renaming its complete staging directory into sha256/, so a crash leaves
either nothing or a whole layer. Reference counts live in memory, as in moby: whoever holds a layer
(an image, a build step) took a reference and releases it; a child layer holds its parent. When the
daemon starts, the image store re-takes one reference per image and `sweep_unreferenced` removes
layers that nobody claimed (a build killed between registering a layer and committing its image).
"""

import hashlib
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minibuild.archive import ArchiveError, current_limits, decompress_stream
from minibuild.archive.limits import max_body_size
from minibuild.ioutils import fsync_dir, fsync_file, temp_name
from minibuild.layer.writer import LayerWriter

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class LayerError(Exception):
    """A layer store operation that cannot be done."""


class LayerDoesNotExist(LayerError):
    def __init__(self, chain_id: str = ""):
        super().__init__("layer does not exist")  # moby's ErrLayerDoesNotExist
        self.chain_id = chain_id


def chain_id_of(diff_ids: list[str]) -> str | None:
    """The chain ID of a stack of diff IDs, bottom first (moby layer.CreateChainID); None when empty."""
    chain: str | None = None
    for diff_id in diff_ids:
        chain = diff_id if chain is None else _digest(f"{chain} {diff_id}".encode())
    return chain


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """A registered layer. `size` counts file content bytes, as moby's layer Size does."""

    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    path: Path  # directory holding layer.tar and the metadata

    @property
    def tar_path(self) -> Path:
        return self.path / "layer.tar"

    def open(self) -> BinaryIO:
        """The uncompressed diff tar, exactly as registered (its sha256 is the diff ID)."""
        return open(self.tar_path, "rb")


class LayerStore:
    """Layers by chain ID, with reference counts; safe to use from several threads."""

    chain_id_of = staticmethod(chain_id_of)  # also reachable as store.chain_id_of(diff_ids)

    def __init__(self, root: Path):
        self.root = Path(root)
        self._layers_dir = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._lock = threading.RLock()
        self._layers: dict[str, Layer] = {}
        self._refs: dict[str, int] = {}
        self._children: dict[str, int] = {}
        self._layers_dir.mkdir(parents=True, exist_ok=True)
        self._restore()

    # --- opening ---------------------------------------------------------------------------------

    def _restore(self) -> None:
        """Load committed layers; drop staging leftovers and any layer whose record is incomplete."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir()
        found: dict[str, Layer] = {}
        for entry in os.scandir(self._layers_dir):
            layer = self._read_layer(Path(entry.path)) if _HEX64.fullmatch(entry.name) else None
            if layer is None:
                self._discard(Path(entry.path))
            else:
                found[layer.chain_id] = layer
        # A layer whose parent is gone cannot be used: drop it and, in turn, its children.
        changed = True
        while changed:
            changed = False
            for chain_id, layer in list(found.items()):
                if layer.parent is not None and layer.parent not in found:
                    del found[chain_id]
                    self._discard(layer.path)
                    changed = True
        self._layers = found
        self._refs = {chain_id: 0 for chain_id in found}
        self._children = {chain_id: 0 for chain_id in found}
        for layer in found.values():
            if layer.parent is not None:
                self._children[layer.parent] += 1

    def _read_layer(self, path: Path) -> Layer | None:
        try:
            diff_id = (path / "diff").read_text().strip()
            size = int((path / "size").read_text())
            parent_file = path / "parent"
            parent = parent_file.read_text().strip() if parent_file.exists() else None
            if not (path / "layer.tar").is_file():
                return None
        except (OSError, ValueError):
            return None
        chain_id = "sha256:" + path.name
        expected = diff_id if parent is None else _digest(f"{parent} {diff_id}".encode())
        if chain_id != expected:
            return None  # the directory name does not match its content: not a record we wrote
        return Layer(chain_id, diff_id, parent, size, path)

    def _discard(self, path: Path) -> None:
        """Move a directory out of sight atomically, then delete it."""
        doomed = temp_name(self._tmp, "rm-")
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # --- registering -----------------------------------------------------------------------------

    def register(self, tar: BinaryIO | Path | str, parent: str | None = None) -> Layer:
        """Store a diff tar (decompressed if needed) on top of `parent`; return it, holding one reference.

        The caller owns that reference: `release` it when done, or keep it as the one an image holds.
        A chain ID already stored is not stored twice: the existing layer is returned (and referenced).
        Raises ArchiveError for a malformed tar or one over the archive limits in force, and
        LayerDoesNotExist for an unknown parent.
        """
        if parent is not None:
            self.acquire(parent)  # keeps the parent alive while we stream
        try:
            if isinstance(tar, str | Path):
                with open(tar, "rb") as src:
                    return self._register(src, parent)
            return self._register(tar, parent)
        finally:
            if parent is not None:
                self.release(parent)

    def _register(self, src: BinaryIO, parent: str | None) -> Layer:
        # A diff from outside (imported, loaded, pulled) is held to the archive limits in force, as untar
        # holds it when it is unpacked; a decompression bomb is stopped before it fills the disk.
        limits = current_limits()
        cap = max_body_size(limits)
        with self.writer(parent) as writer:
            stream = decompress_stream(src)
            while data := stream.read(_CHUNK):  # trailing bytes after the end marker are part of the diff
                if cap is not None and writer.written + len(data) > cap:
                    raise ArchiveError(f"archive exceeds {cap} bytes, more than any within the limits")
                writer.write(data)
            return writer.commit(limits)

    def writer(self, parent: str | None = None) -> LayerWriter:
        """A LayerWriter for a diff on top of `parent` (the caller holds a reference to the parent).

        For diffs this daemon produces (a build step's): they go to their final place in one pass.
        """
        if parent is not None:
            self.get(parent)
        staging = temp_name(self._tmp, "reg-")
        staging.mkdir()
        return LayerWriter(staging, lambda diff_id, size: self._commit(staging, diff_id, size, parent))

    def _commit(self, staging: Path, diff_id: str, size: int, parent: str | None) -> Layer:
        """Make a staged layer durable and visible, or take a reference on the same one stored already."""
        chain_id = diff_id if parent is None else _digest(f"{parent} {diff_id}".encode())
        with self._lock:
            existing = self._layers.get(chain_id)
            if existing is not None:
                self._refs[chain_id] += 1
                shutil.rmtree(staging, ignore_errors=True)
                return existing
        fsync_file(staging / "layer.tar")
        for name, text in (("diff", diff_id), ("size", str(size)), ("parent", parent)):
            if text is not None:
                (staging / name).write_text(text)
                fsync_file(staging / name)
        fsync_dir(staging)
        with self._lock:
            existing = self._layers.get(chain_id)
            if existing is not None:  # registered by another thread meanwhile
                self._refs[chain_id] += 1
                shutil.rmtree(staging, ignore_errors=True)
                return existing
            if parent is not None and parent not in self._layers:
                raise LayerDoesNotExist(parent)
            final = self._layers_dir / chain_id.removeprefix("sha256:")
            os.rename(staging, final)
            fsync_dir(self._layers_dir)
            layer = Layer(chain_id, diff_id, parent, size, final)
            self._layers[chain_id] = layer
            self._refs[chain_id] = 1
            self._children[chain_id] = 0
            if parent is not None:
                self._children[parent] += 1
            return layer

    # --- looking up and referencing --------------------------------------------------------------

    def get(self, chain_id: str) -> Layer:
        """The layer with this chain ID (no reference taken)."""
        with self._lock:
            layer = self._layers.get(chain_id)
        if layer is None:
            raise LayerDoesNotExist(chain_id)
        return layer

    def __contains__(self, chain_id: object) -> bool:
        return chain_id in self._layers

    def layers(self) -> list[Layer]:
        with self._lock:
            return sorted(self._layers.values(), key=lambda layer: layer.chain_id)

    def chain(self, chain_id: str) -> list[Layer]:
        """The layer and all below it, bottom first."""
        stack = []
        current: str | None = chain_id
        while current is not None:
            layer = self.get(current)
            stack.append(layer)
            current = layer.parent
        return stack[::-1]

    def acquire(self, chain_id: str) -> Layer:
        """Take a reference (moby's ls.Get): the layer stays until it is released."""
        with self._lock:
            layer = self.get(chain_id)
            self._refs[chain_id] += 1
            return layer

    def references(self, chain_id: str) -> int:
        with self._lock:
            self.get(chain_id)
            return self._refs[chain_id]

    def release(self, chain_id: str) -> list[Layer]:
        """Drop a reference; delete the layer (and parents nobody holds) once unused. Returns the deleted."""
        with self._lock:
            self.get(chain_id)
            if self._refs[chain_id] == 0:
                raise LayerError(f"layer not retained: {chain_id}")
            self._refs[chain_id] -= 1
            return self._delete_unused(chain_id)

    def _delete_unused(self, chain_id: str | None) -> list[Layer]:
        deleted = []
        while chain_id is not None and self._refs[chain_id] == 0 and self._children[chain_id] == 0:
            layer = self._layers.pop(chain_id)
            del self._refs[chain_id], self._children[chain_id]
            self._discard(layer.path)
            deleted.append(layer)
            chain_id = layer.parent
            if chain_id is not None:
                self._children[chain_id] -= 1
        return deleted

    def sweep_unreferenced(self) -> list[Layer]:
        """Delete every layer no one holds (call once, after the image store took its references)."""
        with self._lock:
            deleted = []
            for chain_id in [c for c in self._layers if self._children[c] == 0]:
                if chain_id in self._layers:
                    deleted += self._delete_unused(chain_id)
            return deleted
