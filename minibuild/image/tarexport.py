"""`docker save` and `docker load` archives (moby image/tarexport: save.go, load.go; image/v1 CreateID).

A saved archive, in the legacy layout every `docker load` reads:

    <v1 id>/VERSION     "1.0"
    <v1 id>/json        the legacy v1 layer JSON (the image's own fields on the top layer)
    <v1 id>/layer.tar   the layer diff, byte for byte as stored (its sha256 is the diff ID)
    <image id hex>.json the image config (its sha256 is the image ID)
    manifest.json       [{"Config":...,"RepoTags":[...]|null,"Layers":["<v1 id>/layer.tar",...]}]
    repositories        {"name":{"tag":"<top v1 id>"}}   (only when names were asked for)

v1 IDs are derived as moby derives them (sha256 of the v1 JSON with the layer's chain ID and the
parent v1 ID). Entries are written in the order filepath.Walk gives them (sorted), with fixed owners
and times taken from the image's created time (manifest.json and repositories at the epoch), so the
same images always make the same bytes.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from minibuild import errdefs, gojson
from minibuild.archive import ArchiveError, follow_symlink_in_scope, untar
from minibuild.archive.tarstream import tar_header, write_end, write_entry
from minibuild.image.image import (
    GO_ZERO_TIME,
    Image,
    InvalidImageConfig,
    format_time,
    ordered_container_config,
    parse_time,
)
from minibuild.image.reference import (
    DigestReference,
    InvalidReference,
    Reference,
    familiar_name,
    familiar_string,
    is_name_only,
    parse_any_reference,
    parse_normalized_named,
    tag_name_only,
)
from minibuild.layer import Layer, chain_id_of

if TYPE_CHECKING:
    from minibuild.image.service import ImageService

LEGACY_LAYER_FILE = "layer.tar"
LEGACY_CONFIG_FILE = "json"
LEGACY_VERSION_FILE = "VERSION"
LEGACY_REPOSITORIES_FILE = "repositories"
MANIFEST_FILE = "manifest.json"
EPOCH_TIME = "1970-01-01T00:00:00Z"
_PROGRESS_EVERY = 512 * 1024  # pkg/progress's reader reports every 512 KiB


# --- v1 compatibility IDs ------------------------------------------------------------------------------

# image.V1Image's JSON keys in Go field order (omitempty except created and container_config).
_V1_FIELDS = ("id", "parent", "comment", "created", "container", "container_config", "docker_version",
              "author", "config", "architecture", "variant", "os", "size")  # fmt: skip


def v1_image(fields: dict[str, Any]) -> dict[str, Any]:
    """A V1Image as Go marshals it: its fields in order, empty ones left out, nested structs normalized."""
    out: dict[str, Any] = {}
    for key in _V1_FIELDS:
        value = fields.get(key)
        if key == "created":
            value = format_time(parse_time(value or GO_ZERO_TIME))
        elif key == "container_config":
            value = ordered_container_config(value or {}, strict=False)
        elif key == "config":
            value = ordered_container_config(value, strict=False) if value else None
        elif not value:
            continue
        if value is not None:
            out[key] = value
    return out


def create_v1_id(v1: dict[str, Any], chain_id: str, parent: str | None) -> str:
    """image/v1 CreateID: sha256 of the v1 JSON without its id, plus layer_id and parent, keys sorted."""
    config = {k: v for k, v in v1.items() if k != "id"}
    config["layer_id"] = chain_id
    if parent:
        config["parent"] = parent
    return "sha256:" + hashlib.sha256(gojson.dumpb(dict(sorted(config.items())))).hexdigest()


# --- save --------------------------------------------------------------------------------------------


@dataclass
class _Descriptor:
    image: Image
    refs: list[Reference] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # v1 IDs, bottom first


def _parse_names(service: "ImageService", names: Sequence[str]) -> dict[str, _Descriptor]:
    """moby's parseNames: which images, with which tags, a save request means."""
    found: dict[str, _Descriptor] = {}

    def add(image_id: str, ref: Reference | None) -> None:
        if image_id not in found:
            found[image_id] = _Descriptor(service.image_store.get(image_id))
        if ref is not None and not ref.digest:
            tagged = tag_name_only(ref)
            if tagged not in found[image_id].refs:
                found[image_id].refs.append(tagged)

    for name in names:
        try:
            ref = parse_any_reference(name)
        except InvalidReference as err:
            raise errdefs.InvalidParameter(str(err)) from err
        if isinstance(ref, DigestReference):
            if ref.digest not in service.image_store:
                raise errdefs.NotFound(f"No such image: {ref.digest}")
            add(ref.digest, None)
        elif familiar_name(ref) == "sha256":
            add(service.image_store.search(name), None)
        elif is_name_only(ref):
            tagged = service.reference_store.references_by_name(ref)
            for other, image_id in tagged:
                add(image_id, other)
            if not tagged:
                add(service.image_store.search(name), None)
        else:
            add(service.reference_store.get(ref), ref)
    return found


