"""`/_ping`, `/version`, `/info` and `/auth` (moby api/server/router/system/system.go, system_routes.go).

`/_ping` is how clients find the daemon's API version (the `Api-Version` header): it answers `OK`,
or only headers for HEAD, with no-cache headers and — as dockerd 19.03/20.10 without BuildKit as its
default — no `Builder-Version` header. The documents of `/version` and `/info` come from the backend
(the daemon), field order as Go's structs. `POST /auth` is `docker login`: the body is an AuthConfig in
JSON, read as Go's decoder reads it (its errors are 500s with Go's message); the daemon checks the
credentials against the registry and answers `{"IdentityToken":…,"Status":"Login Succeeded"}`.
"""

from typing import Any, Protocol

from aiohttp import web

from minibuild import errdefs
from minibuild.api.httputils import write_json
from minibuild.api.jsondecode import GoJSONError
from minibuild.api.server import Route
from minibuild.distribution.auth import AuthConfig, decode_auth_config_body

_MAX_AUTH_BODY = 1 << 20  # an AuthConfig is a few hundred bytes; refuse to buffer more than this


async def read_auth_config(request: web.Request) -> AuthConfig | None:
    """json.NewDecoder(r.Body).Decode(&authConfig): None for `null`, GoJSONError in Go's words."""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > _MAX_AUTH_BODY:
            raise errdefs.InvalidParameter("auth config too large")
    return decode_auth_config_body(bytes(body))


class Backend(Protocol):
    """What the system router needs from the daemon (moby router/system Backend)."""

    def system_info(self) -> dict[str, Any]: ...

    def system_version(self) -> dict[str, Any]: ...

    async def authenticate_to_registry(self, auth: AuthConfig) -> tuple[str, str]:
        """(status, identity token) when the registry accepts the credentials."""
        ...


class SystemRouter:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def init_routes(self) -> list[Route]:
        return [
            Route("GET", "/_ping", self.ping_handler),
            Route("HEAD", "/_ping", self.ping_handler),
            Route("GET", "/version", self.get_version),
            Route("GET", "/info", self.get_info),
            Route("POST", "/auth", self.post_auth),
        ]

    async def ping_handler(self, request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
        headers["Content-Type"] = "text/plain; charset=utf-8"
        if request.method == "HEAD":
            headers["Content-Length"] = "0"
            return web.Response(headers=headers)
        return web.Response(body=b"OK", headers=headers)

    async def get_version(self, request: web.Request) -> web.StreamResponse:
        return await write_json(request, 200, self.backend.system_version())

    async def get_info(self, request: web.Request) -> web.StreamResponse:
        return await write_json(request, 200, self.backend.system_info())

    async def post_auth(self, request: web.Request) -> web.StreamResponse:
        try:
            auth = await read_auth_config(request)
        except GoJSONError as err:
            raise errdefs.System(str(err)) from None
        if auth is None:  # dockerd dereferences the nil config and drops the connection; we answer
            raise errdefs.InvalidParameter("auth config must be a JSON object, not null")
        status, token = await self.backend.authenticate_to_registry(auth)
        return await write_json(request, 200, {"IdentityToken": token, "Status": status})
