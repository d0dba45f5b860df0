"""Pushing an image to a registry (moby distribution/push.go, push_v2.go, xfer/upload.go).

For each tag: every layer (top first) is `Preparing`; a layer the registry already has is reported
`Layer already exists` (known from an earlier pull or push of the same diff, or found by its digest once
compressed); the others are gzip-compressed to a temp file and uploaded (`Pushing`, `Pushed`), five at a
time. Then the image config is uploaded if missing, and the schema 2 manifest is put under the tag:
`latest: digest: sha256:… size: 527`, followed by the same as an aux message. The local name gains the
digest reference (`RepoDigests`).

A layer upload that fails with a transient error (a 5xx answer, a reset connection, an upload cut
short, a digest the registry found wrong) is tried again, up to five attempts, after `Retrying in 5
seconds` (10, 15, … for the next ones) counted down second by second (xfer/upload.go). Like dockerd, a
retry never resumes: it opens a new upload session (`POST /v2/<name>/blobs/uploads/`) and sends the whole
blob again. Refused credentials and answers that are not the registry's end the push at once; the image
config and the manifest are not retried (dockerd sends them outside the upload manager).

Where minibuild differs on purpose: Docker streams the compression into the upload and reports
uncompressed bytes; minibuild compresses first (so it can ask the registry whether it has the blob and
use a monolithic upload), once for all attempts, and reports compressed bytes. Cross-repository blob
mounts are not attempted.
"""

import asyncio
import gzip
import hashlib
import json
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import aiohttp

from minibuild.distribution import progress
from minibuild.distribution.auth import AuthConfig
from minibuild.distribution.client import Descriptor, Repository
from minibuild.distribution.config import ServiceConfig
from minibuild.distribution.errors import DistributionError, RegistryError, transfer_error
from minibuild.distribution.manifest import MEDIA_TYPE_IMAGE_CONFIG, MEDIA_TYPE_LAYER, build_schema2_manifest
from minibuild.distribution.metadata import V2Metadata, V2MetadataService
from minibuild.distribution.progress import NullOutput, Output
from minibuild.distribution.registry import (
    APIEndpoint,
    FallbackError,
    RepositoryInfo,
    lookup_push_endpoints,
    new_repository_info,
    new_v2_repository,
)
from minibuild.distribution.xfer import retry_transfer
from minibuild.image.reference import Reference, familiar_name, familiar_string, with_digest
from minibuild.layer import Layer, LayerStore, chain_id_of

_CHUNK = 1 << 20


class PushStore(Protocol):
    """What a push needs from the daemon's stores (moby ImagePushConfig)."""

    layer_store: LayerStore

    def get_reference(self, ref: Reference) -> str | None: ...

    def references_by_name(self, ref: Reference) -> list[Reference]:
        """Every tag reference of this repository name."""
        ...

    def get_image_config(self, image_id: str) -> bytes:
        """The image config exactly as stored (its sha256 is the image ID)."""
        ...

    def add_reference(self, ref: Reference, image_id: str) -> None: ...


@dataclass
class PushOptions:
    """ImagePushConfig: credentials, progress, registry options, and how blobs are uploaded."""

    auth: AuthConfig = field(default_factory=AuthConfig)
    progress: Output = field(default_factory=NullOutput)
    registry_config: ServiceConfig = field(default_factory=ServiceConfig)
    metadata: V2MetadataService | None = None
    tmp_dir: Path | None = None
    chunk_size: int | None = None  # None: monolithic uploads (one PUT); else PATCH chunks of this size


@dataclass(frozen=True)
class PushResult:
    """types.PushResult: what a push reports for each tag (also sent as an aux message)."""

    tag: str
    digest: str
    size: int


async def push(store: PushStore, ref: Reference, options: PushOptions) -> list[PushResult]:
    """Push `ref` (a tag, or a bare name for all its tags) to its registry."""
    repo_info = new_repository_info(options.registry_config, ref.domain, ref.path)
    progress.message(options.progress, "", f"The push refers to repository [{repo_info.name}]")
    if not store.references_by_name(ref):
        raise DistributionError(f"An image does not exist locally with the tag: {familiar_name(ref)}")
    last_error: Exception | None = None
    confirmed_tls: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for endpoint in lookup_push_endpoints(options.registry_config, ref.domain):
            host = endpoint.url.split("://", 1)[1]
            if endpoint.url.startswith("http://") and host in confirmed_tls:
                continue
            pusher = _Pusher(session, store, repo_info, endpoint, options)
            try:
                return await pusher.push(ref)
            except FallbackError as err:
                if err.transport_ok and endpoint.url.startswith("https://"):
                    confirmed_tls.add(host)
                last_error = err.err
            except DistributionError:
                raise
            except Exception as err:  # moby reports push errors as they are (errdefs.Unknown)
                raise DistributionError(str(err)) from None
    raise DistributionError(str(last_error) if last_error else f"no endpoints found for {repo_info.name}")


