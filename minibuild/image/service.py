"""The image service of the daemon (moby daemon/images: image.go GetImage, image_delete.go,
image_history.go, images.go, image_inspect, image_import.go, image_tag.go; daemon/commit.go CreateImage).

It owns the three stores under the data root and answers what the API routes and the builders ask:

    service = ImageService(default_data_root())
    image_id = service.create_image(config, layers=[diff_tar])   # a build step's commit
    service.tag("sha256:...", "app", "v1")
    service.inspect("app:v1"), service.history("app:v1"), service.list_images(all=False)
    service.remove("app:v1"), service.import_image(tar, repo="app", changes=['CMD ["sh"]'])
    service.save(["app:v1"], out), service.load(archive, on_stream=print)

Errors are errdefs classes carrying Docker's status and exact message. Data-root layout:

    <data root>/layerdb/            the layer store (minibuild.layer)
    <data root>/imagedb/            image configs and their metadata (minibuild.image.store)
    <data root>/repositories.json   references (minibuild.image.refstore)
    <data root>/tmp/                scratch space for imports and loads, emptied when the service opens
"""

import copy
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import minibuild
from minibuild import errdefs
from minibuild.api.platforms import host_arch
from minibuild.archive import ArchiveError
from minibuild.image import tarexport
from minibuild.image.changes import build_from_config
from minibuild.image.image import (
    GO_ZERO_TIME,
    Image,
    InvalidImageConfig,
    empty_container_config,
    format_time,
    marshal_image_config,
    ordered_container_config,
    parse_time,
)
from minibuild.image.reference import (
    DigestReference,
    InvalidReference,
    Reference,
    familiar_name,
    familiar_string,
    parse_any_reference,
    parse_normalized_named,
    tag_name_only,
    with_tag,
)
from minibuild.image.refstore import ReferenceStore
from minibuild.image.store import ImageStore
from minibuild.ioutils import TEMP_PREFIX
from minibuild.layer import Layer, LayerDoesNotExist, LayerStore, chain_id_of

DOCKER_VERSION = f"{minibuild.__version__}-minibuild"  # written as docker_version in new configs
ACCEPTED_IMAGE_FILTERS = ("before", "dangling", "label", "reference", "since")

LayerSource = BinaryIO | Path | str | Layer


def truncate_id(image_id: str) -> str:
    """stringid.TruncateID: 12 hex digits, without the algorithm."""
    return image_id.split(":", 1)[-1][:12]


