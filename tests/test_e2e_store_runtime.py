"""The store and the runtime end to end, as a library: no builder, no daemon.

Import busybox, run `echo hi > /f` in a step, commit the step's layer, run `cat /f` in the next step and
read `hi` back, save the image, load it into a fresh data root and get the same ID; then run `cat /f`
on the loaded image's layers, too. Once with each snapshotter.
"""

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from minibuild.image.busybox import create_busybox_image
from minibuild.image.service import ImageService
from minibuild.runtime import ProcessSpec, run
from minibuild.snapshot import NaiveSnapshotter, OverlaySnapshotter, Snapshot, Snapshotter, overlay_supported

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
EPOCH = 0  # SOURCE_DATE_EPOCH: the same layers and IDs on every run


def snapshotter_of(kind: str, root: Path) -> Snapshotter:
    if kind == "naive":
        return NaiveSnapshotter(root)
    if not overlay_supported(root.parent):
        pytest.skip("overlayfs cannot be mounted here")
    return OverlaySnapshotter(root)


def run_step(snapshot: Snapshot, script: str) -> tuple[int, str, str]:
    """`/bin/sh -c script` on the snapshot, as a RUN step runs it: (exit code, stdout, stderr)."""
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    spec = ProcessSpec(args=["/bin/sh", "-c", script])  # PATH and HOSTNAME come from the runtime
    code = asyncio.run(
        run(snapshot.rootfs, spec, mounts=snapshot.mounts, on_stdout=stdout.append, on_stderr=stderr.append)
    )
    return code, b"".join(stdout).decode(), b"".join(stderr).decode()


def commit(service: ImageService, parent_id: str, layer_tar: Path, created_by: str) -> str:
    """The parent's config with one more layer and one more history entry (what a builder commits)."""
    config = json.loads(service.get_image_config(parent_id))
    config["created"] = "1970-01-01T00:00:00Z"
    config["history"].append({"created": "1970-01-01T00:00:00Z", "created_by": created_by})
    return service.create_image(config, layers=[layer_tar], parent_id=parent_id)


@pytest.mark.parametrize("kind", ["overlay", "naive"])
def test_run_commit_run_save_load_gives_the_same_image(tmp_path, kind):
    service = ImageService(tmp_path / "root")
    busybox_id = create_busybox_image(service, "busybox:latest", source_date_epoch=EPOCH)
    busybox = service.get_image(busybox_id)
    snapshotter = snapshotter_of(kind, tmp_path / "snapshots")

    first = snapshotter.prepare("step-1", service.layer_store.chain(busybox.chain_id))
    try:
        assert run_step(first, "echo hi > /f") == (0, "", "")
        layer_tar = tmp_path / "step-1.tar"
        with open(layer_tar, "wb") as out:
            snapshotter.diff(first, out, source_date_epoch=EPOCH)
    finally:
        snapshotter.remove(first)
    image_id = commit(service, busybox_id, layer_tar, "/bin/sh -c echo hi > /f")
    image = service.get_image(image_id)
    assert image.diff_ids[:-1] == busybox.diff_ids and len(image.diff_ids) == len(busybox.diff_ids) + 1

    second = snapshotter.prepare("step-2", service.layer_store.chain(image.chain_id))
    try:
        assert run_step(second, "cat /f") == (0, "hi\n", "")
    finally:
        snapshotter.remove(second)

    service.tag(image_id, "e2e", "v1")
    archive = io.BytesIO()
    service.save(["e2e:v1"], archive)
    fresh = ImageService(tmp_path / "fresh")
    said: list[str] = []
    assert fresh.load(io.BytesIO(archive.getvalue()), on_stream=said.append) == [image_id]
    assert said == ["Loaded image: e2e:v1\n"]
    loaded = fresh.get_image("e2e:v1")
    assert (loaded.id, loaded.diff_ids) == (image_id, image.diff_ids)

    again = snapshotter_of(kind, tmp_path / "fresh-snapshots")
    third = again.prepare("step-3", fresh.layer_store.chain(loaded.chain_id))
    try:
        assert run_step(third, "cat /f") == (0, "hi\n", "")
    finally:
        again.remove(third)