def save(service: "ImageService", names: Sequence[str], out: BinaryIO) -> None:
    """Write the archive of `names` to `out`; every lookup error is raised before the first byte."""
    descriptors = _parse_names(service, names)
    for descriptor in descriptors.values():
        if not descriptor.image.diff_ids:
            raise errdefs.System("empty export - not implemented")
    held = [service.layer_store.acquire(d.image.chain_id) for d in descriptors.values()]
    try:
        _write_archive(service, descriptors, out)
    finally:
        for layer in held:
            service.layer_store.release(layer.chain_id)


class _Archive:
    """The archive's entries by path, written at the end in filepath.Walk order."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | Layer | None]] = {}
        self.first_path: dict[str, str] = {}  # diff ID -> where its layer.tar was written

    def add_file(self, name: str, data: bytes, mtime: int) -> None:
        self.entries[name] = (tar_header(name, 0o644, mtime, len(data)), data)

    def add_layer_dir(self, v1_id: str, v1_json: bytes, layer: Layer, mtime: int) -> None:
        self.entries[v1_id + "/"] = (tar_header(v1_id, 0o755, mtime, kind=tarfile.DIRTYPE), None)
        self.add_file(f"{v1_id}/{LEGACY_VERSION_FILE}", b"1.0", mtime)
        self.add_file(f"{v1_id}/{LEGACY_CONFIG_FILE}", v1_json, mtime)
        name = f"{v1_id}/{LEGACY_LAYER_FILE}"
        if layer.diff_id in self.first_path:  # the same diff under another chain: a link, as moby writes
            info = tar_header(name, 0o777, mtime, kind=tarfile.SYMTYPE)
            info.linkname = f"../{self.first_path[layer.diff_id]}"
            self.entries[name] = (info, None)
        else:
            self.entries[name] = (tar_header(name, 0o644, mtime, layer.tar_path.stat().st_size), layer)
            self.first_path[layer.diff_id] = name

    def write(self, out: BinaryIO) -> None:
        for name in _walk_order(self.entries):
            info, content = self.entries[name]
            if isinstance(content, Layer):
                with content.open() as stream:
                    write_entry(out, info, stream)
            else:
                write_entry(out, info, io.BytesIO(content) if content is not None else None)
        write_end(out)


def _v1_layers(image: Image) -> list[tuple[str, bytes]]:
    """(v1 ID hex, v1 JSON) per layer, bottom first: moby's saveImage."""
    result = []
    parent: str | None = None
    for i in range(len(image.diff_ids)):
        top = i == len(image.diff_ids) - 1
        fields = {k: v for k, v in image.config.items() if k not in ("id", "parent")} if top else {}
        v1 = v1_image(fields if top else {"created": EPOCH_TIME})
        v1_id = create_v1_id(v1, chain_id_of(image.diff_ids[: i + 1]), parent)
        v1.update(id=v1_id[7:], parent=parent[7:] if parent else None, os=image.config.get("os"))
        v1 = {key: v1[key] for key in _V1_FIELDS if v1.get(key) not in (None, "")}
        result.append((v1_id[7:], gojson.dumpb(v1)))
        parent = v1_id
    return result


