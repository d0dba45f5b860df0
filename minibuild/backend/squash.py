"""`squash`: the layers a build added since its base image, merged into one (moby
daemon/images/image_squash.go SquashImage).

The new image keeps the built image's config and its whole history; history entries above the base
become empty-layer entries, and one more entry (`merge <id> to <parent>`) stands for the merged layer.
The merged layer is the difference between the built image's tree and its base's, computed like any
step's diff, so files added then deleted by the build leave nothing behind.
"""

import copy
import secrets
import tempfile
from typing import BinaryIO

from minibuild import errdefs
from minibuild.archive.changes import changes_dirs, export_changes
from minibuild.builder import BuildComponents, created_ns
from minibuild.image.image import Image, format_time
from minibuild.snapshot import Snapshot


def squash_image(components: BuildComponents, image_id: str, parent_id: str, epoch: int | None) -> str:
    """A new image: `parent_id`'s layers plus one layer with everything `image_id` added on top."""
    service = components.image_service
    image = service.image_store.get(image_id)
    parent: Image | None = None
    if parent_id:
        try:
            parent = service.image_store.get(parent_id)
        except errdefs.NotFound as err:
            raise errdefs.System(f"error getting specified parent layer: {err.message}") from None
    with tempfile.TemporaryFile(dir=components.tmp_dir) as tar:
        tar_stream_from(components, image, parent, tar, epoch)
        tar.seek(0)
        config = copy.deepcopy(image.config)
        parent_history = parent.history if parent is not None else []
        history = [dict(entry) for entry in image.history]
        for entry in history[len(parent_history) :]:
            entry["empty_layer"] = True
        now = format_time(created_ns(epoch))
        comment = f"merge {image_id} to {parent_id}" if parent_id else f"create new from {image_id}"
        config["history"] = [*history, {"created": now, "comment": comment}]
        config["created"] = now
        config["rootfs"] = {"type": "layers", "diff_ids": parent.diff_ids if parent is not None else []}
        try:
            return service.create_image(config, layers=[tar], parent_id=parent_id or None)
        except errdefs.DockerError as err:
            raise errdefs.System(f"error creating new image after squash: {err.message}") from None


def tar_stream_from(
    components: BuildComponents, image: Image, parent: Image | None, out: BinaryIO, epoch: int | None
) -> None:
    """Write the diff from `parent`'s tree to `image`'s tree as a layer tar (layer.TarStreamFrom)."""
    snapshotter = components.snapshotter
    top = _prepare(components, image)
    try:
        bottom = _prepare(components, parent)
        try:
            with snapshotter.mounted(top) as new, snapshotter.mounted(bottom) as old:
                changes = changes_dirs(new, old)
                export_changes(new, changes, out, source_date_epoch=epoch, host_root=snapshotter.host_root)
        finally:
            snapshotter.remove(bottom)
    finally:
        snapshotter.remove(top)


def _prepare(components: BuildComponents, image: Image | None) -> Snapshot:
    chain = []
    if image is not None and image.chain_id is not None:
        chain = components.image_service.layer_store.chain(image.chain_id)
    return components.snapshotter.prepare(secrets.token_hex(32), chain)
