"""Image endpoints (moby api/server/router/image/image.go, image_routes.go; daemon/images/image_pull.go,
image_push.go): thin — parse the request, call the ImageService or the RegistryService, write the answer.

    GET    /images/json                 list              POST   /images/{name}/tag   tag (201)
    GET    /images/{name}/json          inspect           DELETE /images/{name}       remove
    GET    /images/{name}/history       history           POST   /images/load         load (stream)
    GET    /images/{name}/get, /images/get?names=…        POST   /images/create?fromSrc=-   import
                                        docker save (tar)
    POST   /images/create?fromImage=…&tag=…&platform=…    pull (stream; X-Registry-Auth)
    POST   /images/{name}/push?tag=…                       push (stream; X-Registry-Auth)

The image service is synchronous (it reads and writes the stores), so its calls run in worker threads;
pull and push are asyncio (minibuild.distribution) and report Docker's progress messages as they go.
Errors are errdefs classes; for the streaming endpoints dockerd's rule applies (an error before the
first byte is an HTTP error, after it the stream's last message), except `/images/load`, whose errors
are always in the stream, as dockerd sends them. Credentials arrive as base64url JSON in
`X-Registry-Auth`; one that cannot be decoded means anonymous, as in dockerd.
"""

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from minibuild import errdefs
from minibuild.api import platforms, versions
from minibuild.api.httputils import bool_value, form_value, form_values, write_json
from minibuild.api.ioutils import ThreadedResponseWriter, WriteFlusher, spool_request_body
from minibuild.api.jsondecode import GoJSONError
from minibuild.api.router.build import parse_filters
from minibuild.api.router.system import read_auth_config
from minibuild.api.server import Route, version_from_request
from minibuild.api.streamformatter import (
    JSONProgressOutput,
    Progress,
    format_error,
    format_status,
    new_stdout_writer,
)
from minibuild.distribution import AuthConfig, Platform, pull_reference
from minibuild.distribution.auth import decode_auth_config, decode_auth_config_body
from minibuild.distribution.progress import Output
from minibuild.image.reference import InvalidReference, Reference, parse_normalized_named, with_tag


class ImageBackend(Protocol):
    """What the image router needs (moby router/image Backend); minibuild.image.service.ImageService."""

    def list_images(
        self, *, all: bool = False, filters: dict[str, list[str]] | None = None
    ) -> list[dict]: ...

    def inspect(self, name: str) -> dict[str, Any]: ...

    def history(self, name: str) -> list[dict[str, Any]]: ...

    def tag(self, source: str, repo: str, tag: str = "") -> str: ...

    def remove(self, name: str, *, force: bool = False, prune: bool = True) -> list[dict[str, str]]: ...

    def save(self, names: list[str], out: io.BufferedIOBase) -> None: ...

    def load(self, src: Any, *, on_stream: Any, on_progress: Any = None) -> list[str]: ...

    def import_image(self, src: Any, **kwargs: Any) -> str: ...


class RegistryBackend(Protocol):
    """What pull and push need (moby ImageService.PullImage/PushImage); minibuild RegistryService."""

    async def pull(
        self,
        store: Any,
        ref: Reference,
        *,
        auth: AuthConfig | None = None,
        platform: Platform | None = None,
        progress: Output | None = None,
    ) -> str: ...

    async def push(
        self, store: Any, ref: Reference, *, auth: AuthConfig | None = None, progress: Output | None = None
    ) -> list[Any]: ...


def bool_value_or_default(request: web.Request, key: str, default: bool) -> bool:
    """BoolValueOrDefault: the default when the parameter is absent."""
    return bool_value(request, key) if key in request.query else default


