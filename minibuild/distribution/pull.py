"""Pulling an image from a registry (moby distribution/pull.go, pull_v2.go, xfer/download.go).

`pull` tries the registry's endpoints in turn (https, then http for an insecure registry) and on each:
resolves the tag to a manifest digest (HEAD), fetches the manifest by digest (verified), resolves a
manifest list to the wanted platform, fetches the image config (verified), then the layers: a layer whose
chain is already in the layer store is not fetched again ("Already exists"); the others download three at
a time to temp files, each verified against its digest as it streams, then are decompressed into the layer
store in order, each checked against the config's `rootfs.diff_ids`. Only then is the image config stored
and the name tagged, so a failed or cancelled pull leaves no image and no layer it registered.

The messages are Docker's: `latest: Pulling from library/busybox`, `<id>: Pulling fs layer`, `Waiting`,
`Downloading`, `Verifying Checksum`, `Download complete`, `Extracting`, `Pull complete`,
`Digest: sha256:…`, `Status: Downloaded newer image for busybox:latest`.

A layer download cut by a transient failure (a reset connection, a 5xx answer) is tried again, up to five
attempts, after `Retrying in 5 seconds` (10, 15, … for the next ones) counted down second by second, and
resumes where it stopped (xfer/download.go); refused credentials, a missing blob or a digest mismatch
end the pull at once.
"""

import asyncio
import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from minibuild.distribution import progress
from minibuild.distribution.auth import AuthConfig
from minibuild.distribution.client import BlobUnknownError, Descriptor, Repository, WrongCodeForByteRange
from minibuild.distribution.config import ServiceConfig
from minibuild.distribution.errors import (
    DistributionError,
    DoNotRetry,
    ErrcodeError,
    ErrcodeErrors,
    InvalidManifestError,
    PullNotFoundError,
    UnexpectedHTTPResponseError,
    first_error,
    translate_pull_error,
)
from minibuild.distribution.manifest import (
    ACCEPT_MEDIA_TYPES,
    Manifest,
    ManifestList,
    Platform,
    check_config_media_type,
    check_layer_media_type,
    default_platform,
    parse_manifest,
)
from minibuild.distribution.metadata import V2Metadata, V2MetadataService
from minibuild.distribution.progress import NullOutput, Output
from minibuild.distribution.registry import (
    APIEndpoint,
    FallbackError,
    RepositoryInfo,
    lookup_pull_endpoints,
    new_repository_info,
    new_v2_repository,
)
from minibuild.distribution.xfer import retry_transfer
from minibuild.image.reference import Reference, familiar_name, familiar_string, with_digest
from minibuild.layer import Layer, LayerStore, chain_id_of

MAX_CONFIG_SIZE = 64 << 20  # an image config is read into memory: bound it
_CHUNK = 1 << 20


class PullStore(Protocol):
    """What a pull needs from the daemon's stores (moby ImagePullConfig: image, reference, layer stores)."""

    layer_store: LayerStore

    def has_image(self, image_id: str) -> bool: ...

    def put_image_config(self, config: bytes) -> str:
        """Store an image config exactly as fetched (its layers are registered); return the image ID."""
        ...

    def get_reference(self, ref: Reference) -> str | None: ...

    def add_reference(self, ref: Reference, image_id: str) -> None:
        """Point a tag (or digest) reference at an image, replacing what it pointed at."""
        ...


@dataclass
class PullOptions:
    """ImagePullConfig: who is pulling, how, and where progress goes."""

    auth: AuthConfig = field(default_factory=AuthConfig)
    platform: Platform | None = None
    progress: Output = field(default_factory=NullOutput)
    registry_config: ServiceConfig = field(default_factory=ServiceConfig)
    metadata: V2MetadataService | None = None
    tmp_dir: Path | None = None  # where downloads are staged (on the data root's filesystem)


