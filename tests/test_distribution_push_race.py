"""A push that fails while another layer is still being compressed (a real registry on 127.0.0.1).

The compression runs in a worker thread that writes into the push's temp directory. When the push
gives up, that thread must be stopped and waited for before the directory is removed: a thread left
running would write into a directory being deleted (`[Errno 39] Directory not empty`) or a deleted
one. The test holds the compressing thread with an event, so the bad interleaving happens every time.
"""

import asyncio
import threading

import pytest
import registry_fixture
from registry_fixture import make_image

from minibuild.distribution import RegistryService
from minibuild.distribution import push as push_module
from minibuild.distribution.client import Repository
from minibuild.distribution.config import ServiceConfig
from minibuild.distribution.errors import DistributionError
from minibuild.distribution.images import push_image
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

registry = registry_fixture.registry  # the fixture, imported explicitly

BASE = {"etc/os-release": b"NAME=minibuild\n"}
APP = {"app/main.txt": b"the application\n" * 100}


def test_a_failed_push_stops_and_waits_for_the_compressing_thread(registry, tmp_path, monkeypatch):
    service = RegistryService(tmp_path / "distribution", ServiceConfig(retry_tick=0))  # retried at once
    images = ImageService(tmp_path)
    image_id = make_image(images, [BASE, APP])
    held_diff_id = images.image_store.get(image_id).diff_ids[0]  # BASE: held while APP's upload fails
    name = f"{registry.host}/race/app:v1"
    images.add_reference(parse_normalized_named(name), image_id)

    entered, released, finished = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}
    real_gzip = push_module._gzip_layer

    def held_gzip(layer, path, *rest):
        if layer.diff_id != held_diff_id:
            return real_gzip(layer, path, *rest)
        try:
            entered.set()
            # The push tells its thread to stop through the event it passes; a push without one
            # (that abandons its threads) only lets it go once it has returned, below.
            (rest[0] if rest else released).wait()
            return real_gzip(layer, path, *rest)
        except BaseException as err:
            seen["error"] = err
            raise
        finally:
            finished.set()

    async def failing_upload(self, *args, **kwargs):
        await asyncio.to_thread(entered.wait)  # fail only once BASE is being compressed
        raise DistributionError("upload refused on purpose")

    async def push_then_let_go() -> None:
        try:
            await push_image(service, images, name)
        finally:
            seen["finished when the push returned"] = finished.is_set()
            released.set()  # lets an abandoned thread go, so the event loop can shut down

    monkeypatch.setattr(push_module, "_gzip_layer", held_gzip)
    monkeypatch.setattr(Repository, "upload_blob", failing_upload)
    with pytest.raises(DistributionError, match="upload refused on purpose"):
        asyncio.run(push_then_let_go())
    assert finished.wait(60)  # a guard against a hang, not a time limit
    assert seen["finished when the push returned"] is True
    assert not isinstance(seen.get("error"), OSError), seen.get("error")  # it never wrote into a removed dir
    assert list(service.tmp_dir.iterdir()) == []
