"""`POST /build`, `/build/prune`, `/build/cancel` (moby api/server/router/build/build.go, build_routes.go,
backend.go).

`post_build` is where a `docker build` enters the daemon: it parses the query into
`ImageBuildOptions` (`new_image_build_options`, with dockerd's exact refusals), reads the registry
credentials (`get_auth_configs`), streams the request body to a file under the data root, and calls
`Backend.build` with writers that turn output into the JSON message stream. The rule for errors is
dockerd's: an error before the first message is an ordinary HTTP error; after it, the status is
already 200 and the error becomes the stream's last message. Quiet builds (`q=1`) keep the verbose log
in memory and send it only if the build fails, then the error; on success only the image id.

Options minibuild cannot honour are either refused as dockerd refuses them (`securityopt`, an
`isolation` other than `default`, `squash` without experimental mode) or accepted, parsed, checked
and carried in ImageBuildOptions as no-ops: those are listed, with the reason, in
`NOT_ENFORCED_OPTIONS` beside `new_image_build_options`.
"""

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web

from minibuild import errdefs, trace
from minibuild.api import jsondecode, platforms, versions
from minibuild.api.backend import BuildConfig, ProgressWriter
from minibuild.api.httputils import (
    NumError,
    bool_value,
    form_value,
    form_values,
    int64_value_or_zero,
    parse_int,
    write_json,
)
from minibuild.api.ioutils import WriteFlusher, spool_request_body
from minibuild.api.server import Route, version_from_request
from minibuild.api.streamformatter import (
    AuxFormatter,
    BufferSink,
    JSONProgressOutput,
    Sink,
    format_error,
    new_stderr_writer,
    new_stdout_writer,
)
from minibuild.api.types import (
    BUILDER_BUILDKIT,
    BUILDER_V1,
    AuthConfig,
    BuildCachePruneOptions,
    BuildCachePruneReport,
    ImageBuildOptions,
    Ulimit,
)
from minibuild.distribution.auth import decode_auth_configs

log = logging.getLogger("minibuild.api")

_ULIMIT = jsondecode.struct(
    "units.Ulimit", Name=jsondecode.STRING, Hard=jsondecode.INT64, Soft=jsondecode.INT64
)
_ULIMITS = jsondecode.slice_of(jsondecode.ptr_to(_ULIMIT))
_BUILD_ARGS = jsondecode.map_of(jsondecode.ptr_to(jsondecode.STRING))
_LABELS = jsondecode.map_of(jsondecode.STRING)
_CACHE_FROM = jsondecode.slice_of(jsondecode.STRING)
_OUTPUTS = jsondecode.slice_of(
    jsondecode.struct(
        "types.ImageBuildOutput", Type=jsondecode.STRING, Attrs=jsondecode.map_of(jsondecode.STRING)
    )
)
_FILTERS = jsondecode.map_of(jsondecode.map_of(jsondecode.BOOL))
_LEGACY_FILTERS = jsondecode.map_of(jsondecode.slice_of(jsondecode.STRING))

# Filters of /build/prune (builder-next's cacheFields, plus the age filters); others are refused.
_PRUNE_FILTERS = ("id", "parent", "type", "description", "inuse", "shared", "private", "until", "unused-for")


class Backend(Protocol):
    """What the build router needs (moby router/build/backend.go); minibuild.backend implements it.

    build       run one build and return the image id (`sha256:…`). Write output through
                `config.progress_writer`. Raise errdefs errors with Docker's messages (e.g.
                InvalidParameter for Dockerfile parse errors, 400) and, for a RUN that exits non-zero,
                `minibuild.api.jsonmessage.JSONError(message, code=exit_status)`. Cancellation arrives
                as asyncio.CancelledError (client gone, daemon stopping, /build/cancel).
    prune_cache remove BuildKit-style cache records matching the (already validated) options.
    cancel      cancel the running build whose options.build_id is `build_id`, if any, by cancelling
                the task that runs its `build` (remember `asyncio.current_task()` there). dockerd only
                honours it for BuildKit builds (version=2); a classic build runs on. The router then
                ends that build's stream with `context canceled`.
    """

    async def build(self, config: BuildConfig) -> str: ...

    async def prune_cache(self, options: BuildCachePruneOptions) -> BuildCachePruneReport: ...

    async def cancel(self, build_id: str) -> None: ...


