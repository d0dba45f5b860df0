"""Image calls of the client (moby client/image_list.go, image_inspect.go, image_history.go,
image_tag.go, image_remove.go, image_save.go, image_load.go, image_import.go, image_pull.go,
image_push.go).

Pull and push carry the registry credentials as base64url JSON in `X-Registry-Auth`
(`minibuild.distribution.encode_auth_config`); without any, the client sends the encoding of an empty
AuthConfig (`e30=`), as the docker CLI does.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from minibuild import gojson
from minibuild.api.jsonmessage import decode_stream
from minibuild.distribution.auth import AuthConfig, encode_auth_config
from minibuild.image import reference

ANONYMOUS_AUTH = encode_auth_config(AuthConfig())  # "e30=": what the docker CLI sends without credentials


def get_api_tag_from_named_ref(ref: reference.Reference) -> str:
    """getAPITagFromNamedRef: the digest, else the tag (`latest` for a bare name)."""
    return ref.digest or reference.tag_name_only(ref).tag


def _parse_named(ref: str) -> reference.Reference:
    try:
        return reference.parse_normalized_named(ref)
    except reference.InvalidReference as err:
        raise ValueError(str(err)) from None


@dataclass
class StreamResponse:
    """A streamed answer: `/images/load` and `/images/create` send JSON messages, `/images/get` a tar."""

    body: Any  # a client.ServerResponse
    json: bool

    def messages(self) -> Iterator[dict[str, Any]]:
        return decode_stream(self.body.iter_bytes())

    def iter_bytes(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        return self.body.iter_bytes(chunk_size)

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> "StreamResponse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageAPIMixin:
    """Image calls of APIClient."""

    def image_list(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[dict]:
        """ImageList: GET /images/json; filters are sent as `{"key":{"value":true}}`."""
        query: dict[str, Any] = {}
        if all:
            query["all"] = "1"
        if filters:
            query["filters"] = gojson.dumps(
                {k: dict.fromkeys(v, True) for k, v in filters.items()}, sort_keys=True
            )
        return self.get_json("/images/json", query)

    def image_inspect(self, image: str) -> dict[str, Any]:
        """ImageInspectWithRaw: GET /images/{name}/json."""
        if not image:
            raise ValueError("invalid image name: empty")
        return self.get_json(f"/images/{image}/json")

    def image_history(self, image: str) -> list[dict[str, Any]]:
        """ImageHistory: GET /images/{name}/history."""
        return self.get_json(f"/images/{image}/history")

    def image_tag(self, source: str, target: str) -> None:
        """ImageTag: POST /images/{source}/tag?repo=…&tag=…, both names checked first."""
        try:
            reference.parse_any_reference(source)
        except reference.InvalidReference as err:
            raise ValueError(f'Error parsing reference: "{source}" is not a valid repository/tag: {err}')
        try:
            ref = reference.parse_normalized_named(target)
        except reference.InvalidReference as err:
            raise ValueError(f'Error parsing reference: "{target}" is not a valid repository/tag: {err}')
        if ref.digest:
            raise ValueError("refusing to create a tag with a digest reference")
        ref = reference.tag_name_only(ref)
        self.post(f"/images/{source}/tag", {"repo": reference.familiar_name(ref), "tag": ref.tag}).close()

    def image_remove(self, image: str, force: bool = False, prune_children: bool = True) -> list[dict]:
        """ImageRemove: DELETE /images/{name}; the answer lists `Untagged`/`Deleted` entries."""
        query: dict[str, Any] = {}
        if force:
            query["force"] = "1"
        if not prune_children:
            query["noprune"] = "1"
        resp = self.delete(f"/images/{image}", query)
        try:
            return resp.response.json()
        finally:
            resp.close()

    def image_save(self, images: list[str]) -> StreamResponse:
        """ImageSave: GET /images/get?names=…; the body is a `docker save` tar."""
        return StreamResponse(self.get("/images/get", {"names": list(images)}), json=False)

    def image_load(self, archive: bytes | BinaryIO | Any, quiet: bool = True) -> StreamResponse:
        """ImageLoad: POST /images/load with a `docker save` tar."""
        query = {"quiet": "1" if quiet else "0"}
        resp = self.post_raw("/images/load", query, archive, {"Content-Type": "application/x-tar"})
        return StreamResponse(resp, json=resp.headers.get("Content-Type") == "application/json")

    def image_import(
        self,
        source: bytes | BinaryIO | Any,
        ref: str = "",
        *,
        message: str = "",
        changes: list[str] | None = None,
        platform: str = "",
        tag: str = "",
    ) -> StreamResponse:
        """ImageImport: POST /images/create?fromSrc=- with a root filesystem tar as the body."""
        query: dict[str, Any] = {"fromSrc": "-", "repo": ref, "tag": tag, "message": message}
        if platform:
            query["platform"] = platform.lower()
        if changes:
            query["changes"] = list(changes)
        return StreamResponse(self.post_raw("/images/create", query, source), json=True)

    def image_pull(
        self, ref: str, *, all_tags: bool = False, platform: str = "", registry_auth: str = ""
    ) -> StreamResponse:
        """ImagePull: POST /images/create?fromImage=<name>&tag=<tag or digest> (every tag with all_tags).

        `registry_auth` is the X-Registry-Auth value (encode_auth_config); "" means anonymous.
        """
        named = _parse_named(ref)
        query: dict[str, Any] = {"fromImage": reference.familiar_name(named)}
        if not all_tags:
            query["tag"] = get_api_tag_from_named_ref(named)
        if platform:
            query["platform"] = platform.lower()
        headers = {"X-Registry-Auth": registry_auth or ANONYMOUS_AUTH}
        return StreamResponse(self.post("/images/create", query, headers=headers), json=True)

    def image_push(self, ref: str, *, all_tags: bool = False, registry_auth: str = "") -> StreamResponse:
        """ImagePush: POST /images/<name>/push?tag=<tag> (every tag of the name with all_tags)."""
        named = _parse_named(ref)
        if named.digest:
            raise ValueError("cannot push a digest reference")
        query: dict[str, Any] = {}
        if not all_tags:
            query["tag"] = reference.tag_name_only(named).tag
        headers = {"X-Registry-Auth": registry_auth or ANONYMOUS_AUTH}
        name = reference.familiar_name(named)
        return StreamResponse(self.post(f"/images/{name}/push", query, headers=headers), json=True)
