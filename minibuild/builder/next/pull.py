"""Base images from a registry for the BuildKit-style builder (moby builder/builder-next/adapters/
containerimage/pull.go: resolveRemote, ResolveImageConfig and the puller's Snapshot; buildkit
util/imageutil/config.go Config).

As BuildKit does it, a registry image is met twice:

1. `resolve_image_config` (`[internal] load metadata for …`): the tag resolves to a manifest digest, a
   manifest list to the build's platform, and the image config is fetched — no layer yet. The frontend
   pins `FROM` to that digest (`FROM docker.io/library/busybox:latest@sha256:…`).
2. `pull_into_cache`, run by the FROM vertex when its result is not cached: the layers are downloaded
   into the build cache's layer store (not the image store: like BuildKit's, the pulled image is no
   `docker images` entry), their transfer shown as the vertex's statuses — `resolve <ref>`, one per
   layer blob (`sha256:…` with bytes current / total), `extracting sha256:…`.

The transfer itself is minibuild.distribution's pull (endpoints, auth, verified digests, Docker's
errors); this module only points it at the cache and turns its progress into vertex statuses.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from minibuild.api.platforms import Platform
from minibuild.api.streamformatter import Progress
from minibuild.builder.next.cache import JobCache, Ref
from minibuild.distribution import AuthConfig, RegistryService
from minibuild.distribution.errors import DistributionError, translate_pull_error
from minibuild.distribution.manifest import (
    ACCEPT_MEDIA_TYPES,
    Manifest,
    ManifestList,
    check_config_media_type,
    parse_manifest,
)
from minibuild.distribution.registry import (
    FallbackError,
    lookup_pull_endpoints,
    new_repository_info,
    new_v2_repository,
)
from minibuild.image.reference import Reference, familiar_name, familiar_string, with_digest
from minibuild.layer import LayerStore, chain_id_of

MAX_CONFIG_SIZE = 64 << 20  # an image config is read into memory: bound it, as the pull does


@dataclass(frozen=True)
class ResolvedImage:
    """What `[internal] load metadata` found: the pinned reference, the config, and the chosen manifest's
    layer blobs (by their 12-hex short ID, as pull progress names them)."""

    ref: Reference  # name@digest: the digest the tag resolved to (a manifest list's, if it was one)
    config: bytes
    auth: AuthConfig
    platform: Platform
    layers: dict[str, tuple[str, int]] = field(default_factory=dict)  # short ID -> (blob digest, size)

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()

    @property
    def chain_id(self) -> str | None:
        return chain_id_of(json.loads(self.config)["rootfs"].get("diff_ids") or [])


async def resolve_image_config(
    registry: RegistryService, ref: Reference, *, auth: AuthConfig, platform: Platform
) -> ResolvedImage:
    """imageutil.Config: manifest (for `platform`) and config of `ref`, without its layers.

    Endpoints are tried as the pull tries them: one whose ping fails (https on a plain-http registry)
    gives way to the next, and so does a mirror; after a registry answered, its error is Docker's pull
    error (`pull access denied for …`, `manifest for … not found`).
    """
    config = registry.config
    repo_info = new_repository_info(config, ref.domain, ref.path)
    last_error: Exception = DistributionError(f"no endpoints found for {familiar_string(ref)}")
    async with aiohttp.ClientSession() as session:
        for endpoint in lookup_pull_endpoints(config, ref.domain):
            try:
                repo, _ = await new_v2_repository(session, repo_info, endpoint, auth, ("pull",))
                return await _resolve(repo, ref, auth, platform)
            except FallbackError as err:
                last_error = err.err
            except Exception as err:
                if not endpoint.mirror:
                    raise translate_pull_error(err, familiar_name(ref), familiar_string(ref)) from None
                last_error = err
    raise translate_pull_error(last_error, familiar_name(ref), familiar_string(ref))


async def _resolve(repo: Any, ref: Reference, auth: AuthConfig, platform: Platform) -> ResolvedImage:
    digest = ref.digest or (await repo.resolve_tag(ref.tag or "latest", ACCEPT_MEDIA_TYPES)).digest
    media_type, raw = await repo.get_manifest(digest, ACCEPT_MEDIA_TYPES)
    manifest = parse_manifest(media_type, raw)
    if isinstance(manifest, ManifestList):
        matches = manifest.filter(platform)
        if not matches:
            raise DistributionError(
                f"no matching manifest for {platform.format()} in the manifest list entries"
            )
        media_type, raw = await repo.get_manifest(matches[0].descriptor.digest, ACCEPT_MEDIA_TYPES)
        manifest = parse_manifest(media_type, raw)
    if not isinstance(manifest, Manifest):
        raise DistributionError("unsupported manifest format")
    check_config_media_type(manifest.config.media_type)
    config = await repo.fetch_blob(manifest.config.digest, MAX_CONFIG_SIZE)
    layers = {d.digest.removeprefix("sha256:")[:12]: (d.digest, d.size) for d in manifest.layers}
    pinned = with_digest(Reference(ref.domain, ref.path, ref.tag), digest)
    return ResolvedImage(pinned, config, auth, platform, layers)


class CachePullStore:
    """distribution's PullStore, pointed at the build cache: layers land in its layer store, held by
    the job; no image, no reference is written (BuildKit keeps pulled images to its cache)."""

    def __init__(self, cache: JobCache) -> None:
        self.cache = cache
        self.layer_store: LayerStore = cache.manager.layers

    def has_image(self, image_id: str) -> bool:
        return False  # the layers are what the build needs: the pull checks each against the store

    def put_image_config(self, config: bytes) -> str:
        """The pulled image: its layer stack, held for the job until it closes (a cache record then)."""
        chain_id = chain_id_of(json.loads(config)["rootfs"].get("diff_ids") or [])
        if chain_id is not None:
            self.cache.layers.append(self.layer_store.acquire(chain_id).chain_id)
        return "sha256:" + hashlib.sha256(config).hexdigest()

    def get_reference(self, ref: Reference) -> str | None:
        return None

    def add_reference(self, ref: Reference, image_id: str) -> None:
        return None


class VertexProgress:
    """distribution's progress Output, as the statuses of the vertex that pulls (moby's showProgress):
    `resolve <ref>` until the manifest is read, then each layer blob's download (`sha256:…`, bytes
    current / total) and its unpacking (`extracting sha256:…`). Layers already stored show nothing."""

    def __init__(self, ctx: Any, resolved: ResolvedImage) -> None:
        self.ctx = ctx
        self.layers = resolved.layers
        self.resolve_id = f"resolve {resolved.ref}"
        self.started: dict[str, float] = {}
        self.completed: set[str] = set()
        self._update(self.resolve_id)

    def _update(self, id: str, *, done: bool = False, current: int = 0, total: int = 0) -> None:
        if id in self.completed:
            return
        now = time.time()
        started = self.started.setdefault(id, now)
        if done:
            self.completed.add(id)
        self.ctx.status(id, started=started, completed=now if done else None, current=current, total=total)

    def write_progress(self, prog: Progress) -> None:
        if prog.message:  # `Pulling from …` follows the manifest; `Digest:` and `Status:` are not shown
            if prog.message.startswith("Pulling from"):
                self._update(self.resolve_id, done=True)
            return
        blob, size = self.layers.get(prog.id, ("sha256:" + prog.id, 0))
        if prog.action == "Downloading":
            self._update(blob, current=prog.current, total=prog.total or size)
        elif prog.action == "Download complete":
            self._update(blob, done=True, current=size, total=size)
        elif prog.action == "Extracting":
            self._update("extracting " + blob)
        elif prog.action == "Pull complete":
            self._update("extracting " + blob, done=True)


async def pull_into_cache(
    registry: RegistryService, cache: JobCache, resolved: ResolvedImage, ctx: Any
) -> Ref:
    """The puller's Snapshot: the resolved image's layers in the build cache, as a result."""
    store = CachePullStore(cache)
    progress = VertexProgress(ctx, resolved)
    image_id = await registry.pull(
        store, resolved.ref, auth=resolved.auth, platform=resolved.platform, progress=progress
    )
    if image_id != resolved.image_id:  # the digest pins the manifest: anything else is a broken registry
        raise DistributionError(f"pulled image {image_id} is not the resolved {resolved.image_id}")
    chain_id = resolved.chain_id
    chain = tuple(store.layer_store.chain(chain_id)) if chain_id is not None else ()
    return Ref(chain, None, time.time())