class ImageService:
    """Images, layers and references under one data root."""

    def __init__(self, data_root: Path, *, graph_driver: str = "vfs"):
        self.root = Path(data_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.graph_driver = graph_driver  # shown as GraphDriver.Name by inspect
        self.tmp_dir = self.root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # half-done imports and loads of a dead daemon
        self.tmp_dir.mkdir()
        for leftover in self.root.glob(TEMP_PREFIX + "*"):
            leftover.unlink()  # an interrupted rewrite of repositories.json
        self.layer_store = LayerStore(self.root / "layerdb")
        self.image_store = ImageStore(self.root / "imagedb", self.layer_store)
        self.reference_store = ReferenceStore(self.root / "repositories.json")
        self.reference_store.prune(lambda image_id: image_id in self.image_store)  # no dangling names
        self.layer_store.sweep_unreferenced()  # layers registered by a build that never committed
        # Held while images and names come and go, so that a removal deciding "no children, no tags"
        # cannot interleave with a commit or a tag; long work (layer registration) happens outside it.
        self.lock = threading.RLock()

    # --- looking up ------------------------------------------------------------------------------

    def get_image(self, ref_or_id: str) -> Image:
        """A name, name:tag, name@digest, full ID or short ID -> the image (moby's GetImage)."""
        try:
            ref = parse_any_reference(ref_or_id)
        except InvalidReference as err:
            raise errdefs.InvalidParameter(str(err)) from err
        if isinstance(ref, DigestReference):
            if ref.digest in self.image_store:
                return self.image_store.get(ref.digest)
            raise errdefs.NotFound(f"No such image: {ref.digest}")
        try:
            return self.image_store.get(self.reference_store.get(ref))
        except errdefs.NotFound:
            pass
        try:
            return self.image_store.get(self.image_store.search(ref_or_id))
        except errdefs.NotFound:
            raise errdefs.NotFound(f"No such image: {familiar_string(tag_name_only(ref))}") from None

    def image_size(self, image: Image) -> int:
        """Bytes of file content in all the image's layers (moby's layer Size)."""
        chain_id = image.chain_id
        return sum(layer.size for layer in self.layer_store.chain(chain_id)) if chain_id else 0

    # --- creating --------------------------------------------------------------------------------

    def create_image(
        self, config: dict[str, Any], *, layers: Sequence[LayerSource] = (), parent_id: str | None = None
    ) -> str:
        """Commit an image: `config` (an image config dict) on top of new layers; return its ID.

        `config["rootfs"]["diff_ids"]` names the layers already below (copy them from the parent
        image); each item of `layers` (a diff tar as a stream or path, or a Layer you registered on
        top of that chain) is stacked on them in order and its diff ID appended. A step that changed
        no files passes no layers. `parent_id` records the parent image, as the classic builder does.
        The caller keeps any references it holds on Layer items.
        """
        config = copy.deepcopy(config)
        rootfs = config.setdefault("rootfs", {"type": "layers"})
        diff_ids = list(rootfs.get("diff_ids") or [])
        top = chain_id_of(diff_ids)
        held: list[Layer] = []
        if top is not None:
            try:
                held.append(self.layer_store.acquire(top))  # kept while we stack on it
            except LayerDoesNotExist as err:
                raise errdefs.InvalidParameter(f"failed to get layer {top}: {err}") from err
        try:
            for source in layers:
                if isinstance(source, Layer):
                    if source.parent != top:
                        raise errdefs.InvalidParameter(f"layer {source.chain_id} is not on top of {top}")
                    layer = self.layer_store.acquire(source.chain_id)
                else:
                    layer = self.layer_store.register(source, top)
                held.append(layer)
                diff_ids.append(layer.diff_id)
                top = layer.chain_id
            rootfs["diff_ids"] = diff_ids
            try:
                raw = marshal_image_config(config)
            except InvalidImageConfig as err:
                raise errdefs.InvalidParameter(str(err)) from err
            with self.lock:  # not while a removal decides whether `parent_id` has children
                return self.image_store.create(raw, parent=parent_id)
        finally:
            for layer in reversed(held):  # the image took its own reference; children hold their parents
                self.layer_store.release(layer.chain_id)

    def import_image(
        self,
        src: BinaryIO,
        *,
        repo: str = "",
        tag: str = "",
        message: str = "",
        changes: Sequence[str] = (),
        os_name: str = "linux",
        architecture: str | None = None,
        source: str = "-",
        source_date_epoch: int | None = None,
    ) -> str:
        """Import a rootfs tar as a one-layer image and tag it (moby's ImportImage); return its ID.

        The layer is the tar exactly as sent (decompressed), so its diff ID is the tar's sha256.
        `source_date_epoch` (seconds) replaces the wall clock as the created time.
        """
        new_ref: Reference | None = None
        if repo:
            try:
                new_ref = parse_normalized_named(repo)
            except InvalidReference as err:
                raise errdefs.InvalidParameter(str(err)) from err
            if new_ref.digest:
                raise errdefs.InvalidParameter("cannot import digest reference")
            if tag:
                try:
                    new_ref = with_tag(new_ref, tag)
                except InvalidReference as err:
                    raise errdefs.InvalidParameter(str(err)) from err
        container_config = build_from_config(empty_container_config(), list(changes))
        message = message or f"Imported from {source}"
        try:
            layer = self.layer_store.register(src)
        except ArchiveError as err:  # dockerd applies the layer in a child process and reports its exit
            raise errdefs.System(f"ApplyLayer exit status 1 stdout:  stderr: {err}") from err
        try:
            created = format_time(
                source_date_epoch * 1_000_000_000 if source_date_epoch is not None else time.time_ns()
            )
            config = {
                "docker_version": DOCKER_VERSION,
                "config": container_config,
                "architecture": architecture or host_arch(),
                "os": os_name,
                "created": created,
                "comment": message,
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [{"created": created, "comment": message}],
            }
            with self.lock:
                image_id = self.image_store.create(marshal_image_config(config))
                if new_ref is not None:
                    self.tag_image_with_reference(image_id, new_ref)
        finally:
            self.layer_store.release(layer.chain_id)
        return image_id

    # --- tags ------------------------------------------------------------------------------------

    def tag(self, source: str, repo: str, tag: str = "") -> str:
        """Tag an image (moby's TagImage); return the new familiar reference.

        Reference errors are plain errors there, so they reach the client as 500s.
        """
        image = self.get_image(source)
        try:
            new_ref = parse_normalized_named(repo)
            if tag:
                new_ref = with_tag(Reference(new_ref.domain, new_ref.path), tag)
        except InvalidReference as err:
            raise errdefs.System(str(err)) from err
        self.tag_image_with_reference(image.id, new_ref)
        return familiar_string(new_ref)

    def tag_image_with_reference(self, image_id: str, ref: Reference) -> None:
        """Point a reference at an image, replacing what it pointed at; record the tag time."""
        with self.lock:
            self.image_store.get(image_id)  # still there
            self.reference_store.add_tag(ref, image_id, force=True)
            self.image_store.set_last_updated(image_id)

    # --- the stores as pull and push see them (minibuild.distribution's PullStore, PushStore) ----

    def has_image(self, image_id: str) -> bool:
        return image_id in self.image_store

    def put_image_config(self, config: bytes) -> str:
        with self.lock:
            return self.image_store.create(config)

    def get_image_config(self, image_id: str) -> bytes:
        return self.image_store.get(image_id).raw

    def get_reference(self, ref: Reference) -> str | None:
        try:
            return self.reference_store.get(ref)
        except errdefs.NotFound:
            return None

    def add_reference(self, ref: Reference, image_id: str) -> None:
        if ref.digest:
            self.reference_store.add_digest(ref, image_id, force=True)
        else:
            self.tag_image_with_reference(image_id, ref)

    def references_by_name(self, ref: Reference) -> list[Reference]:
        return [found for found, _ in self.reference_store.references_by_name(ref)]

    # --- inspect, history, list ------------------------------------------------------------------

    def inspect(self, name: str) -> dict[str, Any]:
        """`GET /images/{name}/json`: Docker's ImageInspect document, fields in Docker's order."""
        try:
            image = self.get_image(name)
        except errdefs.DockerError as err:
            raise type(err)(f"no such image: {name}: {err.message}") from err
        refs = self.reference_store.references(image.id)
        config = image.config
        comment = config.get("comment") or (image.history[-1].get("comment", "") if image.history else "")
        size = self.image_size(image)
        diff_ids = image.diff_ids
        document: dict[str, Any] = {
            "Id": image.id,
            "RepoTags": [familiar_string(r) for r in refs if r.tag],
            "RepoDigests": [familiar_string(r) for r in refs if r.digest and not r.tag],
            "Parent": self.image_store.get_parent(image.id) or "",
            "Comment": comment,
            "Created": format_time(parse_time(image.created)),
            "Container": config.get("container", ""),
            "ContainerConfig": _go_container_config(config.get("container_config") or {}),
            "DockerVersion": config.get("docker_version", ""),
            "Author": config.get("author", ""),
            "Config": _go_container_config(config["config"]) if config.get("config") else None,
            "Architecture": config.get("architecture", ""),
        }
        if config.get("variant"):
            document["Variant"] = config["variant"]
        document["Os"] = image.os
        if config.get("os.version"):
            document["OsVersion"] = config["os.version"]
        document.update(
            {
                "Size": size,
                "VirtualSize": size,
                "GraphDriver": {"Data": None, "Name": self.graph_driver},
                "RootFS": {"Type": "layers", **({"Layers": diff_ids} if diff_ids else {})},
                "Metadata": {"LastTagTime": self.image_store.get_last_updated(image.id) or GO_ZERO_TIME},
            }
        )
        return document

    def history(self, name: str) -> list[dict[str, Any]]:
        """`GET /images/{name}/history`: newest first, IDs and tags filled along the parent chain."""
        image = self.get_image(name)
        items: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        for entry in image.history:
            size = 0
            if not entry.get("empty_layer"):
                if len(image.diff_ids) <= len(diff_ids):
                    raise errdefs.System("too many non-empty layers in History section")
                diff_ids.append(image.diff_ids[len(diff_ids)])
                size = self.layer_store.get(chain_id_of(diff_ids)).size
            items.insert(0, {
                "Comment": entry.get("comment", ""),
                "Created": parse_time(entry.get("created") or GO_ZERO_TIME) // 1_000_000_000,
                "CreatedBy": entry.get("created_by", ""),
                "Id": "<missing>",
                "Size": size,
                "Tags": None,
            })  # fmt: skip
        current: str | None = image.id
        for item in items:
            if current is None or current not in self.image_store:
                break
            item["Id"] = current
            item["Tags"] = [
                familiar_string(r) for r in self.reference_store.references(current) if r.tag
            ] or None
            current = self.image_store.get_parent(current)
        return items

    def list_images(
        self, *, all: bool = False, filters: Mapping[str, Iterable[str]] | None = None
    ) -> list[dict[str, Any]]:
        """`GET /images/json`: ImageSummary items, newest first (moby's Images)."""
        filters = {key: list(values) for key, values in (filters or {}).items()}
        for key in filters:
            if key not in ACCEPTED_IMAGE_FILTERS:
                raise errdefs.InvalidParameter(f"Invalid filter '{key}'")
        dangling_only = False
        if "dangling" in filters:
            values = {v.lower() for v in filters["dangling"]}
            if values == {"true"}:
                dangling_only = True
            elif values != {"false"}:
                raise errdefs.InvalidParameter(f"Invalid filter 'dangling=[{' '.join(filters['dangling'])}]'")
        before = [parse_time(self.get_image(v).created) for v in filters.get("before", [])]
        since = [parse_time(self.get_image(v).created) for v in filters.get("since", [])]
        images = self.image_store.heads() if dangling_only else self.image_store.images()
        summaries = []
        for image_id, image in images.items():
            created = parse_time(image.created)
            if (before and created >= before[-1]) or (since and created <= since[-1]):
                continue
            labels = (image.config.get("config") or {}).get("Labels")
            if "label" in filters and not _match_kv_list(filters["label"], labels):
                continue
            if image.chain_id is not None and image.chain_id not in self.layer_store:
                continue  # removed while we were listing
            tags, digests = [], []
            for ref in self.reference_store.references(image_id):
                if "reference" in filters and not any(_familiar_match(p, ref) for p in filters["reference"]):
                    continue
                if ref.digest:
                    digests.append(familiar_string(ref))
                if ref.tag:
                    tags.append(familiar_string(ref))
            if not tags and not digests:
                if not all and self.image_store.children(image_id):
                    continue  # an intermediate image
                if ("dangling" in filters and not dangling_only) or "reference" in filters:
                    continue
                tags, digests = ["<none>:<none>"], ["<none>@<none>"]
            elif dangling_only and tags:
                continue
            size = self.image_size(image)
            summaries.append({
                "Containers": -1,
                "Created": created // 1_000_000_000,
                "Id": image_id,
                "Labels": labels,
                "ParentId": self.image_store.get_parent(image_id) or "",
                "RepoDigests": digests or None,
                "RepoTags": tags or None,
                "SharedSize": -1,
                "Size": size,
                "VirtualSize": size,
            })  # fmt: skip
        summaries.sort(key=lambda s: (-s["Created"], s["Id"]))
        return summaries

    # --- removing --------------------------------------------------------------------------------

    def remove(self, name: str, *, force: bool = False, prune: bool = True) -> list[dict[str, str]]:
        """`DELETE /images/{name}` (moby's ImageDelete): untag, delete, prune untagged parents.

        minibuild keeps no containers, so only the reference and child-image conflicts apply.
        """
        with self.lock:
            return self._remove(name, force=force, prune=prune)

    def _remove(self, name: str, *, force: bool, prune: bool) -> list[dict[str, str]]:
        image = self.get_image(name)
        records: list[dict[str, str]] = []
        refs = self.reference_store.references(image.id)
        removed_repository_ref = False
        if not _is_image_id_prefix(image.id, name):
            try:
                ref = parse_normalized_named(name)
            except InvalidReference as err:
                raise errdefs.InvalidParameter(str(err)) from err
            ref = self._remove_ref(ref, records)
            refs = self.reference_store.references(image.id)
            if not ref.digest and not any(r.name == ref.name and not r.digest for r in refs):
                for other in [r for r in refs if r.digest and r.name == ref.name]:  # orphaned digests
                    self._remove_ref(other, records)
                refs = self.reference_store.references(image.id)
            if refs:
                return records  # other names remain: untagging was the whole removal
            removed_repository_ref = True
        elif _is_single_reference(refs):
            for ref in refs:
                self._remove_ref(ref, records)
        self._delete_image(image.id, records, force=force, prune=prune, quiet=removed_repository_ref)
        return records

    def _remove_ref(self, ref: Reference, records: list[dict[str, str]]) -> Reference:
        ref = tag_name_only(ref)
        self.reference_store.delete(ref)
        records.append({"Untagged": familiar_string(ref)})
        return ref

    def _delete_image(
        self, image_id: str, records: list[dict[str, str]], *, force: bool, prune: bool, quiet: bool
    ) -> None:
        """moby's imageDeleteHelper: refuse on conflicts (or stay quiet), delete, then prune the parent."""
        conflict = None
        if self.image_store.children(image_id):
            conflict = f"conflict: unable to delete {truncate_id(image_id)} (cannot be forced) - " \
                       "image has dependent child images"  # fmt: skip
        elif not force and self.reference_store.references(image_id):
            conflict = f"conflict: unable to delete {truncate_id(image_id)} (must be forced) - " \
                       "image is referenced in multiple repositories"  # fmt: skip
        if conflict is not None:
            if quiet and not self._is_dangling(image_id):
                return  # pruning a parent that is still wanted: leave it, say nothing
            raise errdefs.Conflict(conflict)
        parent = self.image_store.get_parent(image_id)
        for ref in self.reference_store.references(image_id):
            self._remove_ref(ref, records)
        removed_layers = self.image_store.delete(image_id)
        records.append({"Deleted": image_id})
        records.extend({"Deleted": layer.chain_id} for layer in removed_layers)
        if prune and parent is not None and parent in self.image_store:
            self._delete_image(parent, records, force=False, prune=True, quiet=True)

    def _is_dangling(self, image_id: str) -> bool:
        return not self.reference_store.references(image_id) and not self.image_store.children(image_id)

    # --- save and load ---------------------------------------------------------------------------

    def save(self, names: Sequence[str], out: BinaryIO) -> None:
        """Write a `docker save` archive of `names` to `out`.

        Every name is resolved before the first byte is written, so a NotFound can still become an
        HTTP error.
        """
        tarexport.save(self, names, out)

    def load(
        self,
        src: BinaryIO,
        *,
        on_stream: Callable[[str], None],
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> list[str]:
        """Load a `docker save` archive; report lines (`Loaded image: ...`) through `on_stream`.

        `on_progress(short id, current, total)` receives "Loading layer" progress (quiet=0).
        Returns the loaded image IDs.
        """
        return tarexport.load(self, src, on_stream=on_stream, on_progress=on_progress)


def _go_container_config(config: dict[str, Any]) -> dict[str, Any]:
    """A container config as Go re-marshals it (field order, zero values, omitempty)."""
    return ordered_container_config(config, strict=False) or {}


def _is_image_id_prefix(image_id: str, candidate: str) -> bool:
    return image_id.startswith(candidate) or image_id.split(":", 1)[-1].startswith(candidate)


def _is_single_reference(refs: list[Reference]) -> bool:
    """All references in one repository, with at most one tag (moby's isSingleReference)."""
    if len(refs) <= 1:
        return len(refs) == 1
    tagged = [r for r in refs if not r.digest]
    if len(tagged) > 1:
        return False
    canonical_names = {r.name for r in refs if r.digest}
    single = tagged[0] if tagged else refs[0]
    return len(canonical_names) == 1 and single.name in canonical_names


def _match_kv_list(wanted: list[str], labels: Mapping[str, str] | None) -> bool:
    """filters.MatchKVList: every `key` or `key=value` must be among the labels."""
    if not wanted:
        return True
    if not labels:
        return False
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` stop at `/`, `[...]` classes with `^` negation, `\\` escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                raise errdefs.InvalidParameter("syntax error in pattern")
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def _familiar_match(pattern: str, ref: Reference) -> bool:
    """reference.FamiliarMatch: the pattern against `name:tag`, then against the name alone."""
    return _path_match(pattern, familiar_string(ref)) or _path_match(pattern, familiar_name(ref))