def parse_version(value: str) -> str:
    """parseVersion: `1` (or nothing) is the classic builder, `2` BuildKit."""
    if value in ("", BUILDER_V1):
        return BUILDER_V1
    if value == BUILDER_BUILDKIT:
        return BUILDER_BUILDKIT
    raise errdefs.System(f'invalid version "{value}"')


def _json_param(raw: str, go_type: jsondecode.GoType, context: str) -> object:
    """Decode a JSON query value; Go's message, wrapped as dockerd wraps it (400 when `context`)."""
    try:
        return jsondecode.unmarshal(raw, go_type)
    except jsondecode.GoJSONError as err:
        if context:
            raise errdefs.InvalidParameter(f"{context}: {err}")
        raise errdefs.System(str(err))


# Query parameters dockerd honours that minibuild accepts (parsed and checked as dockerd does, then
# carried in ImageBuildOptions) but does not apply to build steps: parameter -> why. The docker CLI
# sends most of them with every build, zero or empty.
NOT_ENFORCED_OPTIONS: dict[str, str] = {
    "memory": "no memory limit: steps run without cgroups",
    "memswap": "no swap limit: steps run without cgroups",
    "cpushares": "no CPU shares: steps run without cgroups",
    "cpuperiod": "no CFS period: steps run without cgroups",
    "cpuquota": "no CFS quota: steps run without cgroups",
    "cpusetcpus": "no CPU pinning: steps run without cgroups",
    "cpusetmems": "no memory-node pinning: steps run without cgroups",
    "cgroupparent": "no parent cgroup: steps run without cgroups",
    "shmsize": "every step's /dev/shm is a 64 MiB tmpfs, Docker's default size",
    "ulimits": "steps keep the daemon's own resource limits",
    "session": "no BuildKit session endpoint (/session): the context comes as the request body",
}


@trace.traced
def new_image_build_options(request: web.Request) -> ImageBuildOptions:
    """newImageBuildOptions: the query of POST /build, parsed and checked as dockerd does."""
    version = version_from_request(request)
    options = ImageBuildOptions()
    if bool_value(request, "forcerm") or form_value(request, "rm") == "":
        options.remove = True  # rm defaults to true when absent
    else:
        options.remove = bool_value(request, "rm")
    options.pull_parent = bool_value(request, "pull") and versions.greater_than_or_equal_to(version, "1.16")
    options.dockerfile = form_value(request, "dockerfile")
    options.suppress_output = bool_value(request, "q")
    options.no_cache = bool_value(request, "nocache")
    options.force_remove = bool_value(request, "forcerm")
    # Resource limits: carried, not enforced (NOT_ENFORCED_OPTIONS); unparsable values are 0, as in dockerd.
    options.memory_swap = int64_value_or_zero(request, "memswap")
    options.memory = int64_value_or_zero(request, "memory")
    options.cpu_shares = int64_value_or_zero(request, "cpushares")
    options.cpu_period = int64_value_or_zero(request, "cpuperiod")
    options.cpu_quota = int64_value_or_zero(request, "cpuquota")
    options.cpu_set_cpus = form_value(request, "cpusetcpus")
    options.cpu_set_mems = form_value(request, "cpusetmems")
    options.cgroup_parent = form_value(request, "cgroupparent")
    options.network_mode = form_value(request, "networkmode")
    options.tags = form_values(request, "t")
    options.extra_hosts = form_values(request, "extrahosts")
    options.security_opt = form_values(request, "securityopt")
    options.squash = bool_value(request, "squash")
    options.target = form_value(request, "target")
    options.remote_context = form_value(request, "remote")

    platform = form_value(request, "platform")
    if platform and versions.greater_than_or_equal_to(version, "1.32"):
        try:
            options.platform = platforms.parse(platform).format()
        except platforms.PlatformError as err:
            raise errdefs.InvalidParameter(str(err))

    if shm := form_value(request, "shmsize"):
        try:
            options.shm_size = parse_int(shm)
        except NumError as err:
            raise errdefs.System(str(err))

    if isolation := form_value(request, "isolation"):
        if isolation.lower() != "default":  # the only isolation Linux has
            raise errdefs.InvalidParameter(f'Unsupported isolation: "{isolation}"')
        options.isolation = isolation

    if options.security_opt:
        raise errdefs.InvalidParameter(
            "The daemon on this platform does not support setting security options on build"
        )

    if ulimits := form_value(request, "ulimits"):
        decoded = _json_param(ulimits, _ULIMITS, "error reading ulimit settings") or []
        options.ulimits = [
            Ulimit(u.get("Name") or "", u.get("Hard") or 0, u.get("Soft") or 0) for u in decoded if u
        ]

    if build_args := form_value(request, "buildargs"):
        options.build_args = _json_param(build_args, _BUILD_ARGS, "error reading build args") or {}

    if labels := form_value(request, "labels"):
        decoded_labels = _json_param(labels, _LABELS, "error reading labels") or {}
        options.labels = {k: v or "" for k, v in decoded_labels.items()}

    if cache_from := form_value(request, "cachefrom"):
        options.cache_from = [c or "" for c in _json_param(cache_from, _CACHE_FROM, "") or []]

    options.session_id = form_value(request, "session")
    options.build_id = form_value(request, "buildid")
    options.version = parse_version(form_value(request, "version"))

    if versions.greater_than_or_equal_to(version, "1.40") and (outputs := form_value(request, "outputs")):
        decoded_outputs = _json_param(outputs, _OUTPUTS, "") or []
        options.outputs = [
            {"Type": o.get("Type") or "", "Attrs": o.get("Attrs") or {}} for o in decoded_outputs if o
        ]
    return options


