"""Push to and pull from a real registry (Debian's docker-registry on 127.0.0.1), anonymous flavour.

Round trips keep the image ID; a manifest list resolves to the wanted platform; a tampered blob is
refused by digest; an interrupted pull leaves no image, no layer and no temp file behind.
"""

import asyncio
import hashlib
import json
import os
import subprocess
import sys

import aiohttp
import pytest
import registry_fixture
from registry_fixture import make_image

from minibuild.distribution import MessageCollector, Platform, PullNotFoundError, RegistryService
from minibuild.distribution.client import Descriptor
from minibuild.distribution.errors import DistributionError
from minibuild.distribution.images import pull_image, push_image
from minibuild.distribution.manifest import PlatformManifest, build_manifest_list
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

registry = registry_fixture.registry  # the fixture, imported explicitly

BASE = {"etc/os-release": b"NAME=minibuild\n", "bin/hello": b"#!/bin/sh\necho hello\n"}
APP = {"app/main.txt": b"the application\n" * 100}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def env(tmp_path):
    """A source daemon (registry service + stores) and a fresh destination one."""
    return {
        "src": (RegistryService(tmp_path / "src" / "distribution"), ImageService(tmp_path / "src")),
        "dst": (RegistryService(tmp_path / "dst" / "distribution"), ImageService(tmp_path / "dst")),
    }


def tag(stores, name, image_id):
    stores.add_reference(parse_normalized_named(name), image_id)


def test_push_then_pull_into_a_fresh_store_gives_the_same_image(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE, APP])
    name = f"{registry.host}/team/app:v1"
    tag(src, name, image_id)

    pushed = MessageCollector()
    [result] = run(push_image(src_service, src, name, progress=pushed))
    layer_ids = [d.removeprefix("sha256:")[:12] for d in src.image_store.get(image_id).diff_ids]
    statuses = pushed.statuses()
    assert statuses[:3] == [
        ("", f"The push refers to repository [{registry.host}/team/app]"),
        (layer_ids[1], "Preparing"),
        (layer_ids[0], "Preparing"),
    ]
    assert statuses[-2:] == [("", f"v1: digest: {result.digest} size: {result.size}"), ("", "")]
    # The layers upload at once: each one's Pushing comes before its Pushed, in whatever interleaving.
    for layer in layer_ids:
        own = [status for i, status in statuses[3:-2] if i == layer]
        assert own[0] == "Pushing" and own[-1] == "Pushed" and set(own) == {"Pushing", "Pushed"}
    assert {i for i, _ in statuses[3:-2]} == set(layer_ids)
    assert sorted(s for s in pushed.statuses() if s[1] == "Pushed") == sorted(
        (i, "Pushed") for i in layer_ids
    )
    assert pushed.messages[-1] == {
        "progressDetail": {},
        "aux": {"Tag": "v1", "Digest": result.digest, "Size": result.size},
    }

    pulled = MessageCollector()
    assert run(pull_image(dst_service, dst, name, progress=pulled)) == image_id
    assert dst.image_store.get(image_id).raw == src.image_store.get(image_id).raw
    assert [layer.diff_id for layer in dst.layer_store.chain(dst.image_store.get(image_id).chain_id)] == (
        src.image_store.get(image_id).diff_ids
    )
    statuses = pulled.statuses()
    assert statuses[0] == ("v1", "Pulling from team/app")
    assert statuses[-2:] == [
        ("", f"Digest: {result.digest}"),
        ("", f"Status: Downloaded newer image for {name}"),
    ]
    for blob_id in {i for i, s in statuses if s == "Pull complete"}:
        mine = [s for i, s in statuses if i == blob_id and s not in ("Downloading", "Extracting")]
        assert mine == ["Pulling fs layer", "Verifying Checksum", "Download complete", "Pull complete"]
    assert len({i for i, s in statuses if s == "Pull complete"}) == 2
    # The tag and the digest reference (RepoDigests) both point at the image.
    assert dst.get_reference(parse_normalized_named(name)) == image_id
    digest_ref = parse_normalized_named(f"{registry.host}/team/app@{result.digest}")
    assert dst.get_reference(digest_ref) == image_id


