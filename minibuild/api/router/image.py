"""Image endpoints (moby api/server/router/image/image.go, image_routes.go): thin — parse the request,
call the ImageService, write its answer.

    GET    /images/json                 list              POST   /images/{name}/tag   tag (201)
    GET    /images/{name}/json          inspect           DELETE /images/{name}       remove
    GET    /images/{name}/history       history           POST   /images/load         load (stream)
    GET    /images/{name}/get, /images/get?names=…        POST   /images/create?fromSrc=-   import
                                        docker save (tar)

The service is synchronous (it reads and writes the stores), so calls run in worker threads. Errors are
the service's errdefs classes; for the streaming endpoints dockerd's rule applies (an error before the
first byte is an HTTP error, after it the stream's last message), except `/images/load`, whose errors
are always in the stream, as dockerd sends them.
"""

import asyncio
import io
from typing import Any, Protocol

from aiohttp import web

from minibuild import errdefs
from minibuild.api import platforms, versions
from minibuild.api.httputils import bool_value, form_value, form_values, write_json
from minibuild.api.ioutils import ThreadedResponseWriter, WriteFlusher, spool_request_body
from minibuild.api.router.build import parse_filters
from minibuild.api.server import Route, version_from_request
from minibuild.api.streamformatter import (
    JSONProgressOutput,
    Progress,
    format_error,
    format_status,
    new_stdout_writer,
)


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


def bool_value_or_default(request: web.Request, key: str, default: bool) -> bool:
    """BoolValueOrDefault: the default when the parameter is absent."""
    return bool_value(request, key) if key in request.query else default


class ImageRouter:
    def __init__(self, backend: ImageBackend, tmp_dir: Any) -> None:
        self.backend = backend
        self.tmp_dir = tmp_dir

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
        """`docker import` (fromSrc=-): the body is a root filesystem tar; the answer its image id."""
        if form_value(request, "fromImage"):
            # Pulling through this endpoint is not wired: the registry client exists, the route does not.
            raise errdefs.NotImplemented("minibuild does not pull through /images/create (fromImage)")
        src = form_value(request, "fromSrc")
        os_name = ""
        spec = form_value(request, "platform")
        if spec and versions.greater_than_or_equal_to(version_from_request(request), "1.32"):
            try:
                os_name = platforms.parse(spec).os
            except platforms.PlatformError as err:
                raise errdefs.InvalidParameter(str(err))
            if os_name != "linux":
                raise errdefs.InvalidParameter(f"unsupported os {os_name}")
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


def parse_filters_plain(raw: str) -> dict[str, list[str]]:
    """filters.FromJSON for /images/json: a bad value is Go's bare JSON error (500)."""
    try:
        return parse_filters(raw)
    except errdefs.DockerError as err:
        raise errdefs.System(str(err).removeprefix("could not parse filters: "))