async def pull(store: PullStore, ref: Reference, options: PullOptions) -> str:
    """Pull `ref` (tagged, digested, or a bare name for every tag); return the image ID of the last one.

    Raises errdefs errors with Docker's messages (PullNotFoundError, DistributionError, ...).
    """
    repo_info = new_repository_info(options.registry_config, ref.domain, ref.path)
    last_error: Exception | None = None
    confirmed_tls: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for endpoint in lookup_pull_endpoints(options.registry_config, ref.domain):
            host = endpoint.url.split("://", 1)[1]
            if endpoint.url.startswith("http://") and host in confirmed_tls:
                continue  # the host answered over TLS: never downgrade it to plain http
            puller = _Puller(session, store, repo_info, endpoint, options)
            try:
                return await puller.pull(ref)
            except FallbackError as err:
                if err.transport_ok and endpoint.url.startswith("https://"):
                    confirmed_tls.add(host)
                last_error = err.err
            except Exception as err:
                raise translate_pull_error(err, familiar_name(ref), familiar_string(ref)) from None
    if last_error is None:
        last_error = DistributionError(f"no endpoints found for {familiar_string(ref)}")
    raise translate_pull_error(last_error, familiar_name(ref), familiar_string(ref))


def _continue_on_error(err: Exception, mirror: bool) -> bool:
    """continueOnError: which failures let the next endpoint be tried."""
    cause = first_error(err)
    if isinstance(err, ErrcodeErrors) and not err.errors:
        return True
    if isinstance(cause, ErrcodeError):
        return mirror or cause.code in ("UNAUTHORIZED", "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    if isinstance(cause, UnexpectedHTTPResponseError):
        return True
    if isinstance(cause, ImageConfigPullError):
        return mirror
    return True


class ImageConfigPullError(DistributionError):
    """ImageConfigPullError: fetching the image config failed."""

    def __init__(self, err: Exception) -> None:
        super().__init__(f"error pulling image configuration: {err}")


@dataclass
class _Layer:
    """One layer of the manifest being pulled (v2LayerDescriptor)."""

    descriptor: Descriptor
    diff_id: str
    chain_id: str

    @property
    def id(self) -> str:
        """The short ID in progress messages: 12 hex of the blob digest."""
        return self.descriptor.digest.removeprefix("sha256:")[:12]


class _Puller:
    """v2Puller: a pull from one endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: PullStore,
        repo_info: RepositoryInfo,
        endpoint: APIEndpoint,
        options: PullOptions,
    ) -> None:
        self.session, self.store, self.repo_info = session, store, repo_info
        self.endpoint, self.options = endpoint, options
        self.out = options.progress
        self.repo: Repository | None = None
        self.confirmed_v2 = False

    async def pull(self, ref: Reference) -> str:
        self.repo, self.confirmed_v2 = await new_v2_repository(
            self.session, self.repo_info, self.endpoint, self.options.auth, ("pull",)
        )
        try:
            if ref.tag or ref.digest:
                tag_updated, image_id = await self.pull_v2_tag(ref)
            else:
                tag_updated, image_id = await self.pull_all_tags(ref)
        except FallbackError:
            raise
        except Exception as err:
            if _continue_on_error(err, self.endpoint.mirror):
                raise FallbackError(err, self.confirmed_v2, transport_ok=True) from None
            raise
        status = "Downloaded newer image for" if tag_updated else "Image is up to date for"
        progress.message(self.out, "", f"Status: {status} {familiar_string(ref)}")
        return image_id

    async def pull_all_tags(self, ref: Reference) -> tuple[bool, str]:
        """A bare name pulls every tag of the repository (`docker pull --all-tags`)."""
        tags = await self.repo.list_tags()
        self.confirmed_v2 = True
        updated, image_id = False, ""
        for tag in tags:
            tag_updated, image_id = await self.pull_v2_tag(replace(ref, tag=tag))
            updated = updated or tag_updated
        if not tags:
            raise PullNotFoundError(f"no tags found for {familiar_name(ref)}")
        return updated, image_id

    async def pull_v2_tag(self, ref: Reference) -> tuple[bool, str]:
        """pullV2Tag: resolve, fetch, pull; then point the reference at the image. (tag updated, image ID)."""
        if ref.digest:
            digest, tag_or_digest = ref.digest, ref.digest  # observed: "sha256:…: Pulling from …"
        else:
            digest, tag_or_digest = (await self.repo.resolve_tag(ref.tag, ACCEPT_MEDIA_TYPES)).digest, ref.tag
        media_type, raw = await self.repo.get_manifest(digest, ACCEPT_MEDIA_TYPES)
        manifest = parse_manifest(media_type, raw)
        if isinstance(manifest, Manifest):
            check_config_media_type(manifest.config.media_type)
        self.confirmed_v2 = True
        progress.message(self.out, tag_or_digest, f"Pulling from {self.repo_info.path}")
        if isinstance(manifest, ManifestList):
            image_id = await self.pull_manifest_list(manifest)
        else:
            image_id = await self.pull_schema2_layers(manifest)
        progress.message(self.out, "", f"Digest: {digest}")

        return await asyncio.to_thread(self._update_references, ref, digest, image_id), image_id

    def _update_references(self, ref: Reference, digest: str, image_id: str) -> bool:
        """Point the name at the pulled image (and its digest, for RepoDigests); True if it moved."""
        old = self.store.get_reference(ref)
        digest_ref = with_digest(replace(ref, tag="", digest=""), digest)
        if self.store.get_reference(digest_ref) is None:
            self.store.add_reference(digest_ref, image_id)
        if old == image_id or ref.digest:
            return old != image_id
        self.store.add_reference(ref, image_id)
        return True

    async def pull_manifest_list(self, manifest_list: ManifestList) -> str:
        """pullManifestList: the entry for the wanted platform (the daemon's when none is given)."""
        wanted = self.options.platform or default_platform()
        matches = manifest_list.filter(wanted)
        if not matches:
            raise DistributionError(
                f"no matching manifest for {wanted.format()} in the manifest list entries"
            )
        chosen = matches[0].descriptor
        media_type, raw = await self.repo.get_manifest(chosen.digest, ACCEPT_MEDIA_TYPES)
        manifest = parse_manifest(media_type, raw)
        if not isinstance(manifest, Manifest):
            raise InvalidManifestError("unsupported manifest format")
        check_config_media_type(manifest.config.media_type)
        return await self.pull_schema2_layers(manifest)

    async def pull_schema2_layers(self, manifest: Manifest) -> str:
        """pullSchema2Layers: config, then the missing layers, then the image."""
        image_id = manifest.config.digest
        if self.store.has_image(image_id):
            return image_id  # the image is already here: nothing to fetch
        for layer in manifest.layers:
            check_layer_media_type(layer.media_type)
        try:
            config = await self.repo.fetch_blob(manifest.config.digest, MAX_CONFIG_SIZE)
        except BlobUnknownError as err:
            raise ImageConfigPullError(err) from None
        diff_ids = _rootfs_diff_ids(config)
        if len(diff_ids) != len(manifest.layers):
            raise DistributionError("layers from manifest don't match image configuration")
        _check_platform(config)
        layers = [
            _Layer(d, diff_ids[i], chain_id_of(diff_ids[: i + 1])) for i, d in enumerate(manifest.layers)
        ]
        top = await _DownloadManager(self, layers).download()
        try:
            return await asyncio.to_thread(self.store.put_image_config, config)
        finally:
            if top is not None:
                await asyncio.to_thread(self.store.layer_store.release, top.chain_id)


def _rootfs_diff_ids(config: bytes) -> list[str]:
    """RootFSFromConfig: the config's `rootfs.diff_ids` (type "layers")."""
    try:
        doc = json.loads(config)
        rootfs = doc["rootfs"]
        if rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids", []), list):
            raise ValueError
        diff_ids = rootfs.get("diff_ids") or []
        if not all(isinstance(d, str) and d.startswith("sha256:") and len(d) == 71 for d in diff_ids):
            raise ValueError
        return diff_ids
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DistributionError("invalid rootfs in image configuration") from None


def _check_platform(config: bytes) -> None:
    """The image must be one this daemon can run: a Linux image."""
    os_name = json.loads(config).get("os") or "linux"
    if os_name != "linux":
        raise InvalidManifestError(f'image operating system "{os_name}" cannot be used on this platform')


class _DownloadManager:
    """LayerDownloadManager: fetch missing layers concurrently, register them in order.

    Returns the top layer holding one reference (the caller releases it once the image holds its own);
    on any failure or cancellation every layer it registered is released and every temp file removed.
    """

    def __init__(self, puller: _Puller, layers: list[_Layer]) -> None:
        self.puller = puller
        self.layers = layers
        self.out = puller.out
        self.layer_store = puller.store.layer_store
        # 0 is no limit in dockerd's transfer manager: a semaphore no pull can exhaust stands for it.
        self.slots = asyncio.Semaphore(puller.options.registry_config.max_concurrent_downloads or 1 << 30)

    async def download(self) -> Layer | None:
        top: Layer | None = None
        missing_from = len(self.layers)
        for i, layer in enumerate(self.layers):  # the bottom layers already stored are reused
            if layer.chain_id not in self.layer_store:
                missing_from = i
                break
            progress.update(self.out, layer.id, "Already exists")
            self._remember(layer)
        if missing_from > 0:
            top = await asyncio.to_thread(self.layer_store.acquire, self.layers[missing_from - 1].chain_id)
        to_fetch = self.layers[missing_from:]
        for layer in to_fetch:
            progress.update(self.out, layer.id, "Pulling fs layer")
        tmp_parent = self.puller.options.tmp_dir
        if tmp_parent is not None:
            tmp_parent.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(prefix="pull-", dir=tmp_parent) as tmp:
                fetches = {
                    d.descriptor.digest: asyncio.create_task(self._fetch(d, Path(tmp)))
                    for d in _unique(to_fetch)
                }
                try:
                    for layer in to_fetch:  # registration follows the stack, downloads run ahead of it
                        top = await self._register(layer, await fetches[layer.descriptor.digest], top)
                except DoNotRetry as err:
                    raise err.err from None
                finally:
                    for task in fetches.values():
                        task.cancel()
                    await asyncio.gather(*fetches.values(), return_exceptions=True)
            return top
        except BaseException:
            if top is not None:
                await asyncio.shield(asyncio.to_thread(self.layer_store.release, top.chain_id))
            raise

    async def _fetch(self, layer: _Layer, tmp: Path) -> Path:
        """Download one blob to a temp file, verified against its digest and size as it streams.

        A failure worth another attempt (retryOnError) is retried after 5 s x the attempt number,
        counted down as `Retrying in N seconds`, up to the configured number of attempts; a retry
        resumes where the cut download stopped. Any other failure ends the pull at once.
        """
        if self.slots.locked():
            progress.update(self.out, layer.id, "Waiting")
        config = self.puller.options.registry_config
        async with self.slots:
            partial = _PartialDownload(tmp / layer.descriptor.digest.replace(":", "-"))
            await retry_transfer(
                lambda: self._download(layer, partial),
                self.out,
                layer.id,
                config.max_download_attempts,
                config.retry_tick,
            )
            progress.update(self.out, layer.id, "Download complete")
            return partial.path

    async def _download(self, layer: _Layer, partial: "_PartialDownload") -> None:
        """One attempt (v2LayerDescriptor.Download): from where the last one stopped, to the end."""
        expected = layer.descriptor.size
        offset = partial.offset
        if offset > expected:  # more than the whole blob: start over
            partial.truncate()
            offset = 0
        try:
            async with self.puller.repo.open_blob(layer.descriptor.digest, offset) as resp:
                reader = progress.ProgressReader(
                    self.out, layer.id, "Downloading", resp.content_length or expected - offset
                )
                with open(partial.path, "ab") as f:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        if partial.offset + len(chunk) > expected:
                            raise DoNotRetry(_verification_failed(layer))  # more than the manifest promised
                        await asyncio.to_thread(f.write, chunk)
                        partial.advance(chunk)
                        reader.advance(len(chunk))
        except WrongCodeForByteRange:
            partial.truncate()  # the registry cannot resume: the next attempt starts from the beginning
            raise
        progress.update(self.out, layer.id, "Verifying Checksum")
        if partial.digest() != layer.descriptor.digest:
            failed = _verification_failed(layer)
            if offset == 0:
                raise DoNotRetry(failed)
            partial.truncate()  # a resumed download may have joined mismatched pieces: one more try
            raise failed

    async def _register(self, layer: _Layer, path: Path, parent: Layer | None) -> Layer:
        """Decompress a downloaded blob into the layer store on top of `parent` ("Extracting")."""
        loop = asyncio.get_running_loop()
        size = path.stat().st_size

        def register() -> Layer:
            with open(path, "rb") as f:
                reader = _ThreadProgressReader(f, loop, self.out, layer.id, size)
                return self.layer_store.register(reader, parent.chain_id if parent else None)

        task = asyncio.ensure_future(asyncio.to_thread(register))
        try:
            registered = await asyncio.shield(task)
        except asyncio.CancelledError:  # the thread cannot be stopped: wait for it, then undo it
            registered = await _outcome(task)
            if registered is not None:
                await asyncio.to_thread(self.layer_store.release, registered.chain_id)
            raise
        if registered.diff_id != layer.diff_id:
            await asyncio.to_thread(self.layer_store.release, registered.chain_id)
            raise DistributionError("layers from manifest don't match image configuration")
        if parent is not None:
            await asyncio.to_thread(self.layer_store.release, parent.chain_id)  # the child now holds it
        progress.update(self.out, layer.id, "Pull complete")
        self._remember(layer)
        return registered

    def _remember(self, layer: _Layer) -> None:
        """Registered(): remember which blob this diff came from, for later pushes."""
        metadata = self.puller.options.metadata
        if metadata is not None:
            metadata.add(layer.diff_id, V2Metadata(layer.descriptor.digest, self.puller.repo_info.name))


async def _outcome(task: asyncio.Future) -> Layer | None:
    try:
        return await task
    except Exception:
        return None


def _unique(layers: list[_Layer]) -> list[_Layer]:
    """Each blob is downloaded once even when a manifest lists it twice."""
    seen: dict[str, _Layer] = {}
    for layer in layers:
        seen.setdefault(layer.descriptor.digest, layer)
    return list(seen.values())


class _PartialDownload:
    """A blob's temp file and the running digest of what it holds, kept across attempts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truncate()

    def truncate(self) -> None:
        self.path.write_bytes(b"")
        self.offset = 0
        self._hasher = hashlib.sha256()

    def advance(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self.offset += len(chunk)

    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


def _verification_failed(layer: _Layer) -> DistributionError:
    return DistributionError(f"filesystem layer verification failed for digest {layer.descriptor.digest}")


class _ThreadProgressReader:
    """A file reader for a worker thread that reports `Extracting` progress on the event loop's thread."""

    def __init__(
        self, src: BinaryIO, loop: asyncio.AbstractEventLoop, out: progress.Output, id: str, total: int
    ) -> None:
        self.src = src
        self.reporter = progress.ProgressReader(out, id, "Extracting", total)
        self.loop = loop

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        if data:
            self.loop.call_soon_threadsafe(self.reporter.advance, len(data))
        return data
