"""The image store: configs by ID, parent links, short-ID search (moby image/store.go, image/fs.go).

On disk, as moby lays out image/<driver>/imagedb:

    <root>/content/sha256/<hex>             the config bytes; their sha256 is <hex> (the image ID)
    <root>/metadata/sha256/<hex>/parent     the parent image ID (builds record it; imports do not)
    <root>/metadata/sha256/<hex>/lastUpdated  when the image was last tagged (RFC 3339)

Every file is written with temp + fsync + rename. Creating writes the metadata first and the content
last: the content file is the commit point. Deleting removes the content first. On open the store
drops temporary files, metadata without content, content whose digest or JSON is wrong, and images
whose layers are missing (a crash between registering layers and writing the config, or a damaged
layer), then takes one layer reference per image.
"""

import hashlib
import os
import re
import shutil
import threading
import time
from pathlib import Path

from minibuild import errdefs
from minibuild.image.image import Image, InvalidImageConfig, format_time
from minibuild.ioutils import TEMP_PREFIX, atomic_write_file, fsync_dir
from minibuild.layer import Layer, LayerDoesNotExist, LayerStore

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ImageStore:
    """Image configs keyed by ID, each holding a reference on its top layer; thread safe."""

    def __init__(self, root: Path, layers: LayerStore):
        self.root = Path(root)
        self.layers = layers
        self._content = self.root / "content" / "sha256"
        self._metadata = self.root / "metadata" / "sha256"
        self._lock = threading.RLock()
        self._images: dict[str, Image] = {}
        self._children: dict[str, set[str]] = {}
        self._content.mkdir(parents=True, exist_ok=True)
        self._metadata.mkdir(parents=True, exist_ok=True)
        self._restore()

    # --- opening ---------------------------------------------------------------------------------

    def _restore(self) -> None:
        for entry in os.scandir(self._content):
            path = Path(entry.path)
            image = self._load(path) if _HEX64.fullmatch(entry.name) else None
            if image is None:
                path.unlink()  # a temporary file, or content that does not verify
                continue
            chain_id = image.chain_id
            if chain_id is not None and chain_id not in self.layers:
                self._remove_files(image.id)  # a half image: its layers never made it, or were lost
                continue
            if chain_id is not None:
                self.layers.acquire(chain_id)
            self._images[image.id] = image
        for entry in os.scandir(self._metadata):
            if "sha256:" + entry.name not in self._images:
                shutil.rmtree(entry.path, ignore_errors=True)  # metadata of an image never committed
                continue
            for leftover in os.scandir(entry.path):
                if leftover.name.startswith(TEMP_PREFIX):
                    os.unlink(leftover.path)  # a metadata write that was interrupted
        self._children = {image_id: set() for image_id in self._images}
        for image_id in self._images:
            parent = self.get_parent(image_id)
            if parent in self._children:
                self._children[parent].add(image_id)

    def _load(self, path: Path) -> Image | None:
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != path.name:
            return None  # moby: "failed to verify"
        try:
            return Image.from_json(raw)
        except InvalidImageConfig:
            return None

    # --- creating and deleting -------------------------------------------------------------------

    def create(self, config: bytes, *, parent: str | None = None) -> str:
        """Store a config (exact bytes) and return its ID; the image takes a reference on its layers.

        Creating an image that exists is a no-op that returns its ID (moby's Create).
        """
        try:
            image = Image.from_json(config)
        except InvalidImageConfig as err:
            raise errdefs.InvalidParameter(str(err)) from err
        non_empty = sum(1 for entry in image.history if not entry.get("empty_layer"))
        if non_empty > len(image.diff_ids):
            raise errdefs.InvalidParameter("too many non-empty layers in History section")
        with self._lock:
            if image.id in self._images:
                return image.id
            if parent is not None and parent not in self._images:
                raise errdefs.NotFound(f"No such image: {parent}")
            chain_id = image.chain_id
            if chain_id is not None:
                try:
                    self.layers.acquire(chain_id)
                except LayerDoesNotExist as err:
                    raise errdefs.InvalidParameter(f"failed to get layer {chain_id}: {err}") from err
            try:
                if parent is not None:
                    self._write_metadata(image.id, "parent", parent)
                atomic_write_file(self._content_path(image.id), config)  # the commit point
            except BaseException:
                self._remove_files(image.id)
                if chain_id is not None:
                    self.layers.release(chain_id)
                raise
            self._images[image.id] = image
            self._children[image.id] = set()
            if parent is not None:
                self._children[parent].add(image.id)
            return image.id

    def delete(self, image_id: str) -> list[Layer]:
        """Remove an image; return the layers that went with it (moby's Delete)."""
        with self._lock:
            image = self.get(image_id)
            parent = self.get_parent(image_id)
            self._remove_files(image_id)
            del self._images[image_id], self._children[image_id]
            if parent in self._children:
                self._children[parent].discard(image_id)
            chain_id = image.chain_id
            return self.layers.release(chain_id) if chain_id is not None else []

    def _content_path(self, image_id: str) -> Path:
        return self._content / image_id.removeprefix("sha256:")

    def _metadata_dir(self, image_id: str) -> Path:
        return self._metadata / image_id.removeprefix("sha256:")

    def _remove_files(self, image_id: str) -> None:
        self._content_path(image_id).unlink(missing_ok=True)  # first: the image is gone from here on
        fsync_dir(self._content)
        shutil.rmtree(self._metadata_dir(image_id), ignore_errors=True)

    def _write_metadata(self, image_id: str, key: str, value: str) -> None:
        directory = self._metadata_dir(image_id)
        directory.mkdir(exist_ok=True)
        atomic_write_file(directory / key, value.encode())

    def _read_metadata(self, image_id: str, key: str) -> str | None:
        try:
            return (self._metadata_dir(image_id) / key).read_text()
        except FileNotFoundError:
            return None

    # --- looking up ------------------------------------------------------------------------------

    def get(self, image_id: str) -> Image:
        image = self._images.get(image_id)
        if image is None:
            raise errdefs.NotFound(f"No such image: {image_id}")
        return image

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def __len__(self) -> int:
        return len(self._images)

    def images(self) -> dict[str, Image]:
        """All images by ID (moby's Map)."""
        with self._lock:
            return dict(self._images)

    def heads(self) -> dict[str, Image]:
        """Images no other image has as parent (moby's Heads)."""
        with self._lock:
            return {i: img for i, img in self._images.items() if not self._children[i]}

    def search(self, term: str) -> str:
        """Resolve a full or short ID (`88bb`, `sha256:88bb...`) like moby's digestset.Lookup."""
        alg, sep, hexpart = term.partition(":")
        if not sep:
            alg, hexpart = "", term
        with self._lock:
            matches = [i for i in self._images if (not alg or alg == "sha256") and i[7:].startswith(hexpart)]
        if len(matches) == 1 or (matches and hexpart == matches[0][7:]):
            return matches[0]
        if len(matches) > 1:
            raise errdefs.NotFound("ambiguous digest string")
        raise errdefs.NotFound(f"No such image: {term}")

    # --- parents and children --------------------------------------------------------------------

    def set_parent(self, image_id: str, parent: str) -> None:
        with self._lock:
            self.get(image_id)
            self.get(parent)
            old = self.get_parent(image_id)
            if old in self._children:
                self._children[old].discard(image_id)
            self._write_metadata(image_id, "parent", parent)
            self._children[parent].add(image_id)

    def get_parent(self, image_id: str) -> str | None:
        return self._read_metadata(image_id, "parent")

    def children(self, image_id: str) -> list[str]:
        with self._lock:
            return sorted(self._children.get(image_id, ()))

    def set_last_updated(self, image_id: str, ns: int | None = None) -> None:
        """Record when the image was last tagged (inspect's Metadata.LastTagTime)."""
        with self._lock:
            self.get(image_id)
            self._write_metadata(image_id, "lastUpdated", format_time(time.time_ns() if ns is None else ns))

    def get_last_updated(self, image_id: str) -> str | None:
        return self._read_metadata(image_id, "lastUpdated")