@trace.traced
def get_auth_configs(headers: Mapping[str, str]) -> dict[str, AuthConfig]:
    """getAuthConfigs: the registry credentials of X-Registry-Config (undecodable ones are ignored)."""
    return decode_auth_configs(headers.get("X-Registry-Config"))


def _build_progress_writer(sink: Sink, want_aux: bool) -> ProgressWriter:
    """buildProgressWriter: the writers a builder uses, all over one sink."""
    return ProgressWriter(
        output=sink,
        stdout_formatter=new_stdout_writer(sink),
        stderr_formatter=new_stderr_writer(sink),
        aux_formatter=AuxFormatter(sink) if want_aux else None,
        progress_output=JSONProgressOutput(sink, newlines=True),
    )


class BuildRouter:
    """The build endpoints; `data_root` is where request bodies are spooled (`<data_root>/tmp`)."""

    def __init__(self, backend: Backend | None, data_root: Path, *, experimental: bool = False) -> None:
        self.backend = backend
        self.tmp_dir = Path(data_root) / "tmp"
        self.experimental = experimental
        self.running: set[asyncio.Task] = set()
        self.stopping = False

    def init_routes(self) -> list[Route]:
        return [
            Route("POST", "/build", self.post_build),
            Route("POST", "/build/prune", self.post_prune),
            Route("POST", "/build/cancel", self.post_cancel),
        ]

    def _require_backend(self) -> Backend:
        if self.backend is None:
            raise errdefs.NotImplemented("this minibuild daemon was started without a builder")
        return self.backend

    @trace.traced
    async def post_build(self, request: web.Request) -> web.StreamResponse:
        version = version_from_request(request)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        output = WriteFlusher(request, response)
        quiet_buffer = BufferSink()
        task = asyncio.current_task()
        source: Path | None = None

        def errf(err: BaseException) -> web.StreamResponse:
            if bool_value(request, "q") and quiet_buffer.buffer:
                output.write(quiet_buffer.getvalue())
            if not output.flushed:
                raise err  # nothing sent yet: an ordinary HTTP error
            output.write(format_error(err))
            return response

        try:
            try:
                options = new_image_build_options(request)
            except errdefs.DockerError as err:
                return errf(err)
            options.auth_configs = get_auth_configs(request.headers)
            if options.squash and not self.experimental:
                raise errdefs.InvalidParameter("squash is only supported with experimental mode")
            backend = self._require_backend()
            source = await spool_request_body(request, self.tmp_dir, "build-context-")
            out: Sink = quiet_buffer if options.suppress_output else output
            want_aux = versions.greater_than_or_equal_to(version, "1.30")
            config = BuildConfig(source, options, _build_progress_writer(out, want_aux))
            if task is not None:
                self.running.add(task)
            try:
                image_id = await backend.build(config)
            except asyncio.CancelledError:
                if not self._cancelled_by_request(request) or task is None:
                    raise
                task.uncancel()
                return errf(errdefs.Cancelled("context canceled"))
            except Exception as err:
                return errf(err)
            if options.suppress_output:
                new_stdout_writer(output).write(f"{image_id}\n")
            return response
        except BaseException:
            output.abort()
            raise
        finally:
            self.running.discard(task)
            if source is not None:
                source.unlink(missing_ok=True)
            if not output.closed:
                await output.close()

    def _cancelled_by_request(self, request: web.Request) -> bool:
        """A cancelled build whose client is still there and daemon still running: /build/cancel."""
        transport = request.transport
        return not self.stopping and transport is not None and not transport.is_closing()

    def cancel_all(self) -> None:
        """Cancel every running build (the daemon is stopping)."""
        self.stopping = True
        for task in list(self.running):
            task.cancel()

    async def post_prune(self, request: web.Request) -> web.StreamResponse:
        """postPrune: filters, all, keep-storage; then the backend prunes."""
        raw = form_value(request, "filters")
        filters = parse_filters(raw)
        keep_storage = form_value(request, "keep-storage") or "0"
        try:
            ks = parse_int(keep_storage, "Atoi")
        except NumError as err:
            raise errdefs.System(
                f"keep-storage is in bytes and expects an integer, got {keep_storage}: {err}"
            )
        options = BuildCachePruneOptions(
            all=bool_value(request, "all"), keep_storage=ks, filters=validate_prune_filters(filters)
        )
        report = await self._require_backend().prune_cache(options)
        return await write_json(request, 200, report.to_dict())

    async def post_cancel(self, request: web.Request) -> web.StreamResponse:
        """postCancel: `id` is the `buildid` a build was started with; unknown ids are not an error."""
        build_id = form_value(request, "id")
        if not build_id:
            raise errdefs.System("build ID not provided")
        await self._require_backend().cancel(build_id)
        return web.Response(status=200, headers={"Content-Type": "application/json", "Content-Length": "0"})


