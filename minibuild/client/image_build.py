"""`POST /build` from the client side (moby client/image_build.go, build_cancel.go, build_prune.go).

`image_build(context, options)` sends the context tar as the request body (bytes go with a
Content-Length, a file or an iterator of chunks with chunked encoding, as the docker CLI sends it),
the options as the query (`image_build_options_to_query`), `Content-Type: application/x-tar` and the
registry credentials as base64url JSON in `X-Registry-Config`. The answer streams back as JSON
messages.
"""

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from minibuild import gojson
from minibuild.api import versions
from minibuild.api.jsonmessage import decode_stream
from minibuild.api.types import BuildCachePruneOptions, BuildCachePruneReport, ImageBuildOptions


@dataclass
class ImageBuildResponse:
    """The build's answer (types.ImageBuildResponse): the streamed body and the daemon's OS."""

    body: Any  # a client.ServerResponse
    os_type: str

    def messages(self) -> Iterator[dict[str, Any]]:
        """The stream's JSON messages, decoded as they arrive."""
        return decode_stream(self.body.iter_bytes())

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> "ImageBuildResponse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_version_error(api_version: str, required: str, feature: str) -> None:
    """NewVersionError: refuse a feature the negotiated API version does not have."""
    if api_version and versions.less_than(api_version, required):
        raise ValueError(
            f'"{feature}" requires API version {required}, but the Docker daemon API version is {api_version}'
        )


_SERVER_HEADER_RE = re.compile(r"\ADocker/.+\s\((.+)\)\Z")


def get_docker_os(server_header: str) -> str:
    """The daemon's OS from its `Server: Docker/<version> (<os>)` header (getDockerOS)."""
    match = _SERVER_HEADER_RE.match(server_header or "")
    return match.group(1) if match else ""


def _go_json(value: Any) -> str:
    # json.Marshal: compact, map keys sorted, <>& escaped.
    return gojson.dumps(value, sort_keys=True)


def image_build_options_to_query(options: ImageBuildOptions, api_version: str = "") -> dict[str, Any]:
    """imageBuildOptionsToQuery: every parameter, as the 1.40-era client sends them (zeros included)."""
    query: dict[str, Any] = {
        "t": list(options.tags),
        "securityopt": list(options.security_opt),
        "extrahosts": list(options.extra_hosts),
    }
    if options.suppress_output:
        query["q"] = "1"
    if options.remote_context:
        query["remote"] = options.remote_context
    if options.no_cache:
        query["nocache"] = "1"
    query["rm"] = "1" if options.remove else "0"
    if options.force_remove:
        query["forcerm"] = "1"
    if options.pull_parent:
        query["pull"] = "1"
    if options.squash:
        new_version_error(api_version, "1.25", "squash")
        query["squash"] = "1"
    if options.isolation and options.isolation.lower() != "default":
        query["isolation"] = options.isolation
    query.update(
        cpusetcpus=options.cpu_set_cpus,
        networkmode=options.network_mode,
        cpusetmems=options.cpu_set_mems,
        cpushares=str(options.cpu_shares),
        cpuquota=str(options.cpu_quota),
        cpuperiod=str(options.cpu_period),
        memory=str(options.memory),
        memswap=str(options.memory_swap),
        cgroupparent=options.cgroup_parent,
        shmsize=str(options.shm_size),
        dockerfile=options.dockerfile,
        target=options.target,
    )
    ulimits = [{"Name": u.name, "Hard": u.hard, "Soft": u.soft} for u in options.ulimits]
    query["ulimits"] = gojson.dumps(ulimits or None)  # structs keep their field order
    query["buildargs"] = _go_json(options.build_args)
    query["labels"] = _go_json(options.labels)
    query["cachefrom"] = _go_json(options.cache_from)
    if options.session_id:
        query["session"] = options.session_id
    if options.platform:
        new_version_error(api_version, "1.32", "platform")
        query["platform"] = options.platform.lower()
    if options.build_id:
        query["buildid"] = options.build_id
    query["version"] = options.version
    if options.outputs:
        query["outputs"] = gojson.dumps(options.outputs)
    return {k: v for k, v in query.items() if v != []}


def encode_auth_configs(options: ImageBuildOptions) -> str:
    """X-Registry-Config: base64url (padded) of the JSON map registry -> credentials."""
    auths = {registry: auth.to_dict() for registry, auth in options.auth_configs.items()}
    return base64.urlsafe_b64encode(_go_json(auths).encode()).decode()


class BuildAPIMixin:
    """Build calls of APIClient."""

    def image_build(self, context: Any, options: ImageBuildOptions | None = None) -> ImageBuildResponse:
        """ImageBuild: POST the context (bytes, a binary file or an iterator of chunks) to /build."""
        options = options or ImageBuildOptions()
        if not self.negotiated:
            self.negotiate_api_version()
        query = image_build_options_to_query(options, self.version)
        headers = {"X-Registry-Config": encode_auth_configs(options), "Content-Type": "application/x-tar"}
        resp = self.post_raw("/build", query, context, headers)
        return ImageBuildResponse(resp, get_docker_os(resp.headers.get("Server", "")))

    def build_cancel(self, build_id: str) -> None:
        """BuildCancel: POST /build/cancel?id=…"""
        self.post("/build/cancel", {"id": build_id}).close()

    def build_cache_prune(self, options: BuildCachePruneOptions | None = None) -> BuildCachePruneReport:
        """BuildCachePrune: POST /build/prune; filters are sent as JSON `{"key":{"value":true}}`."""
        options = options or BuildCachePruneOptions()
        query: dict[str, Any] = {}
        if options.all:
            query["all"] = "1"
        query["keep-storage"] = str(options.keep_storage)
        if options.filters:
            filters = {k: ({v: True} if v is not None else {}) for k, v in options.filters.items()}
            query["filters"] = _go_json(filters)
        resp = self.post("/build/prune", query)
        try:
            body = resp.response.json()
        finally:
            resp.close()
        return BuildCachePruneReport(body.get("CachesDeleted"), int(body.get("SpaceReclaimed") or 0))
