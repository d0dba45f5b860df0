"""`/_ping`, `/version` and `/info` (moby api/server/router/system/system.go, system_routes.go).

`/_ping` is how clients find the daemon's API version (the `Api-Version` header): it answers `OK`,
or only headers for HEAD, with no-cache headers and — as dockerd 19.03/20.10 without BuildKit as its
default — no `Builder-Version` header. The documents of `/version` and `/info` come from the backend
(the daemon), field order as Go's structs.
"""

from typing import Any, Protocol

from aiohttp import web

from minibuild.api.httputils import write_json
from minibuild.api.server import Route


class Backend(Protocol):
    """What the system router needs from the daemon (moby router/system Backend)."""

    def system_info(self) -> dict[str, Any]: ...

    def system_version(self) -> dict[str, Any]: ...


class SystemRouter:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def init_routes(self) -> list[Route]:
        return [
            Route("GET", "/_ping", self.ping_handler),
            Route("HEAD", "/_ping", self.ping_handler),
            Route("GET", "/version", self.get_version),
            Route("GET", "/info", self.get_info),
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
