"""Builds that need a registry, through both builders (version 1, the classic one; version 2, the
BuildKit-style one), against a real registry (tests/registry_fixture.py): FROM and COPY --from of images
only the registry has, with the credentials X-Registry-Config carries; `pull=1`; a manifest list resolved
to the build's platform; and an image built by minibuild, pushed, then pulled into a fresh data root."""

import asyncio
import io

import aiohttp
import pytest
import registry_fixture
from registry_fixture import USERNAME, make_image
from test_next_harness import NextBench, needs_root

from minibuild import errdefs
from minibuild.api.platforms import Platform
from minibuild.builder.next.progressui import PlainPrinter
from minibuild.distribution import AuthConfig, RegistryService
from minibuild.distribution.client import Descriptor
from minibuild.distribution.manifest import (
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MANIFEST_LIST,
    PlatformManifest,
    build_manifest_list,
)
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

pytestmark = [pytest.mark.root, needs_root]
registry, token_registry, token_keys = (  # the fixtures, imported explicitly
    registry_fixture.registry,
    registry_fixture.token_registry,
    registry_fixture.token_keys,
)
BUILDERS = pytest.mark.parametrize("version", ["1", "2"], ids=["classic", "buildkit"])
V2_PREFIX = "failed to solve with frontend dockerfile.v0: failed to create LLB definition: "


def credentials(running) -> dict[str, AuthConfig]:
    """X-Registry-Config as the CLI sends it: the config file's auths, keyed by registry."""
    return {running.host: AuthConfig(username=USERNAME, password=running.password)}


def push(bench: NextBench, name: str, auth: AuthConfig | None = None) -> None:
    asyncio.run(bench.components.registry.push(bench.service, name, auth=auth))


def publish(tmp_path, running, name: str, content: str) -> None:
    """An image built by minibuild (busybox plus /origin.txt), pushed to the registry as `name`."""
    source = NextBench(tmp_path / f"source-{content}")
    dockerfile = f"FROM busybox:local\nRUN echo {content} > /origin.txt\n"
    source.build(dockerfile, version="1", tags=[name]).ok()
    auth = credentials(running)[running.host] if running.auth != "none" else None
    push(source, name, auth)


def origin(bench: NextBench, image_id: str, tmp_path) -> str:
    return (bench.tree(image_id, tmp_path / f"tree-{image_id[7:19]}") / "origin.txt").read_text()


@BUILDERS
def test_from_needs_the_credentials_of_x_registry_config(token_registry, tmp_path, version):
    name = f"{token_registry.host}/private/base:v1"
    publish(tmp_path, token_registry, name, "from-the-registry")
    bench = NextBench(tmp_path / "fresh", busybox=False)
    dockerfile = f"FROM {name}\nCOPY --from={name} /origin.txt /again.txt\nENV BUILT=1\n"

    refused = bench.build(dockerfile, version=version)
    message = (
        f"pull access denied for {token_registry.host}/private/base, repository does not exist or may "
        "require 'docker login': denied: requested access to the resource is denied"
    )
    assert str(refused.error) == (message if version == "1" else V2_PREFIX + message)

    built = bench.build(dockerfile, version=version, auth_configs=credentials(token_registry))
    image_id = built.ok()
    tree = bench.tree(image_id, tmp_path / "tree")
    assert (tree / "origin.txt").read_text() == (tree / "again.txt").read_text() == "from-the-registry\n"
    assert {r["account"] for r in token_registry.token_server.requests} == {"", USERNAME}


@BUILDERS
def test_copy_from_an_image_only_the_registry_has(registry, tmp_path, version):
    name = f"{registry.host}/golden/files:v1"
    publish(tmp_path, registry, name, "copied-from-the-registry")
    bench = NextBench(tmp_path / "fresh")
    built = bench.build(f"FROM busybox:local\nCOPY --from={name} /origin.txt /copied.txt\n", version=version)
    tree = bench.tree(built.ok(), tmp_path / "tree")
    assert (tree / "copied.txt").read_text() == "copied-from-the-registry\n"


@BUILDERS
def test_a_missing_image_reads_as_docker_says(registry, tmp_path, version):
    bench = NextBench(tmp_path / "root", busybox=False)
    missing = f"{registry.host}/nothing/here:v1"
    message = f"manifest for {missing} not found: manifest unknown: manifest unknown"
    built = bench.build(f"FROM {missing}\n", version=version)
    assert str(built.error) == (message if version == "1" else V2_PREFIX + message)
    # COPY --from: the classic builder names the flag; BuildKit's image source fails its cache key.
    built = bench.build(f"FROM scratch\nCOPY --from={missing} /a /a\n", version=version)
    prefix = f"invalid from flag value {missing}: " if version == "1" else "failed to load cache key: "
    assert str(built.error) == prefix + message


