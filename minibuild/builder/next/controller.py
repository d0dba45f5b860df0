"""Solve requests: the Dockerfile frontend, the solver and the exporter for one build (buildkit
control/control.go Solve and Status, frontend/dockerfile/builder/build.go, llbsolver/solver.go;
moby builder/builder-next/controller.go wires them for dockerd).

`Controller.solve(req)` runs what a SolveRequest names: the `dockerfile.v0` frontend loads the
context (`[internal] load remote build context`, `copy /context /`), reads and converts the
Dockerfile (the image configs it needs show as `[internal] load metadata for …`), the solver builds
the target, and the `moby` exporter writes the image. `Controller.status(ref)` streams the progress
of the solve with that ref, from its first event, to whoever asks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minibuild import errdefs, trace
from minibuild.api import platforms
from minibuild.archive import follow_symlink_in_scope
from minibuild.builder import run_in_thread as in_thread
from minibuild.builder.next import llb
from minibuild.builder.next.cache import CacheManager, JobCache, PruneReport, Ref
from minibuild.builder.next.dockerfile2llb import ConvertError, ConvertOpt, dockerfile_to_llb, pinned_name
from minibuild.builder.next.exporter import EXPORTER_IMAGE, EXPORTER_MOBY, ExportRequest, MobyExporter
from minibuild.builder.next.ops import Worker
from minibuild.builder.next.progress import ProgressWriter, StatusResponse
from minibuild.builder.next.progress import Vertex as ProgressVertex
from minibuild.builder.next.pull import resolve_image_config
from minibuild.builder.next.solver import Job, Solver
from minibuild.distribution import AuthConfig, RegistryService, parse_reference
from minibuild.dockerfile import DockerfileError
from minibuild.image.service import ImageService
from minibuild.runtime import Runtime
from minibuild.snapshot import Snapshotter

FRONTEND_DOCKERFILE = "dockerfile.v0"
DEFAULT_DOCKERFILE = "Dockerfile"
CONTEXT_SCHEME = "context://"
KEY_SOURCE_DATE_EPOCH = "build-arg:SOURCE_DATE_EPOCH"
ENTITLEMENT_NETWORK_HOST = "network.host"


class FrontendError(Exception):
    """The frontend could not produce a graph; str() is `failed to solve with frontend …: …`."""


@dataclass
class SolveRequest:
    """controlapi.SolveRequest, the fields dockerd fills."""

    ref: str
    exporter: str
    exporter_attrs: dict[str, str] = field(default_factory=dict)
    frontend: str = FRONTEND_DOCKERFILE
    frontend_attrs: dict[str, str] = field(default_factory=dict)
    session: str = ""
    cache_exports: list[dict[str, str]] = field(default_factory=list)
    entitlements: list[str] = field(default_factory=list)
    # What the raw API brings along instead of a session: request bodies by context identifier, and
    # the X-Registry-Config credentials for pulls of missing base images.
    bodies: dict[str, Path] = field(default_factory=dict)
    auth_configs: dict[str, AuthConfig] = field(default_factory=dict)


@dataclass
class SolveResponse:
    exporter_response: dict[str, str]
    job: Job | None = None


class Controller:
    """The build controller of one daemon: a cache manager, a snapshotter, a runtime, an image store."""

    def __init__(
        self,
        *,
        image_service: ImageService,
        cache: CacheManager,
        snapshotter: Snapshotter,
        runtime: Runtime,
        registry: RegistryService | None = None,
        max_parallelism: int | None = None,
    ) -> None:
        self.image_service = image_service
        self.cache = cache
        self.snapshotter = snapshotter
        self.runtime = runtime
        self.registry = registry
        self.max_parallelism = max_parallelism
        self._progress: dict[str, ProgressWriter] = {}
        self._holders: dict[str, int] = {}

    # -- Status --

    def _hold(self, ref: str) -> ProgressWriter:
        """The progress of solve `ref`, made on first use; kept while a solve or a reader holds it."""
        if ref not in self._progress:
            self._progress[ref] = ProgressWriter()
        self._holders[ref] = self._holders.get(ref, 0) + 1
        return self._progress[ref]

    def _release(self, ref: str) -> None:
        self._holders[ref] -= 1
        if not self._holders[ref]:
            del self._holders[ref], self._progress[ref]

    def status(self, ref: str) -> AsyncIterator[StatusResponse]:
        """Every progress message of solve `ref`, from its first, until it ends. Call it before or
        after the solve starts: the stream is held from this call on."""
        writer = self._hold(ref)

        async def read() -> AsyncIterator[StatusResponse]:
            try:
                async for sr in writer.responses():
                    yield sr
            finally:
                self._release(ref)

        return read()

    # -- Solve --

    @trace.traced
    async def solve(self, req: SolveRequest) -> SolveResponse:
        """Run the frontend, solve, export. Raises FrontendError, SolveError, or errdefs errors."""
        progress = self._hold(req.ref)
        try:
            return await self._solve(req, progress)
        finally:
            progress.close()
            self._release(req.ref)

    async def _solve(self, req: SolveRequest, progress: ProgressWriter) -> SolveResponse:
        if req.frontend != FRONTEND_DOCKERFILE:
            raise errdefs.InvalidParameter(f"frontend {req.frontend} not found")
        if req.exporter not in ("", EXPORTER_MOBY, EXPORTER_IMAGE):
            raise errdefs.InvalidParameter(f"exporter {req.exporter!r} could not be found")
        for export in req.cache_exports:
            # Only `inline` (BUILDKIT_INLINE_CACHE=1) comes from dockerd: accepted as a no-op, since our
            # cache keys are this daemon's own and would mean nothing in an image config.
            if export.get("type") != "inline":
                raise errdefs.InvalidParameter(f'unknown cache exporter: "{export.get("type")}"')
        attrs = req.frontend_attrs
        epoch = _source_date_epoch(attrs)
        job_cache = self.cache.job_cache()
        worker = Worker(
            cache=job_cache,
            snapshotter=self.snapshotter,
            runtime=self.runtime,
            image_service=self.image_service,
            registry=self.registry,
            source_date_epoch=epoch,
        )
        worker.bodies.update(req.bodies)
        worker.auth_configs.update(req.auth_configs)
        solver = Solver(worker, job_cache, max_parallelism=self.max_parallelism)
        job = solver.new_job(progress)
        try:
            result = await DockerfileFrontend(self, job, worker, req).build()
            response: dict[str, str] = {}
            if req.exporter:
                export = ExportRequest(
                    ref=result.ref,
                    image=result.image,
                    history_sources=result.history_sources,
                    names=[n for n in req.exporter_attrs.get("name", "").split(",") if n],
                    source_date_epoch=epoch,
                    result_of=lambda digest: _result_of(job, job_cache, result.vertices, digest),
                )
                exporter = MobyExporter(self.image_service, self.cache)
                image_id = await exporter.export(export, progress, req.ref)
                response["containerimage.digest"] = image_id
            return SolveResponse(response, job)
        finally:
            await worker.close()
            await in_thread(job_cache.close)

    # -- cache --

    async def prune(self, **options: Any) -> PruneReport:
        return await in_thread(lambda: self.cache.prune(**options))

    def disk_usage(self) -> list[dict[str, Any]]:
        return self.cache.disk_usage()


@dataclass
class FrontendResult:
    ref: Ref
    image: dict[str, Any]
    history_sources: list[str | None]
    vertices: dict[str, llb.Vertex]


class DockerfileFrontend:
    """The dockerfile.v0 frontend (frontend/dockerfile/builder/build.go) for a context in the request body."""

    def __init__(self, controller: Controller, job: Job, worker: Worker, req: SolveRequest) -> None:
        self.controller, self.job, self.worker, self.req = controller, job, worker, req
        self.attrs = req.frontend_attrs

    async def build(self) -> FrontendResult:
        context = self._context_state()
        context_ref = await self.job.build(llb.marshal(context))
        dockerfile = await in_thread(self._read_dockerfile, context_ref)
        opt = self._convert_opt(context)
        try:
            converted = await dockerfile_to_llb(dockerfile, opt)
        except (DockerfileError, ConvertError, platforms.PlatformError) as err:
            raise FrontendError(
                f"failed to solve with frontend {FRONTEND_DOCKERFILE}: failed to create LLB definition: {err}"
            ) from None
        definition = llb.marshal(converted.state)
        validate_entitlements(definition, self.req.entitlements)
        ref = await self.job.build(definition) if definition.target is not None else Ref()
        return FrontendResult(ref, converted.image, converted.history_sources, definition.by_digest())

    def _context_state(self) -> llb.State:
        """The context as BuildKit loads a remote one: the archive, then `copy /context /` (unpacked)."""
        identifier = self.attrs.get("context", "")
        if identifier not in self.req.bodies and not identifier.startswith(("http://", "https://")):
            message = f"unsupported context source {identifier}"
            raise FrontendError(f"failed to solve with frontend {FRONTEND_DOCKERFILE}: {message}")
        archive = llb.source(identifier, name="[internal] load remote build context",
                             attrs={"http.filename": "context"})  # fmt: skip
        state = llb.State().file(
            llb.copy(llb.State(archive), "/context", "/", attempt_unpack=True), name="copy /context /"
        )
        assert state.output is not None
        self.worker.content_addressed.add(state.output.digest)
        return state

    def _read_dockerfile(self, context: Ref) -> bytes:
        assert context.path is not None
        name = self.attrs.get("filename") or DEFAULT_DOCKERFILE
        path = follow_symlink_in_scope(name.lstrip("/"), context.path)
        try:
            return path.read_bytes()
        except OSError as err:
            reason = (err.strerror or str(err)).lower()
            raise FrontendError(
                f"failed to solve with frontend {FRONTEND_DOCKERFILE}: failed to read dockerfile: "
                f"open {path}: {reason}"
            ) from None

    def _convert_opt(self, context: llb.State) -> ConvertOpt:
        attrs = self.attrs
        ignore_cache: list[str] | None = None
        if "no-cache" in attrs:
            ignore_cache = [n for n in attrs["no-cache"].split(",") if n]
        extra_hosts = [h for h in attrs.get("add-hosts", "").split(",") if h]
        force = attrs.get("force-network-mode", "")
        # cache-from names images whose inline cache metadata would seed the cache: accepted, unused,
        # since minibuild writes none (see cache_exports) and reads no other builder's.
        return ConvertOpt(
            build_context=context,
            meta_resolver=_MetaResolver(self.controller, self.job, self.worker, self.req.auth_configs),
            target=attrs.get("target", ""),
            build_args={k[len("build-arg:") :]: v for k, v in attrs.items() if k.startswith("build-arg:")},
            labels={k[len("label:") :]: v for k, v in attrs.items() if k.startswith("label:")},
            ignore_cache=ignore_cache,
            image_resolve_mode=attrs.get("image-resolve-mode", "default"),
            target_platform=attrs.get("platform", ""),
            extra_hosts=extra_hosts,
            force_network_mode=force,
            ulimits=[u for u in attrs.get("ulimit", "").split(",") if u],
            shm_size=_parse_shm_size(attrs.get("shm-size", "")),
        )


class _MetaResolver:
    """ResolveImageConfig for FROM images: the local image store first (moby's prefer-local), else the
    registry, which gives the config and the digest the frontend pins (always the registry with `pull`).
    Each image is resolved once per build, however many stages start from it."""

    def __init__(self, controller: Controller, job: Job, worker: Worker, auth_configs: dict[str, AuthConfig]):
        self.controller, self.job, self.worker, self.auth_configs = controller, job, worker, auth_configs
        self.resolved: dict[tuple[str, str, str], asyncio.Future[tuple[str, dict[str, Any]]]] = {}

    async def resolve_image_config(
        self, ref: str, *, platform: str, resolve_mode: str, log_name: str
    ) -> tuple[str, dict[str, Any]]:
        key = (ref, platform, resolve_mode)
        if key not in self.resolved:
            self.resolved[key] = asyncio.ensure_future(
                self._resolve_with_progress(ref, platform, resolve_mode, log_name)
            )
        return await self.resolved[key]

    async def _resolve_with_progress(
        self, ref: str, platform: str, resolve_mode: str, log_name: str
    ) -> tuple[str, dict[str, Any]]:
        progress = self.job.progress
        digest = "sha256:" + hashlib.sha256(log_name.encode()).hexdigest()
        if progress is not None:
            progress.announce([ProgressVertex(digest, [], log_name)])
            progress.start(digest)
        try:
            result = await self._resolve(ref, platform, resolve_mode)
        except Exception as err:
            if progress is not None:
                progress.complete(digest, error=str(err))
            raise ConvertError(str(err)) from None
        if progress is not None:
            progress.complete(digest)
        return result

    async def _resolve(self, ref: str, platform: str, resolve_mode: str) -> tuple[str, dict[str, Any]]:
        service = self.controller.image_service
        registry = self.controller.registry
        if resolve_mode != "pull":
            try:
                return "", service.get_image(ref).config
            except errdefs.NotFound:
                if registry is None:
                    raise errdefs.NotFound(f"{ref}: not found") from None
        if registry is None:
            raise errdefs.NotFound(f"{ref}: not found: this daemon cannot pull images")
        parsed = parse_reference(ref)
        auth = registry.resolve_auth_config(self.auth_configs, parsed)
        resolved = await resolve_image_config(registry, parsed, auth=auth, platform=platforms.parse(platform))
        digest = resolved.ref.digest
        self.worker.remote_images[pinned_name(ref, digest)] = resolved  # the FROM vertex pulls it
        return digest, json.loads(resolved.config)


def _result_of(job: Job, cache: JobCache, vertices: dict[str, llb.Vertex], digest: str) -> Ref | None:
    """A vertex's result, as this build solved it, else as the cache holds it."""
    vertex = vertices.get(digest)
    if vertex is None:
        return None
    result = job.result(vertex)
    if isinstance(result, Ref):
        return result
    key = job.cache_key(vertex)
    record = cache.manager.record(key) if key else None
    if record is None:
        return None
    layers = cache.manager.layers
    chain = tuple(layers.chain(record.chain_id)) if record.chain_id and record.chain_id in layers else ()
    return Ref(chain, None, record.created_at)


def _parse_shm_size(value: str) -> int:
    """parseShmSize: bytes, as a decimal integer ("" is the default)."""
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise errdefs.InvalidParameter(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def validate_entitlements(definition: llb.Definition, entitlements: list[str]) -> None:
    """ValidateEntitlements: a RUN on the host's network needs the network.host entitlement, which the
    build has with networkmode=host only."""
    for vertex in definition:
        if (
            vertex.kind == "exec"
            and vertex.op["network"] == "host"
            and ENTITLEMENT_NETWORK_HOST not in entitlements
        ):
            raise FrontendError(
                f"failed to solve with frontend {FRONTEND_DOCKERFILE}: failed to load LLB: "
                f"{ENTITLEMENT_NETWORK_HOST} is not allowed"
            )


def _source_date_epoch(attrs: dict[str, str]) -> int | None:
    value = attrs.get(KEY_SOURCE_DATE_EPOCH)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise errdefs.InvalidParameter(f'invalid SOURCE_DATE_EPOCH "{value}": expected Unix seconds')
    return int(value)