def test_second_pull_is_up_to_date_and_fetches_nothing(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    name = f"{registry.host}/app:latest"
    tag(src, name, make_image(src, [BASE]))
    run(push_image(src_service, src, name))
    run(pull_image(dst_service, dst, name))
    again = MessageCollector()
    run(pull_image(dst_service, dst, name, progress=again))
    assert [s for _, s in again.statuses()][-1] == f"Status: Image is up to date for {name}"
    assert not [s for _, s in again.statuses() if s in ("Pulling fs layer", "Downloading")]


def test_layers_already_in_the_store_are_not_fetched_again(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    tag(src, f"{registry.host}/base:1", make_image(src, [BASE]))
    tag(src, f"{registry.host}/app:1", make_image(src, [BASE, APP]))
    run(push_image(src_service, src, f"{registry.host}/base:1"))
    run(push_image(src_service, src, f"{registry.host}/app:1"))
    run(pull_image(dst_service, dst, f"{registry.host}/base:1"))
    out = MessageCollector()
    run(pull_image(dst_service, dst, f"{registry.host}/app:1", progress=out))
    statuses = [s for _, s in out.statuses()]
    assert statuses.count("Already exists") == 1
    assert statuses.count("Pull complete") == 1


def test_second_push_reports_layers_already_exist(registry, env):
    src_service, src = env["src"]
    name = f"{registry.host}/again:v1"
    tag(src, name, make_image(src, [BASE, APP]))
    first = run(push_image(src_service, src, name))
    out = MessageCollector()
    second = run(push_image(src_service, src, name, progress=out))
    assert second == first
    assert [s for _, s in out.statuses()].count("Layer already exists") == 2
    assert "Pushing" not in [s for _, s in out.statuses()]


def test_chunked_and_monolithic_uploads_give_the_same_manifest(registry, env, tmp_path):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE, {"big": os.urandom(300_000)}])
    tag(src, f"{registry.host}/mono:v1", image_id)
    tag(src, f"{registry.host}/chunked:v1", image_id)
    [mono] = run(push_image(src_service, src, f"{registry.host}/mono:v1"))
    [chunked] = run(push_image(src_service, src, f"{registry.host}/chunked:v1", chunk_size=64 * 1024))
    assert mono.digest == chunked.digest
    assert run(pull_image(dst_service, dst, f"{registry.host}/chunked:v1")) == image_id


