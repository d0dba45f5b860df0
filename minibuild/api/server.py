"""The API server: routes, version middleware, headers and errors (moby api/server/server.go,
middleware/version.go, middleware/experimental.go, router/router.go).

Every route is registered twice, as `/v{version}/path` and as `/path` (served as the current
version). Before a handler runs, the version middleware checks the prefix: below 1.12 is a 400 in
plain text (`client version 1.11 is too old…`), above 1.40 a 400 in JSON (`client version 1.99 is too
new…`), and a prefix that is not a number (`/vfoo`) matches no route at all. Every routed answer
carries Docker's headers (`Api-Version`, `Docker-Experimental`, `Ostype`, `Server`); an unknown route
or method gets Docker's bare `404 {"message":"page not found"}` without them. A handler's exception
becomes `{"message":…}` with the status its errdefs class carries.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

import minibuild
from minibuild import errdefs
from minibuild.api import versions
from minibuild.api.httputils import json_body, make_error_response

log = logging.getLogger("minibuild.api")

# The Engine version minibuild reports (`Server: Docker/<version> (linux)`, /version's Version).
ENGINE_VERSION = f"{minibuild.__version__}-minibuild"
OS_TYPE = "linux"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEADERS_KEY = web.RequestKey("response_headers", dict)
API_VERSION_KEY = web.RequestKey("api_version", str)


@dataclass(frozen=True)
class Route:
    """One endpoint (moby router.Route): method, path without the version prefix, handler."""

    method: str
    path: str
    handler: Handler


class Router(Protocol):
    """A group of routes (moby router.Router); each router builds its list in `init_routes`."""

    def init_routes(self) -> list[Route]: ...


def version_from_request(request: web.Request) -> str:
    """VersionFromContext: the API version this request is served as."""
    return request.get(API_VERSION_KEY, versions.DEFAULT_VERSION)


class VersionUnsupportedError(errdefs.InvalidParameter):
    """A client newer than this daemon (versionUnsupportedError)."""


def check_api_version(requested: str) -> str:
    """The version middleware's check; returns the version the request is served as."""
    api_version = requested or versions.DEFAULT_VERSION
    if versions.less_than(api_version, versions.MIN_VERSION):
        raise errdefs.InvalidParameter(
            f"client version {api_version} is too old. Minimum supported API version is "
            f"{versions.MIN_VERSION}, please upgrade your client to a newer version"
        )
    if versions.greater_than(api_version, versions.DEFAULT_VERSION):
        raise VersionUnsupportedError(
            f"client version {api_version} is too new. "
            f"Maximum supported API version is {versions.DEFAULT_VERSION}"
        )
    return api_version


def page_not_found() -> web.Response:
    """The answer to an unknown route or method: no Docker headers, just the JSON message."""
    return web.Response(
        status=404, body=json_body({"message": "page not found"}), content_type="application/json"
    )


@web.middleware
async def not_found_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return page_not_found()


async def _apply_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: Docker's headers on routed answers; never aiohttp's own Server header."""
    headers = request.get(_HEADERS_KEY)
    if headers is None:
        if response.headers.get("Server") == SERVER_SOFTWARE:
            del response.headers["Server"]
        return
    for key, value in headers.items():
        response.headers[key] = value


class Server:
    """Holds the routers and builds the aiohttp application (moby server.Server)."""

    def __init__(self, *, experimental: bool = False) -> None:
        self.experimental = experimental
        self.routers: list[Router] = []

    def init_routers(self, routers: Iterable[Router]) -> None:
        self.routers.extend(routers)

    def make_http_handler(self, handler: Handler) -> Handler:
        """Wrap a handler in the version and experimental middlewares and the error writer."""

        async def http_handler(request: web.Request) -> web.StreamResponse:
            requested = request.match_info.get("version", "")
            headers = {
                "Server": f"Docker/{ENGINE_VERSION} ({OS_TYPE})",
                "Api-Version": versions.DEFAULT_VERSION,
            }
            headers["Ostype"] = OS_TYPE
            request[_HEADERS_KEY] = headers
            try:
                request[API_VERSION_KEY] = check_api_version(requested)
                # The experimental middleware runs inside the version check: refused versions lack it.
                headers["Docker-Experimental"] = "true" if self.experimental else "false"
                return await handler(request)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                status = errdefs.get_http_error_status_code(err)
                if status >= 500:
                    log.error("Handler for %s %s returned error: %s", request.method, request.path, err)
                    if not isinstance(err, errdefs.DockerError):
                        log.debug("traceback", exc_info=err)
                return make_error_response(err, requested)

        return http_handler

    def create_app(self) -> web.Application:
        """The application with every route, versioned and unversioned (createMux)."""
        app = web.Application(middlewares=[not_found_middleware])
        app.on_response_prepare.append(_apply_headers)
        for router in self.routers:
            for route in router.init_routes():
                handler = self.make_http_handler(route.handler)
                app.router.add_route(route.method, "/v{version:[0-9.]+}" + route.path, handler)
                app.router.add_route(route.method, route.path, handler)
        return app