def _write_archive(service: "ImageService", descriptors: dict[str, _Descriptor], out: BinaryIO) -> None:
    archive = _Archive()
    for image_id, descriptor in descriptors.items():
        image = descriptor.image
        created = parse_time(image.created) // 1_000_000_000
        for i, (v1_id, v1_json) in enumerate(_v1_layers(image)):
            descriptor.layers.append(v1_id)
            if v1_id + "/" not in archive.entries:
                layer = service.layer_store.get(chain_id_of(image.diff_ids[: i + 1]))
                archive.add_layer_dir(v1_id, v1_json, layer, created)
        archive.add_file(image_id[7:] + ".json", image.raw, created)

    manifest, repositories, links = [], {}, []
    for image_id, descriptor in descriptors.items():
        for ref in descriptor.refs:
            repositories.setdefault(familiar_name(ref), {})[ref.tag] = descriptor.layers[-1]
        manifest.append({
            "Config": image_id[7:] + ".json",
            "RepoTags": [familiar_string(ref) for ref in descriptor.refs] or None,
            "Layers": [f"{v1_id}/{LEGACY_LAYER_FILE}" for v1_id in descriptor.layers],
        })  # fmt: skip
        links.append((image_id, service.image_store.get_parent(image_id)))
    for item, (_, parent_id) in zip(manifest, _validated_parent_links(links), strict=True):
        if parent_id:
            item["Parent"] = parent_id
    archive.add_file(MANIFEST_FILE, gojson.dumpb(manifest) + b"\n", 0)
    if repositories:
        archive.add_file(LEGACY_REPOSITORIES_FILE, gojson.dumpb(repositories, sort_keys=True) + b"\n", 0)
    archive.write(out)


def _walk_order(files: dict[str, Any]) -> list[str]:
    """filepath.Walk's order: each root name sorted, a directory followed by its sorted contents."""
    roots = sorted({name.split("/", 1)[0] for name in files})
    order = []
    for root in roots:
        if root + "/" in files:
            order.append(root + "/")
            order += sorted(n for n in files if n.startswith(root + "/") and n != root + "/")
        else:
            order.append(root)
    return order


