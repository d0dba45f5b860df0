"""BuildKit-style builds behind POST /build?version=2 (moby builder/builder-next/builder.go).

`Builder.build(config)` reads like dockerd's Go: build jobs by `buildid` (including the two-request
`upload-request` flow, with its 5-second waits), the frontend attrs made from the build options, the
same refusals (an unsupported network mode, more than one output), the exporter (`moby` unless told
otherwise; `cacheonly` exports nothing), the inline-cache build arg, a solve request; then three tasks
run together — solve, status, emit — and the image ID comes back as the `moby.image.id` aux message.
Progress reaches the client as `moby.buildkit.trace` aux messages: base64 of a StatusResponse.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from minibuild import errdefs, trace
from minibuild.api import platforms
from minibuild.api.backend import BuildConfig
from minibuild.api.streamformatter import AuxFormatter
from minibuild.api.types import BuildCachePruneOptions, BuildCachePruneReport, Ulimit
from minibuild.builder import BuildComponents
from minibuild.builder.next.cache import CacheManager, new_id
from minibuild.builder.next.controller import CONTEXT_SCHEME, Controller, SolveRequest
from minibuild.builder.next.exporter import EXPORTER_IMAGE, EXPORTER_MOBY, sanitize_repo_and_tags
from minibuild.distribution import RegistryService
from minibuild.dockerfile.gotext import parse_duration
from minibuild.image.image import InvalidImageConfig, parse_time
from minibuild.image.reference import InvalidReference
from minibuild.image.service import ImageService
from minibuild.runtime import Runtime, default_runtime
from minibuild.snapshot import Snapshotter, select_snapshotter
from minibuild.snapshot.snapshotter import remove_tree

UPLOAD_REQUEST = "upload-request"
CLIENT_SESSION = "client-session"
UPLOAD_WAIT = 5.0  # seconds either side of an upload waits for the other (moby's 5*time.Second)
TRACE_ID = "moby.buildkit.trace"
IMAGE_ID = "moby.image.id"


@dataclass
class Result:
    """builder.Result: the image a build produced ("" when nothing was exported)."""

    image_id: str


@dataclass
class Opt:
    """What the daemon gives the builder (builder-next's Opt): where its cache lives and its services."""

    root: Path  # <data root>/buildkit
    image_service: ImageService
    registry: RegistryService | None = None
    runtime: Runtime | None = None
    snapshotter: Snapshotter | None = None
    max_parallelism: int | None = None


class _BuildJob:
    """buildJob: the cancel of a running build, and the rendezvous of an upload-request pair."""

    def __init__(self) -> None:
        self.cancel: asyncio.Task | None = None
        self.uploads: asyncio.Queue[tuple[Path, asyncio.Future[None]]] = asyncio.Queue(maxsize=1)

    async def wait_upload(self, tmp_dir: Path) -> Path:
        """The body another request uploads for this build, kept (hard-linked) as our own file."""
        path, done = await self.uploads.get()
        try:
            mine = tmp_dir / f"build-context-{secrets.token_hex(8)}"
            try:
                os.link(path, mine)
            except OSError:
                await asyncio.to_thread(_copy_file, path, mine)
            return mine
        finally:
            if not done.done():
                done.set_result(None)

    async def set_upload(self, path: Path) -> None:
        """Hand our body to the waiting build; return once it has its own copy."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.uploads.put((path, done))
        await done


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)


class Builder:
    """Builds with the DAG solver; one per daemon."""

    def __init__(self, opt: Opt) -> None:
        root = Path(opt.root)
        runtime = opt.runtime or default_runtime()
        snapshotter = opt.snapshotter or select_snapshotter(root / "snapshots", runtime)
        for leftover in snapshotter.snapshots.iterdir():  # a killed daemon's steps: none runs yet
            remove_tree(leftover)
        remove_layer = getattr(snapshotter, "remove_layer", None)
        self.cache = CacheManager(root / "cache", on_layer_removed=remove_layer)
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        self.controller = Controller(
            image_service=opt.image_service,
            cache=self.cache,
            snapshotter=snapshotter,
            runtime=runtime,
            registry=opt.registry,
            max_parallelism=opt.max_parallelism,
        )
        self.jobs: dict[str, _BuildJob] = {}

    async def cancel(self, build_id: str) -> None:
        """Cancel cancels a build using its ID (unknown IDs are not an error)."""
        job = self.jobs.get(build_id)
        if job is not None and job.cancel is not None:
            job.cancel.cancel()

    async def prune(self, options: BuildCachePruneOptions) -> BuildCachePruneReport:
        """Prune clears build cache records that match the options (see CacheManager.prune)."""
        filters = dict(options.filters)
        keep_duration = 0.0
        for name in ("until", "unused-for"):
            value = filters.pop(name, None)
            if value:
                keep_duration = _keep_duration(value)
        report = await self.controller.prune(
            all=options.all, keep_storage=options.keep_storage, keep_duration=keep_duration, filters=filters
        )
        return BuildCachePruneReport(report.caches_deleted or None, report.space_reclaimed)

    @trace.traced
    async def build(self, config: BuildConfig) -> Result | None:
        """Build executes a build request; None for the upload half of an upload-request pair."""
        options = config.options
        if len(options.outputs) > 1:
            raise errdefs.System("multiple outputs not supported")

        source: Path | None = config.source
        owned: Path | None = None
        build_id = options.build_id
        if build_id:
            upload = build_id.startswith(UPLOAD_REQUEST + ":")
            if upload:
                build_id = build_id[len(UPLOAD_REQUEST) + 1 :]
            job = self.jobs.setdefault(build_id, _BuildJob())
            if upload:
                # The upload half only hands its body over; the build (and what cancels it) is the
                # other request's, which forgets the job when it ends.
                try:
                    async with asyncio.timeout(UPLOAD_WAIT):
                        await job.set_upload(config.source)
                except TimeoutError:
                    if job.cancel is None:
                        self._forget(build_id, job)
                    raise errdefs.Deadline("context deadline exceeded") from None
                return None
            job.cancel = asyncio.current_task()
            if options.remote_context == UPLOAD_REQUEST:
                try:
                    async with asyncio.timeout(UPLOAD_WAIT):
                        source = owned = await job.wait_upload(self.tmp_dir)
                except TimeoutError:
                    self._forget(build_id, job)
                    raise errdefs.Deadline("context deadline exceeded") from None
                options.remote_context = ""
        try:
            return await self._build(config, source)
        finally:
            if build_id:
                self._forget(build_id, self.jobs.get(build_id))
            if owned is not None:
                owned.unlink(missing_ok=True)

    def _forget(self, build_id: str, job: _BuildJob | None) -> None:
        if job is not None and self.jobs.get(build_id) is job:
            del self.jobs[build_id]

    async def _build(self, config: BuildConfig, source: Path | None) -> Result:
        options = config.options
        ref = new_id()
        bodies: dict[str, Path] = {}

        frontend_attrs: dict[str, str] = {}
        if options.target:
            frontend_attrs["target"] = options.target
        if options.dockerfile and options.dockerfile != ".":
            frontend_attrs["filename"] = options.dockerfile
        if options.remote_context:
            if options.remote_context != CLIENT_SESSION:
                frontend_attrs["context"] = options.remote_context
        else:
            # dockerd serves the body on an internal URL (reqBodyHandler); we name the spooled file.
            url = CONTEXT_SCHEME + ref
            if source is not None:
                bodies[url] = source
            frontend_attrs["context"] = url
        frontend_attrs["cache-from"] = ",".join(options.cache_from)
        for key, value in options.build_args.items():
            if value is None:
                continue
            frontend_attrs["build-arg:" + key] = value
        if "SOURCE_DATE_EPOCH" not in options.build_args and os.environ.get("SOURCE_DATE_EPOCH"):
            frontend_attrs["build-arg:SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
        for key, value in options.labels.items():
            frontend_attrs["label:" + key] = value
        if options.no_cache:
            frontend_attrs["no-cache"] = ""
        frontend_attrs["image-resolve-mode"] = "pull" if options.pull_parent else "default"
        if options.platform:
            try:
                platforms.parse(options.platform)
            except platforms.PlatformError as err:
                raise errdefs.InvalidParameter(str(err)) from None
            frontend_attrs["platform"] = options.platform
        if options.network_mode in ("host", "none"):
            frontend_attrs["force-network-mode"] = options.network_mode
        elif options.network_mode not in ("", "default"):
            raise errdefs.System(f'network mode "{options.network_mode}" not supported by buildkit')
        frontend_attrs["add-hosts"] = to_buildkit_extra_hosts(options.extra_hosts)
        if options.shm_size > 0:
            # Carried as BuildKit carries it; minibuild's runtime sizes /dev/shm itself.
            frontend_attrs["shm-size"] = str(options.shm_size)
        if ulimits := to_buildkit_ulimits(options.ulimits):
            frontend_attrs["ulimit"] = ulimits

        exporter_name = ""
        exporter_attrs: dict[str, str] = {}
        if not options.outputs:
            exporter_name = EXPORTER_MOBY
        elif options.outputs[0].get("Type") != "cacheonly":  # cacheonly: skip every exporter
            exporter_name = options.outputs[0].get("Type", "")
            exporter_attrs = dict(options.outputs[0].get("Attrs") or {})
        if exporter_name in (EXPORTER_IMAGE, EXPORTER_MOBY) and options.tags:
            try:
                exporter_attrs["name"] = ",".join(sanitize_repo_and_tags(options.tags))
            except InvalidReference as err:
                raise errdefs.InvalidParameter(str(err)) from None

        cache_exports = []
        inline = options.build_args.get("BUILDKIT_INLINE_CACHE")
        if inline is not None and _parse_bool(inline):
            cache_exports.append({"type": "inline"})

        req = SolveRequest(
            ref=ref,
            exporter=exporter_name,
            exporter_attrs=exporter_attrs,
            frontend_attrs=frontend_attrs,
            session=options.session_id,
            cache_exports=cache_exports,
            entitlements=["network.host"] if options.network_mode == "host" else [],
            bodies=bodies,
            auth_configs=dict(options.auth_configs),
        )

        aux = AuxFormatter(config.progress_writer.output)
        out = Result("")
        channel: asyncio.Queue = asyncio.Queue()
        done = object()

        async def solve() -> None:
            resp = await self.controller.solve(req)
            if exporter_name not in (EXPORTER_MOBY, EXPORTER_IMAGE):
                return
            image_id = resp.exporter_response.get("containerimage.digest")
            if not image_id:
                raise errdefs.System("missing image id")
            out.image_id = image_id
            aux.emit(IMAGE_ID, {"ID": image_id})

        stream = self.controller.status(ref)  # held from now: it sees the solve from its first event

        async def status_and_emit() -> None:
            # status: the controller's progress into a channel; emit: each message as a trace aux.
            async def status() -> None:
                try:
                    async for sr in stream:
                        channel.put_nowait(sr)
                finally:
                    channel.put_nowait(done)

            async def emit() -> None:
                while (sr := await channel.get()) is not done:
                    aux.emit(TRACE_ID, base64.b64encode(sr.marshal()).decode())

            async with asyncio.TaskGroup() as group:
                group.create_task(status())
                group.create_task(emit())

        # errgroup.WithContext: solve, status and emit together; a failure of one stops the others.
        # As dockerd's status proxy, the stream outlives a cancelled request: the solve's last updates
        # (its vertices marked cancelled) still reach the client before the error does.
        solving = asyncio.ensure_future(solve())
        emitting = asyncio.ensure_future(status_and_emit())
        try:
            await asyncio.wait([solving, emitting], return_when=asyncio.FIRST_EXCEPTION)
            if emitting.done() and emitting.exception() is not None:
                solving.cancel()
        finally:
            if not solving.done():
                solving.cancel()
            await _settle(solving)
            await _settle(emitting)
        if not solving.cancelled() and solving.exception() is not None:
            raise solving.exception()
        if not emitting.cancelled() and emitting.exception() is not None:
            raise _first(emitting.exception())
        return out


async def _settle(task: asyncio.Future) -> None:
    """Wait until `task` is done, even while being cancelled ourselves (the caller re-raises)."""
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


def new_builder(
    data_root: Path, components: BuildComponents, *, max_parallelism: int | None = None
) -> Builder:
    """The daemon's BuildKit-style builder: its cache under <data root>/buildkit, the daemon's services."""
    return Builder(
        Opt(
            root=Path(data_root) / "buildkit",
            image_service=components.image_service,
            registry=components.registry,
            runtime=components.runtime,
            max_parallelism=max_parallelism,
        )
    )


def _first(group: BaseException) -> BaseException:
    """The error that failed a group (errgroup's first), not the cancellations it caused."""
    if not isinstance(group, BaseExceptionGroup):
        return group
    for err in group.exceptions:
        if isinstance(err, BaseExceptionGroup):
            return _first(err)
        if not isinstance(err, asyncio.CancelledError):
            return err
    return group.exceptions[0]


def _keep_duration(value: str) -> float:
    """until=: a Go duration (`24h`) or a time (RFC 3339, or Unix seconds), as seconds before now."""
    try:
        return parse_duration(value) / 1e9
    except ValueError as err:
        duration_error = err
    try:
        seconds = float(value) if value.replace(".", "", 1).isdigit() else parse_time(value) / 1e9
    except (ValueError, InvalidImageConfig):
        raise errdefs.InvalidParameter(f"failed to prune build cache: {duration_error}") from None
    return max(time.time() - seconds, 0.0)


def to_buildkit_extra_hosts(hosts: list[str]) -> str:
    """Docker's host:ip to BuildKit's host=ip, comma separated; refusals as moby words them."""
    out = []
    for entry in hosts:
        host, sep, ip = entry.partition(":")
        if not sep or not host or not ip:
            raise errdefs.System(f"invalid host {entry}")
        if ip == "host-gateway":  # the daemon's bridge gateway: minibuild has no bridge network
            raise errdefs.System("unable to derive the IP value for host-gateway")
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise errdefs.System(f"invalid host {entry}") from None
        out.append(f"{host}={ip}")
    return ",".join(out)


def to_buildkit_ulimits(ulimits: list[Ulimit]) -> str:
    """go-units Ulimit.String(): name=soft:hard, comma separated."""
    return ",".join(f"{u.name}={u.soft}:{u.hard}" for u in ulimits)


def _parse_bool(value: str) -> bool:
    """strconv.ParseBool; anything else is false here, as moby ignores the parse error."""
    return value in ("1", "t", "T", "TRUE", "true", "True")