@BUILDERS
def test_pull_1_fetches_the_registry_image_over_a_local_one(registry, tmp_path, version):
    name = f"{registry.host}/golden/base:v1"
    publish(tmp_path, registry, name, "registry")
    bench = NextBench(tmp_path / "fresh")
    bench.build("FROM busybox:local\nRUN echo local > /origin.txt\n", version="1", tags=[name]).ok()
    dockerfile = f"FROM {name}\nENV PULLED=1\n"
    local = bench.build(dockerfile, version=version).ok()
    assert origin(bench, local, tmp_path) == "local\n"  # present: not pulled
    pulled = bench.build(dockerfile, version=version, pull_parent=True).ok()
    assert origin(bench, pulled, tmp_path) == "registry\n"


def push_manifest_list(running, tmp_path) -> str:
    """An amd64 and an arm64 image (a file naming their architecture), and a manifest list of both, put
    by hand as `docker manifest push` does."""
    service = RegistryService(tmp_path / "lists" / "distribution")
    images = ImageService(tmp_path / "lists")
    entries = []
    for platform in (Platform("linux", "amd64"), Platform("linux", "arm64", "v8")):
        arch = platform.architecture
        image_id = make_image(
            images, [{"arch.txt": f"{arch}\n".encode()}], architecture=arch, variant=platform.variant
        )
        tag = f"{running.host}/multiarch:{arch}"
        images.add_reference(parse_normalized_named(tag), image_id)
        [pushed] = asyncio.run(service.push(images, tag))
        entries.append(
            PlatformManifest(Descriptor(MEDIA_TYPE_MANIFEST, pushed.digest, pushed.size), platform)
        )

    async def put(body: bytes) -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{running.url}/v2/multiarch/manifests/latest"
            headers = {"Content-Type": MEDIA_TYPE_MANIFEST_LIST}
            async with session.put(url, data=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()

    asyncio.run(put(build_manifest_list(entries)))
    return f"{running.host}/multiarch:latest"


@BUILDERS
@pytest.mark.parametrize("platform", ["linux/arm64", "linux/amd64"])
def test_a_manifest_list_gives_the_builds_platform(registry, tmp_path, version, platform):
    name = push_manifest_list(registry, tmp_path)
    bench = NextBench(tmp_path / "fresh", busybox=False)
    image_id = bench.build(f"FROM {name}\nLABEL picked=1\n", version=version, platform=platform).ok()
    arch = platform.split("/")[1]
    assert (bench.tree(image_id, tmp_path / "tree") / "arch.txt").read_text() == f"{arch}\n"
    assert bench.config(image_id)["architecture"] == arch


@BUILDERS
def test_an_image_built_here_pushed_and_pulled_into_a_fresh_root_keeps_its_id(registry, tmp_path, version):
    bench = NextBench(tmp_path / "builder")
    name = f"{registry.host}/built/by-minibuild:v{version}"
    dockerfile = "FROM busybox:local\nRUN echo built > /built.txt\nENV X=1\nCOPY f.txt /f.txt\n"
    image_id = bench.build(dockerfile, {"f.txt": b"file\n"}, version=version, tags=[name]).ok()
    push(bench, name)
    fresh = ImageService(tmp_path / "fresh")
    pulled = asyncio.run(RegistryService(tmp_path / "fresh" / "distribution").pull(fresh, name))
    assert pulled == image_id
    assert fresh.get_image(name).id == image_id


def test_the_buildkit_style_builder_shows_the_pull_as_the_from_vertex(registry, tmp_path):
    name = f"{registry.host}/golden/base:v1"
    publish(tmp_path, registry, name, "registry")
    bench = NextBench(tmp_path / "fresh", busybox=False)
    built = bench.build(f"FROM {name}\nRUN cat /origin.txt\n")
    built.ok()
    [from_name] = [n for n in built.vertices if n.startswith("[1/2] FROM ")]
    assert from_name.startswith(f"[1/2] FROM {name}@sha256:")  # pinned to what the tag resolved to
    assert built.ran(from_name) and f"[internal] load metadata for {name}" in built.vertices
    vertex = built.vertices[from_name].digest
    statuses = {}
    for sr in built.traces:
        for s in sr.statuses:
            if s.vertex == vertex:
                statuses[s.id] = s  # the last update of each
    assert f"resolve {from_name.removeprefix('[1/2] FROM ')}" in statuses
    blobs = [s for i, s in statuses.items() if i.startswith("sha256:")]  # busybox's layer, the RUN's
    assert len(blobs) == 2 and all(s.current == s.total > 0 and s.completed for s in blobs)
    assert {f"extracting {s.id}" for s in blobs} <= set(statuses)
    assert all(statuses[f"extracting {s.id}"].completed for s in blobs)
    with pytest.raises(errdefs.NotFound):  # pulled into the build cache, not the image store
        bench.service.get_image(name)

    out = io.StringIO()
    printer = PlainPrinter(out)
    for sr in built.traces:
        printer.write(sr)
    text = out.getvalue()
    for s in blobs:
        assert f" {s.id} " in text and " done\n" in text
    assert f"extracting {blobs[0].id}" in text

    # Again, with another step on it: the layers are in the build cache under the image's key, so the
    # FROM vertex is a cache hit and nothing is pulled.
    again = bench.build(f"FROM {name}\nRUN cat /origin.txt && echo again\n")
    again.ok()
    assert again.cached(from_name)
    assert not any(s.vertex == again.vertices[from_name].digest for sr in again.traces for s in sr.statuses)