class ImageRouter:
    def __init__(self, backend: ImageBackend, tmp_dir: Any, registry: RegistryBackend | None = None) -> None:
        self.backend = backend
        self.tmp_dir = tmp_dir
        self.registry = registry

    def init_routes(self) -> list[Route]:
        return [
            Route("GET", "/images/json", self.get_images_json),
            Route("GET", "/images/get", self.get_images_get),
            Route("GET", "/images/{name:.*}/get", self.get_images_get),
            Route("GET", "/images/{name:.*}/history", self.get_images_history),
            Route("GET", "/images/{name:.*}/json", self.get_images_by_name),
            Route("POST", "/images/load", self.post_images_load),
            Route("POST", "/images/create", self.post_images_create),
            Route("POST", "/images/{name:.*}/tag", self.post_images_tag),
            Route("POST", "/images/{name:.*}/push", self.post_images_push),
            Route("DELETE", "/images/{name:.*}", self.delete_images),
        ]

    async def get_images_json(self, request: web.Request) -> web.StreamResponse:
        filters = parse_filters_plain(form_value(request, "filters"))
        if legacy := form_value(request, "filter"):  # deprecated in API 1.13, still honoured
            filters.setdefault("reference", []).append(legacy)
        images = await asyncio.to_thread(
            self.backend.list_images, all=bool_value(request, "all"), filters=filters
        )
        return await write_json(request, 200, images, sort_keys=True)

    async def get_images_by_name(self, request: web.Request) -> web.StreamResponse:
        document = await asyncio.to_thread(self.backend.inspect, request.match_info["name"])
        return await write_json(request, 200, document)

    async def get_images_history(self, request: web.Request) -> web.StreamResponse:
        history = await asyncio.to_thread(self.backend.history, request.match_info["name"])
        return await write_json(request, 200, history)

    async def post_images_tag(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.to_thread(
            self.backend.tag, name, form_value(request, "repo"), form_value(request, "tag")
        )
        return web.Response(status=201)

    async def delete_images(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not name.strip():
            raise errdefs.System("image name cannot be blank")
        force = bool_value(request, "force")
        prune = not bool_value(request, "noprune")
        deleted = await asyncio.to_thread(self.backend.remove, name, force=force, prune=prune)
        return await write_json(request, 200, deleted)

    async def get_images_get(self, request: web.Request) -> web.StreamResponse:
        """`docker save`: the archive streams out as the service writes it."""
        name = request.match_info.get("name")
        names = [name] if name is not None else form_values(request, "names")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
        response.enable_chunked_encoding()
        raw = ThreadedResponseWriter(request, response, asyncio.get_running_loop())

        def save() -> None:
            with io.BufferedWriter(raw, 1 << 16) as out:
                self.backend.save(names, out)

        try:
            await asyncio.to_thread(save)
        except errdefs.DockerError as err:
            if not raw.flushed:
                raise
            await response.write(format_error(err))
        await response.write_eof()
        return response

    async def post_images_load(self, request: web.Request) -> web.StreamResponse:
        """`docker load`: `Loaded image: …` lines; every error arrives in the stream."""
        quiet = bool_value_or_default(request, "quiet", True)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        output = WriteFlusher(request, response)
        stdout = new_stdout_writer(output)
        progress = JSONProgressOutput(output)

        def on_progress(short_id: str, current: int, total: int) -> None:
            progress.write_progress(
                Progress(id=short_id, action="Loading layer", current=current, total=total)
            )

        source = await spool_request_body(request, self.tmp_dir, "load-")
        try:

            def load() -> None:
                with open(source, "rb") as f:
                    self.backend.load(f, on_stream=stdout.write, on_progress=None if quiet else on_progress)

            try:
                await asyncio.to_thread(load)
            except errdefs.DockerError as err:
                output.write(format_error(err))
        finally:
            source.unlink(missing_ok=True)
            await output.close()
        return response

    async def post_images_create(self, request: web.Request) -> web.StreamResponse:
        """`docker pull` (fromImage) or `docker import` (fromSrc=-: the body is a root filesystem tar)."""
        platform: platforms.Platform | None = None
        spec = form_value(request, "platform")
        if spec and versions.greater_than_or_equal_to(version_from_request(request), "1.32"):
            try:
                platform = platforms.parse(spec)
            except platforms.PlatformError as err:
                raise errdefs.InvalidParameter(str(err))
        if image := form_value(request, "fromImage"):
            return await self._pull(request, image, platform)
        return await self._import(request, platform)

    def _require_registry(self) -> RegistryBackend:
        if self.registry is None:
            raise errdefs.NotImplemented("this minibuild daemon has no registry service")
        return self.registry

    async def _pull(
        self, request: web.Request, image: str, platform: platforms.Platform | None
    ) -> web.StreamResponse:
        """PullImage: fromImage (`busybox`, `host:5000/x`) and tag (a tag or a digest; none: every tag)."""
        registry = self._require_registry()
        ref = pull_reference(image, form_value(request, "tag"))
        auth = decode_auth_config(request.headers.get("X-Registry-Auth"))
        return await self._stream_distribution(
            request,
            lambda out: registry.pull(self.backend, ref, auth=auth, platform=platform, progress=out),
        )

    async def post_images_push(self, request: web.Request) -> web.StreamResponse:
        """postImagesPush: credentials from X-Registry-Auth, else (old clients) the body's JSON."""
        registry = self._require_registry()
        header = request.headers.get("X-Registry-Auth", "")
        if header:
            auth = decode_auth_config(header)
        else:
            auth = await _auth_config_from_body(request)
        ref = _push_reference(request.match_info["name"], form_value(request, "tag"))
        return await self._stream_distribution(
            request, lambda out: registry.push(self.backend, ref, auth=auth, progress=out)
        )

    async def _stream_distribution(
        self, request: web.Request, run: Callable[[JSONProgressOutput], Awaitable[object]]
    ) -> web.StreamResponse:
        """Run a pull or push with its progress as the JSON stream (WriteDistributionProgress)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        output = WriteFlusher(request, response)
        try:
            await run(JSONProgressOutput(output))
        except asyncio.CancelledError:
            output.abort()  # the client went away: the pull or push has cleaned up after itself
            raise
        except Exception as err:
            if not output.flushed:
                raise  # nothing sent yet: an ordinary HTTP error
            output.write(format_error(err))
        await output.close()
        return response

    async def _import(self, request: web.Request, platform: platforms.Platform | None) -> web.StreamResponse:
        src = form_value(request, "fromSrc")
        os_name = platform.os if platform else ""
        if os_name and os_name != "linux":  # system.IsOSSupported, checked before the body is read
            raise errdefs.InvalidParameter("operating system is not supported")
        if src != "-":
            if src == "":
                # What dockerd's URL download makes of an empty source.
                raise errdefs.System('Get "http:": http: no Host in request URL')
            raise errdefs.NotImplemented("minibuild imports from the request body only (fromSrc=-)")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        output = WriteFlusher(request, response)
        source = await spool_request_body(request, self.tmp_dir, "import-")
        try:

            def import_image() -> str:
                with open(source, "rb") as f:
                    return self.backend.import_image(
                        f,
                        repo=form_value(request, "repo"),
                        tag=form_value(request, "tag"),
                        message=form_value(request, "message"),
                        changes=form_values(request, "changes"),
                        os_name=os_name or "linux",
                    )

            image_id = await asyncio.to_thread(import_image)
            output.write(format_status("", image_id))
        finally:
            source.unlink(missing_ok=True)
            await output.close()
        return response


async def _auth_config_from_body(request: web.Request) -> AuthConfig:
    """The pre-1.18 way to send push credentials: an AuthConfig as the JSON body (docker-py still does).

    A form-encoded body was already consumed as the form by dockerd's ParseForm: it reads as empty.
    """
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            return decode_auth_config_body(b"") or AuthConfig()  # raises Go's EOF
        return await read_auth_config(request) or AuthConfig()
    except GoJSONError as err:
        raise errdefs.InvalidParameter(f"Bad parameters and missing X-Registry-Auth: {err}") from None


def _push_reference(name: str, tag: str) -> Reference:
    """PushImage's reference: the name, with the tag when one is given (no tag: every tag of the name)."""
    try:
        ref = parse_normalized_named(name)
        return with_tag(ref, tag) if tag else ref
    except InvalidReference as err:
        raise errdefs.System(str(err)) from None  # dockerd returns these unmarked: 500


def parse_filters_plain(raw: str) -> dict[str, list[str]]:
    """filters.FromJSON for /images/json: a bad value is Go's bare JSON error (500)."""
    try:
        return parse_filters(raw)
    except errdefs.DockerError as err:
        raise errdefs.System(str(err).removeprefix("could not parse filters: "))