def _validated_parent_links(links: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Keep a parent link only when the parent is in the same archive (moby's validatedParentLinks)."""
    ids = {image_id for image_id, _ in links}
    return [(i, p if p in ids and p != i else None) for i, p in links]


# --- load --------------------------------------------------------------------------------------------


class _ProgressReader:
    """Reports "Loading layer" progress every 512 KiB, at the end, and when closed (pkg/progress)."""

    def __init__(self, src: BinaryIO, total: int, report: Callable[[int, int], None]):
        self.src, self.total, self.report = src, total, report
        self.current = self.last = 0
        self.at_end = False

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.current += len(data)
        if (not data and not self.at_end) or self.current - self.last >= _PROGRESS_EVERY:
            self.at_end = not data
            self.last = self.current
            self.report(self.current, self.total)
        return data

    def close(self) -> None:
        self.report(self.current, self.total)


def load(
    service: "ImageService",
    src: BinaryIO,
    *,
    on_stream: Callable[[str], None],
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Load a `docker save` archive (moby's tarexporter.Load); return the loaded image IDs."""
    tmp = Path(tempfile.mkdtemp(prefix="docker-import-", dir=service.tmp_dir))
    try:
        try:
            untar(src, tmp)
        except ArchiveError as err:  # dockerd untars in a child process and reports its exit
            raise errdefs.System(f"Error processing tar file(exit status 1): {err}") from err
        manifest_path = follow_symlink_in_scope(MANIFEST_FILE, tmp)
        if not manifest_path.is_file():
            repositories = follow_symlink_in_scope(LEGACY_REPOSITORIES_FILE, tmp)
            if not repositories.is_file():
                raise errdefs.System(f"open {repositories}: no such file or directory")
            raise errdefs.NotImplemented(
                "loading archives without manifest.json (Docker < 1.10) is not supported"
            )
        try:
            manifest = json.loads(manifest_path.read_bytes())
            if not isinstance(manifest, list) or not all(isinstance(m, dict) for m in manifest):
                raise ValueError("json: cannot unmarshal manifest.json")
        except ValueError as err:
            raise errdefs.System(str(err)) from err
        return _load_manifest(service, tmp, manifest, on_stream, on_progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_in_archive(tmp: Path, name: object) -> Path:
    if not isinstance(name, str):
        raise errdefs.System("invalid manifest entry")
    path = follow_symlink_in_scope(name, tmp)
    if not path.is_file():
        raise errdefs.System(f"open {path}: no such file or directory")
    return path


def _load_manifest(service, tmp, manifest, on_stream, on_progress) -> list[str]:
    loaded, id_lines, links = [], "", []
    tagged_count = 0
    for item in manifest:
        config = _read_in_archive(tmp, item.get("Config")).read_bytes()
        try:
            image = Image.from_json(config)
        except InvalidImageConfig as err:
            raise errdefs.System(str(err)) from err
        if image.config.get("os", "linux") not in ("", "linux"):
            raise errdefs.System(f"cannot load {image.config['os']} image on linux")
        layers = item.get("Layers") or []
        if len(layers) != len(image.diff_ids):
            raise errdefs.System(
                f"invalid manifest, layers length mismatch: expected {len(layers)}, got {len(image.diff_ids)}"
            )
        held: list[Layer] = []
        try:
            for i, diff_id in enumerate(image.diff_ids):
                parent = held[-1].chain_id if held else None
                chain_id = chain_id_of(image.diff_ids[: i + 1])
                if chain_id in service.layer_store:
                    layer = service.layer_store.acquire(chain_id)
                else:
                    layer = _load_layer(
                        service, _read_in_archive(tmp, layers[i]), parent, diff_id, on_progress
                    )
                held.append(layer)
                if layer.diff_id != diff_id:
                    raise errdefs.System(
                        f'invalid diffID for layer {i}: expected "{diff_id}", got "{layer.diff_id}"'
                    )
            with service.lock:  # tagged before anyone could remove it as an untagged image
                image_id = service.image_store.create(config)
                tagged_count = _tag_loaded(service, image_id, item.get("RepoTags") or [], on_stream)
        finally:
            for layer in held:
                service.layer_store.release(layer.chain_id)
        loaded.append(image_id)
        id_lines += f"Loaded image ID: {image_id}\n"
        links.append((image_id, item.get("Parent")))
    with service.lock:
        for image_id, parent_id in _validated_parent_links(links):
            if parent_id:
                _set_parent(service, image_id, parent_id)
    if tagged_count == 0:  # moby prints the IDs when the last image had no tags
        on_stream(id_lines)
    return loaded


def _tag_loaded(service, image_id: str, repo_tags: list, on_stream: Callable[[str], None]) -> int:
    """moby's setLoadedTag for each name of a loaded image; return how many."""
    for repo_tag in repo_tags:
        try:
            ref = parse_normalized_named(repo_tag)
        except InvalidReference as err:
            raise errdefs.System(str(err)) from err
        if not ref.tag:
            raise errdefs.System(f'invalid tag "{repo_tag}"')
        previous = service.get_reference(ref)
        if previous is not None and previous != image_id:
            on_stream(f"The image {familiar_string(ref)} already exists, renaming the old one with ID "
                      f"{previous} to empty string\n")  # fmt: skip
        service.tag_image_with_reference(image_id, ref)
        on_stream(f"Loaded image: {familiar_string(ref)}\n")
    return len(repo_tags)


def _load_layer(service, path: Path, parent: str | None, diff_id: str, on_progress) -> Layer:
    try:
        with open(path, "rb") as raw:
            if on_progress is None:
                return service.layer_store.register(raw, parent)
            short = diff_id.split(":", 1)[-1][:12]
            reader = _ProgressReader(
                raw, os.fstat(raw.fileno()).st_size, lambda c, t: on_progress(short, c, t)
            )
            try:
                return service.layer_store.register(reader, parent)
            finally:
                reader.close()
    except ArchiveError as err:
        raise errdefs.System(str(err)) from err


def _set_parent(service, image_id: str, parent_id: str) -> None:
    image, parent = service.image_store.get(image_id), service.image_store.get(parent_id)
    if not _is_valid_parent(image, parent):
        raise errdefs.System(f"image {parent.id} is not a valid parent for {image.id}")
    service.image_store.set_parent(image_id, parent_id)


def _is_valid_parent(image: Image, parent: Image) -> bool:
    """moby's checkValidParent: the parent's history and layers are a strict prefix of the child's."""
    if not image.history and not parent.history:
        return True
    if len(parent.history) >= len(image.history) or len(parent.diff_ids) > len(image.diff_ids):
        return False
    return image.history[: len(parent.history)] == parent.history and \
        image.diff_ids[: len(parent.diff_ids)] == parent.diff_ids  # fmt: skip