def parse_filters(raw: str) -> dict[str, list[str]]:
    """filters.FromJSON: `{"key":{"value":true}}`, or the legacy `{"key":["value"]}`; "" is no filter."""
    if not raw:
        return {}
    try:
        decoded = jsondecode.unmarshal(raw, _FILTERS) or {}
        return {k: sorted(v or {}) for k, v in decoded.items()}
    except jsondecode.GoJSONError as err:
        try:
            legacy = jsondecode.unmarshal(raw, _LEGACY_FILTERS) or {}
        except jsondecode.GoJSONError:
            raise errdefs.System(f"could not parse filters: {err}")
        return {k: [x or "" for x in v or []] for k, v in legacy.items()}


def validate_prune_filters(filters: dict[str, list[str]]) -> dict[str, str | None]:
    """The checks of builder-next's Prune: known keys only, at most one value each."""
    for key in filters:
        if key not in _PRUNE_FILTERS:
            raise errdefs.InvalidParameter(f"failed to prune build cache: Invalid filter '{key}'")
    if "until" in filters and "unused-for" in filters:
        raise errdefs.InvalidParameter("failed to prune build cache: filters expect only one value")
    out: dict[str, str | None] = {}
    for key, values in filters.items():
        if len(values) > 1:
            raise errdefs.InvalidParameter("failed to prune build cache: filters expect only one value")
        out[key] = values[0] if values else None
    return out