class _Pusher:
    """v2Pusher: a push to one endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: PushStore,
        repo_info: RepositoryInfo,
        endpoint: APIEndpoint,
        options: PushOptions,
    ) -> None:
        self.session, self.store, self.repo_info = session, store, repo_info
        self.endpoint, self.options = endpoint, options
        self.out = options.progress
        self.repo: Repository | None = None
        self.remote_layers: dict[str, Descriptor] = {}  # pushState.remoteLayers: diff ID -> blob
        # 0 is no limit in dockerd's transfer manager: a semaphore no push can exhaust stands for it.
        self.slots = asyncio.Semaphore(options.registry_config.max_concurrent_uploads or 1 << 30)

    async def push(self, ref: Reference) -> list[PushResult]:
        self.repo, confirmed_v2 = await new_v2_repository(
            self.session, self.repo_info, self.endpoint, self.options.auth, ("push", "pull")
        )
        if ref.digest:
            raise DistributionError("cannot push a digest reference")
        if ref.tag:
            image_id = self.store.get_reference(ref)
            if image_id is None:
                raise DistributionError(f"tag does not exist: {familiar_string(ref)}")
            tags = [(ref, image_id)]
        else:
            tags = [(r, self.store.get_reference(r)) for r in self.store.references_by_name(ref) if r.tag]
            if not tags:
                raise DistributionError(f"no tags to push for {familiar_name(ref)}")
        try:
            return [await self.push_v2_tag(tag_ref, image_id) for tag_ref, image_id in tags]
        except (DistributionError, RegistryError) as err:
            if not isinstance(err, DistributionError):  # a registry that answered: fall back like moby
                raise FallbackError(err, confirmed_v2, transport_ok=True) from None
            raise

    async def push_v2_tag(self, ref: Reference, image_id: str) -> PushResult:
        config = self.store.get_image_config(image_id)
        diff_ids = _diff_ids(config)
        layers = (
            self.store.layer_store.chain(chain_id_of(diff_ids)) if diff_ids else []
        )  # bottom first; Docker lists them top first
        for layer in reversed(layers):
            progress.update(self.out, _short(layer.diff_id), "Preparing")
        with tempfile.TemporaryDirectory(prefix="push-", dir=self._tmp_parent()) as tmp:
            uploads = [
                asyncio.create_task(self._upload_layer(layer, Path(tmp))) for layer in reversed(layers)
            ]
            try:
                remote = list(reversed(await asyncio.gather(*uploads)))
            except RegistryError as err:
                raise transfer_error(err) from None
            finally:
                for task in uploads:
                    task.cancel()
                await _wait_until_done(uploads)  # the temp directory goes only after every upload
        config_descriptor = Descriptor(MEDIA_TYPE_IMAGE_CONFIG, image_id, len(config))
        if await self.repo.stat_blob(image_id) is None:
            await self.repo.upload_blob(config, image_id, len(config), self.options.chunk_size)
        manifest = build_schema2_manifest(config_descriptor, remote)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        await self.repo.put_manifest(
            ref.tag, "application/vnd.docker.distribution.manifest.v2+json", manifest
        )
        progress.message(self.out, "", f"{ref.tag}: digest: {digest} size: {len(manifest)}")
        await asyncio.to_thread(self._add_digest_reference, ref, digest, image_id)
        result = PushResult(ref.tag, digest, len(manifest))
        progress.aux(self.out, {"Tag": result.tag, "Digest": result.digest, "Size": result.size})
        return result

    def _add_digest_reference(self, ref: Reference, digest: str, image_id: str) -> None:
        """addDigestReference: the pushed name@digest now names the image too (RepoDigests)."""
        digest_ref = with_digest(replace(ref, tag="", digest=""), digest)
        if self.store.get_reference(digest_ref) is None:
            self.store.add_reference(digest_ref, image_id)

    def _tmp_parent(self) -> Path | None:
        parent = self.options.tmp_dir
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        return parent

    async def _upload_layer(self, layer: Layer, tmp: Path) -> Descriptor:
        """The upload manager's transfer of one layer (v2PushDescriptor.Upload, retried as xfer does):
        skip what the registry has, else compress once and upload, a transient failure starting the
        upload over in a new session after the `Retrying in N seconds` countdown."""
        id = _short(layer.diff_id)
        if self.slots.locked():
            progress.update(self.out, id, "Waiting")
        async with self.slots:
            known = self.remote_layers.get(layer.diff_id)
            if known is None:
                known = await self._known_remote_blob(layer)
            if known is not None:
                progress.update(self.out, id, "Layer already exists")
                self.remote_layers[layer.diff_id] = known
                return known
            path = tmp / layer.diff_id.replace(":", "-")
            digest, size = await _gzip_layer_in_thread(layer, path)
            descriptor = Descriptor(MEDIA_TYPE_LAYER, digest, size)
            config = self.options.registry_config
            await retry_transfer(
                lambda: self._push_blob(id, path, descriptor),
                self.out,
                id,
                config.max_upload_attempts,
                config.retry_tick,
            )
            self.remote_layers[layer.diff_id] = descriptor
            self._remember(layer.diff_id, digest)
            return descriptor

    async def _push_blob(self, id: str, path: Path, blob: Descriptor) -> None:
        """One upload attempt: a new upload session carrying the whole blob (`Pushing`, `Pushed`), unless
        the registry already has it (a blob an earlier attempt sent although its answer was lost, too)."""
        if await self.repo.stat_blob(blob.digest) is not None:
            progress.update(self.out, id, "Layer already exists")
            return
        chunks = _file_chunks(path, progress.ProgressReader(self.out, id, "Pushing", blob.size))
        await self.repo.upload_blob(chunks, blob.digest, blob.size, self.options.chunk_size)
        progress.update(self.out, id, "Pushed")

    async def _known_remote_blob(self, layer: Layer) -> Descriptor | None:
        """layerAlreadyExists: ask the registry about blobs known to hold this diff (this repo's first).

        A check that fails is passed over, as in dockerd: the upload that follows meets the same trouble
        with the retries it deserves."""
        metadata = self.options.metadata
        if metadata is None:
            return None
        candidates = sorted(
            metadata.get_metadata(layer.diff_id), key=lambda m: m.source_repository != self.repo_info.name
        )[:3]
        for meta in candidates:
            try:
                found = await self.repo.stat_blob(meta.digest)
            except RegistryError:
                continue
            if found is not None:
                self._remember(layer.diff_id, meta.digest)
                return Descriptor(MEDIA_TYPE_LAYER, meta.digest, found.size)
            if meta.source_repository == self.repo_info.name:
                await asyncio.to_thread(metadata.remove, layer.diff_id, meta)  # the registry lost it
        return None

    def _remember(self, diff_id: str, digest: str) -> None:
        if self.options.metadata is not None:
            self.options.metadata.add(diff_id, V2Metadata(digest, self.repo_info.name))


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _diff_ids(config: bytes) -> list[str]:
    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"] or []
    except (ValueError, KeyError, TypeError):
        raise DistributionError("unable to get rootfs for image: invalid image config") from None
    return [str(d) for d in diff_ids]


class _Stopped(Exception):
    """The push gave up on a layer while it was being compressed."""


async def _gzip_layer_in_thread(layer: Layer, path: Path) -> tuple[str, int]:
    """`_gzip_layer` in a worker thread that is never left running: when the upload is cancelled, the
    thread is told to stop and waited for, so it writes nothing into the push's temp directory once
    that directory is being removed."""
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(_gzip_layer, layer, path, stop))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await _wait_until_done([work])
        raise


async def _wait_until_done(tasks: list[asyncio.Future]) -> None:
    """Wait until every task has ended, even through cancellations of this wait (raised afterwards).

    Their results and errors are dropped: the caller is already failing or being cancelled.
    """
    cancelled = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True  # e.g. the daemon stopping: what runs in the temp directory still ends first
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost
    if cancelled:
        raise asyncio.CancelledError


def _gzip_layer(layer: Layer, path: Path, stop: threading.Event) -> tuple[str, int]:
    """Compress the layer's tar (gzip, Go's default level, no timestamp): (digest, size) of the blob.

    Checks `stop` between chunks and raises _Stopped once it is set.
    """
    hasher = hashlib.sha256()
    size = 0

    class _Hashing:
        def write(self, data: bytes) -> int:
            nonlocal size
            hasher.update(data)
            size += len(data)
            return out.write(data)

        def flush(self) -> None:
            out.flush()

    with (
        open(path, "wb") as out,
        layer.open() as src,
        gzip.GzipFile(fileobj=_Hashing(), mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        while chunk := src.read(_CHUNK):
            if stop.is_set():
                raise _Stopped(layer.diff_id)
            gz.write(chunk)
    return "sha256:" + hasher.hexdigest(), size


async def _file_chunks(path: Path, reader: progress.ProgressReader) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            reader.advance(len(chunk))
            yield chunk