def test_pull_all_tags_of_a_bare_name(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    one, two = make_image(src, [BASE]), make_image(src, [BASE, APP])
    tag(src, f"{registry.host}/multi:one", one)
    tag(src, f"{registry.host}/multi:two", two)
    run(push_image(src_service, src, f"{registry.host}/multi"))  # a bare name pushes every tag
    run(pull_image(dst_service, dst, f"{registry.host}/multi"))
    assert dst.get_reference(parse_normalized_named(f"{registry.host}/multi:one")) == one
    assert dst.get_reference(parse_normalized_named(f"{registry.host}/multi:two")) == two


def push_manifest_list(registry, service, stores):
    """Push an amd64 and an arm64 image, then a manifest list naming both (by hand, as `docker manifest`)."""
    amd64 = make_image(stores, [{"arch": b"amd64\n"}], architecture="amd64")
    arm64 = make_image(stores, [{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
    tag(stores, f"{registry.host}/multiarch:amd64", amd64)
    tag(stores, f"{registry.host}/multiarch:arm64", arm64)
    [amd64_push] = run(push_image(service, stores, f"{registry.host}/multiarch:amd64"))
    [arm64_push] = run(push_image(service, stores, f"{registry.host}/multiarch:arm64"))
    media_type = "application/vnd.docker.distribution.manifest.v2+json"
    manifest_list = build_manifest_list(
        [
            PlatformManifest(
                Descriptor(media_type, amd64_push.digest, amd64_push.size), Platform("linux", "amd64")
            ),
            PlatformManifest(
                Descriptor(media_type, arm64_push.digest, arm64_push.size), Platform("linux", "arm64", "v8")
            ),
        ]
    )

    async def put():
        async with aiohttp.ClientSession() as session:
            url = f"{registry.url}/v2/multiarch/manifests/latest"
            headers = {"Content-Type": "application/vnd.docker.distribution.manifest.list.v2+json"}
            async with session.put(url, data=manifest_list, headers=headers) as resp:
                assert resp.status == 201, await resp.text()

    run(put())
    return amd64, arm64, "sha256:" + hashlib.sha256(manifest_list).hexdigest()


def test_manifest_list_resolves_to_the_requested_platform(registry, env, tmp_path):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    amd64, arm64, list_digest = push_manifest_list(registry, src_service, src)
    name = f"{registry.host}/multiarch:latest"
    out = MessageCollector()
    assert run(pull_image(dst_service, dst, name, platform=Platform("linux", "arm64"), progress=out)) == arm64
    assert ("", f"Digest: {list_digest}") in out.statuses()  # the list's digest, as Docker reports it
    other = ImageService(tmp_path / "other")
    assert run(pull_image(dst_service, other, name, platform=Platform("linux", "x86_64"))) == amd64


def test_manifest_list_without_the_platform_is_refused(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    push_manifest_list(registry, src_service, src)
    with pytest.raises(DistributionError) as err:
        run(pull_image(dst_service, dst, f"{registry.host}/multiarch", platform=Platform("linux", "s390x")))
    assert str(err.value) == "no matching manifest for linux/s390x in the manifest list entries"


def assert_nothing_stored(service, stores):
    assert len(stores.image_store) == 0
    assert stores.layer_store.layers() == []
    assert list(service.tmp_dir.iterdir()) == []


def test_tampered_blob_is_refused_by_digest_and_nothing_is_stored(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE, APP])
    name = f"{registry.host}/tampered:v1"
    tag(src, name, image_id)
    run(push_image(src_service, src, name))
    metadata = src_service.metadata.get_metadata(src.image_store.get(image_id).diff_ids[1])
    blob = registry.blob_path(metadata[0].digest)
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF  # same size, different bytes: only the digest can tell
    blob.write_bytes(bytes(data))
    with pytest.raises(DistributionError) as err:
        run(pull_image(dst_service, dst, name))
    assert str(err.value) == f"filesystem layer verification failed for digest {metadata[0].digest}"
    assert_nothing_stored(dst_service, dst)


def test_tampered_config_is_refused(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE])
    name = f"{registry.host}/badconfig:v1"
    tag(src, name, image_id)
    run(push_image(src_service, src, name))
    config = registry.blob_path(image_id)
    config.write_bytes(config.read_bytes().replace(b'"sh"', b'"zz"'))
    with pytest.raises(DistributionError, match=f"image config verification failed for digest {image_id}"):
        run(pull_image(dst_service, dst, name))
    assert_nothing_stored(dst_service, dst)


def test_cancelled_pull_leaves_nothing_half_stored(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    name = f"{registry.host}/big:v1"
    tag(src, name, make_image(src, [BASE, {"big": os.urandom(6 << 20)}, {"more": os.urandom(1 << 20)}]))
    run(push_image(src_service, src, name))

    async def pull_and_cancel():
        task = None

        def on_message(msg):  # cancel once the base is stored and the big layer is on its way
            if msg.get("status") == "Pull complete" and not task.cancelling():
                task.cancel()

        task = asyncio.ensure_future(
            pull_image(dst_service, dst, name, progress=MessageCollector(on_message))
        )
        with pytest.raises(asyncio.CancelledError):
            await task

    run(pull_and_cancel())
    assert_nothing_stored(dst_service, dst)
    reopened = ImageService(dst.root)  # and nothing reappears from disk
    assert reopened.layer_store.layers() == [] and len(reopened.image_store) == 0


def test_truncated_blob_fails_cleanly(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    name = f"{registry.host}/truncated:v1"
    tag(src, name, make_image(src, [BASE, {"big": os.urandom(8 << 20)}]))
    run(push_image(src_service, src, name))
    blob = next(p for p in registry.storage.rglob("data") if p.stat().st_size > 4 << 20)
    blob.write_bytes(blob.read_bytes()[: 2 << 20])  # the registry now sends a quarter of the layer
    with pytest.raises(DistributionError, match="^filesystem layer verification failed for digest sha256:"):
        run(pull_image(dst_service, dst, name))
    assert_nothing_stored(dst_service, dst)


def test_missing_image_and_repository_messages(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    tag(src, f"{registry.host}/present:v1", make_image(src, [BASE]))
    run(push_image(src_service, src, f"{registry.host}/present:v1"))
    with pytest.raises(PullNotFoundError) as err:
        run(pull_image(dst_service, dst, f"{registry.host}/present:v2"))
    assert str(err.value) == (
        f"manifest for {registry.host}/present:v2 not found: manifest unknown: manifest unknown"
    )
    assert err.value.status_code == 404


def test_unreachable_registry_reads_like_docker(env):
    dst_service, dst = env["dst"]
    with pytest.raises(DistributionError) as err:
        run(pull_image(dst_service, dst, "localhost:1/x:v1"))
    assert str(err.value) == 'Get "http://localhost:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'


def test_push_errors(registry, env):
    src_service, src = env["src"]
    with pytest.raises(DistributionError, match="An image does not exist locally with the tag: "):
        run(push_image(src_service, src, f"{registry.host}/nothing:v1"))
    tag(src, f"{registry.host}/some:v1", make_image(src, [BASE]))
    with pytest.raises(DistributionError, match=f"tag does not exist: {registry.host}/some:v2"):
        run(push_image(src_service, src, f"{registry.host}/some:v2"))


def test_pushed_manifest_is_docker_schema2(registry, env):
    src_service, src = env["src"]
    image_id = make_image(src, [BASE])
    tag(src, f"{registry.host}/schema:v1", image_id)
    [result] = run(push_image(src_service, src, f"{registry.host}/schema:v1"))
    manifest_file = registry.blob_path(result.digest)
    manifest = json.loads(manifest_file.read_bytes())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": len(src.image_store.get(image_id).raw),
        "digest": image_id,
    }
    assert manifest_file.read_bytes().startswith(b'{\n   "schemaVersion": 2,\n   "mediaType"')


def test_downloads_and_uploads_beyond_the_concurrency_limit_wait(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    name = f"{registry.host}/layered:v1"
    image_id = make_image(src, [{f"file{i}": os.urandom(200_000)} for i in range(7)])
    tag(src, name, image_id)
    pushed = MessageCollector()
    run(push_image(src_service, src, name, progress=pushed))
    assert [s for _, s in pushed.statuses()].count("Waiting") == 2  # 7 layers, 5 uploads at a time
    pulled = MessageCollector()
    assert run(pull_image(dst_service, dst, name, progress=pulled)) == image_id
    assert [s for _, s in pulled.statuses()].count("Waiting") == 4  # 7 layers, 3 downloads at a time


def test_oci_manifest_and_index_pull(registry, env):
    """An image pushed in OCI form (as BuildKit and other tools push) pulls to the same image."""
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE, APP])
    tag(src, f"{registry.host}/oci:docker", image_id)
    [pushed] = run(push_image(src_service, src, f"{registry.host}/oci:docker"))
    docker_manifest = json.loads(registry.blob_path(pushed.digest).read_bytes())
    oci_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {**docker_manifest["config"], "mediaType": "application/vnd.oci.image.config.v1+json"},
            "layers": [
                {**layer, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
                for layer in docker_manifest["layers"]
            ],
        }
    ).encode()
    oci_digest = put_manifest(
        registry, "oci", "oci-manifest", oci_manifest, "application/vnd.oci.image.manifest.v1+json"
    )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": oci_digest,
                    "size": len(oci_manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    put_manifest(registry, "oci", "oci-index", index, "application/vnd.oci.image.index.v1+json")
    assert run(pull_image(dst_service, dst, f"{registry.host}/oci:oci-manifest")) == image_id
    other = ImageService(dst.root.parent / "other")
    got = run(
        pull_image(dst_service, other, f"{registry.host}/oci:oci-index", platform=Platform("linux", "amd64"))
    )
    assert got == image_id


def test_pull_by_digest(registry, env):
    (src_service, src), (dst_service, dst) = env["src"], env["dst"]
    image_id = make_image(src, [BASE])
    tag(src, f"{registry.host}/bydigest:v1", image_id)
    [pushed] = run(push_image(src_service, src, f"{registry.host}/bydigest:v1"))
    name = f"{registry.host}/bydigest@{pushed.digest}"
    out = MessageCollector()
    assert run(pull_image(dst_service, dst, name, progress=out)) == image_id
    assert out.statuses()[0] == (pushed.digest, "Pulling from bydigest")
    assert out.statuses()[-1] == ("", f"Status: Downloaded newer image for {name}")
    assert dst.get_reference(parse_normalized_named(name)) == image_id
    wrong = f"{registry.host}/bydigest@sha256:{'0' * 64}"
    with pytest.raises(PullNotFoundError, match="manifest unknown"):
        run(pull_image(dst_service, dst, wrong))


def put_manifest(registry, repository, reference, body, media_type):
    async def put():
        async with aiohttp.ClientSession() as session:
            url = f"{registry.url}/v2/{repository}/manifests/{reference}"
            async with session.put(url, data=body, headers={"Content-Type": media_type}) as resp:
                assert resp.status == 201, await resp.text()
                return resp.headers["Docker-Content-Digest"]

    return run(put())


CRASHING_PULL = """
import asyncio, os, sys
from pathlib import Path
from minibuild.distribution import MessageCollector, RegistryService
from minibuild.distribution.images import pull_image
from minibuild.image.service import ImageService

root = Path(sys.argv[1])

def crash_after_first_layer(message):
    if message.get("status") == "Pull complete":
        os._exit(137)  # a daemon killed mid-pull: no cleanup code runs

asyncio.run(pull_image(RegistryService(root / "distribution"), ImageService(root), sys.argv[2],
                       progress=MessageCollector(crash_after_first_layer)))
"""


def test_daemon_killed_mid_pull_leaves_nothing_after_restart(registry, env, tmp_path):
    src_service, src = env["src"]
    name = f"{registry.host}/crash:v1"
    tag(src, name, make_image(src, [BASE, {"big": os.urandom(6 << 20)}, {"more": os.urandom(1 << 20)}]))
    run(push_image(src_service, src, name))
    root = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", CRASHING_PULL, str(root), name], capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()
    assert any((root / "layerdb").rglob("layer.tar"))  # the first layer did land before the crash
    service = RegistryService(root / "distribution")  # the daemon starts again
    images = ImageService(root)
    assert_nothing_stored(service, images)
