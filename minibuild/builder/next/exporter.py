"""`exporting to image`: the final result becomes an image in the daemon's store (moby
builder/builder-next/exporter/export.go, writer.go; buildkit exporter/containerimage/writer.go
normalizeLayersAndHistory).

The image's layers are the final result's stack; the config is the one dockerfile2llb built, its
history reconciled with the layers: a RUN or COPY that changed nothing added no layer, so its entry
becomes `empty_layer`. Times come from the cache: each entry is dated when its layer was made, the
image when its newest layer was, so a fully cached rebuild gives the same image ID (as dockerd's
BuildKit does); with SOURCE_DATE_EPOCH every time is that epoch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from minibuild import trace
from minibuild.builder import run_in_thread as in_thread
from minibuild.builder.next.cache import CacheManager, Ref
from minibuild.builder.next.dockerfile2llb import FROM_BASE
from minibuild.builder.next.progress import ProgressWriter, VertexStatus
from minibuild.builder.next.progress import Vertex as ProgressVertex
from minibuild.image import reference
from minibuild.image.image import format_time, image_id_of, marshal_image_config
from minibuild.image.service import ImageService
from minibuild.layer import chain_id_of

EXPORTER_MOBY = "moby"
EXPORTER_IMAGE = "image"


@dataclass
class ExportRequest:
    """What the moby exporter needs from a solve."""

    ref: Ref
    image: dict[str, Any]
    history_sources: list[str | None]
    names: list[str]
    source_date_epoch: int | None
    # digest -> the Ref of that vertex, if this build knows it (solved or loaded from the cache)
    result_of: Callable[[str], Ref | None]


class MobyExporter:
    """Writes the image to the ImageService and names it."""

    def __init__(self, image_service: ImageService, cache: CacheManager) -> None:
        self.image_service = image_service
        self.cache = cache

    @trace.traced
    async def export(self, req: ExportRequest, progress: ProgressWriter | None, build_ref: str) -> str:
        vertex = "sha256:" + hashlib.sha256(f"exporting to image {build_ref}".encode()).hexdigest()
        reporter = _Reporter(progress, vertex)
        reporter.start()
        reporter.status("exporting layers", started=True)
        config = build_image_config(req)
        raw = marshal_image_config(config)
        image_id = image_id_of(raw)
        if not self.image_service.has_image(image_id):
            await in_thread(self._write, config, req.ref)
        reporter.status("exporting layers", completed=True)
        reporter.status(f"writing image {image_id}", started=True, completed=True)
        for name in req.names:
            ref = reference.parse_normalized_named(name)
            reporter.status(f"naming to {ref}", started=True)
            self.image_service.tag_image_with_reference(image_id, ref)
            reporter.status(f"naming to {ref}", completed=True)
        reporter.complete()
        return image_id

    def _write(self, config: dict[str, Any], ref: Ref) -> None:
        """Commit the image: layers the image store lacks are registered from the cache's tars."""
        diff_ids = [layer.diff_id for layer in ref.chain]
        known = 0
        while known < len(diff_ids) and chain_id_of(diff_ids[: known + 1]) in self.image_service.layer_store:
            known += 1
        base = dict(config, rootfs={"type": "layers", "diff_ids": diff_ids[:known]})
        image_id = self.image_service.create_image(
            base, layers=[layer.tar_path for layer in ref.chain[known:]]
        )
        if image_id != image_id_of(marshal_image_config(config)):
            raise RuntimeError("the exported image does not match its layers")


def build_image_config(req: ExportRequest) -> dict[str, Any]:
    """The final image config: the frontend's, with history reconciled with the layers and dated."""
    image = req.image
    chain = req.ref.chain
    base_layers = len(image["rootfs"].get("diff_ids") or [])
    history: list[dict[str, Any]] = []
    prior_layers = base_layers
    newest = req.ref.created_at or time.time()  # no new layer: the image is as old as its result
    for entry, source in zip(image.get("history") or [], req.history_sources, strict=True):
        entry = dict(entry)
        if source == FROM_BASE:
            history.append(entry)
            continue
        if source is not None:
            result = req.result_of(source)
            layers = len(result.chain) if result is not None else None
            if layers is None:  # unknown (pruned meanwhile): BuildKit's rule, layers fill from the top
                layers = prior_layers + 1 if prior_layers < len(chain) else prior_layers
            entry["empty_layer"] = layers == prior_layers
            if layers > prior_layers:
                prior_layers = layers
                if result is not None and result.created_at:
                    newest = result.created_at
        if not entry.get("empty_layer"):
            entry.pop("empty_layer", None)
        history.append(entry)
    created = _created(req.source_date_epoch, newest)
    for entry, source in zip(history, req.history_sources, strict=True):
        if source != FROM_BASE:
            entry["created"] = created
    config: dict[str, Any] = {
        k: image[k] for k in ("architecture", "os", "variant", "author") if image.get(k)
    }
    config["config"] = {k: v for k, v in image["config"].items() if v is not None}
    config["created"] = created
    config["history"] = history
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in chain]}
    return config


def _created(epoch: int | None, when: float) -> str:
    if epoch is not None:
        return format_time(epoch * 1_000_000_000)
    return format_time(int(when * 1_000_000_000))


class _Reporter:
    """The `exporting to image` vertex and its sub-steps."""

    def __init__(self, progress: ProgressWriter | None, digest: str) -> None:
        self.progress, self.digest = progress, digest
        self.started: dict[str, float] = {}

    def start(self) -> None:
        if self.progress is not None:
            self.progress.announce([ProgressVertex(self.digest, [], "exporting to image")])
            self.progress.start(self.digest)

    def status(self, id: str, *, started: bool = False, completed: bool = False) -> None:
        if self.progress is None:
            return
        now = self.progress.clock()
        if started:
            self.started[id] = now
        self.progress.status(
            VertexStatus(
                id,
                self.digest,
                timestamp=now,
                started=self.started.get(id, now),
                completed=now if completed else None,
            )  # fmt: skip
        )

    def complete(self) -> None:
        if self.progress is not None:
            self.progress.complete(self.digest)


def sanitize_repo_and_tags(names: Sequence[str]) -> list[str]:
    """overrides.SanitizeRepoAndTags: each tag normalized (docker.io/library/x:latest), once."""
    out: list[str] = []
    for name in names:
        if not name:
            continue
        ref = reference.tag_name_only(reference.parse_normalized_named(name))
        if str(ref) not in out:
            out.append(str(ref))
    return out
