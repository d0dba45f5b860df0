"""The API client's core: host, transport, version negotiation, requests and errors
(moby client/client.go, ping.go, request.go, errors.go).

`APIClient(host=None, version=None)` talks HTTP/1.1 to a daemon at `unix:///path` (requests-unixsocket)
or `tcp://host:port`. Without an explicit version it negotiates on first use, as the docker CLI does:
`HEAD /_ping` (no version prefix), then the lower of its own 1.40 and the daemon's `Api-Version`.
Every later path is prefixed `/v<version>`. Errors from the daemon become `APIError`
(`Error response from daemon: <message>`); an unreachable daemon `ErrConnectionFailed`.
"""

import json
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO

import requests
import requests_unixsocket

from minibuild import gojson
from minibuild.api import versions
from minibuild.client.image import ImageAPIMixin
from minibuild.client.image_build import BuildAPIMixin
from minibuild.defaults import default_host
from minibuild.distribution.auth import AuthConfig

Body = bytes | BinaryIO | Iterable[bytes] | None


class ClientError(Exception):
    """An error on the client side, before or without a daemon answer."""


class ErrConnectionFailed(ClientError):
    """The daemon could not be reached."""

    def __init__(self, host: str) -> None:
        # Docker's wording, with minibuild's name for the daemon.
        super().__init__(f"Cannot connect to the minibuild daemon at {host}. Is the daemon running?")
        self.host = host


class APIError(ClientError):
    """A daemon's HTTP error; str() is what the docker CLI prints."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"Error response from daemon: {message}")
        self.status_code = status_code
        self.message = message


@dataclass
class Ping:
    """What `/_ping`'s headers say (moby types.Ping)."""

    api_version: str = ""
    os_type: str = ""
    experimental: bool = False
    builder_version: str = ""


@dataclass
class ServerResponse:
    """A streamed answer: status, headers, and the body as it arrives."""

    status_code: int
    headers: Any
    response: requests.Response

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        # chunk_size None yields each piece as it arrives: one chunk per message when streaming.
        yield from self.response.iter_content(chunk_size=chunk_size)

    def read(self) -> bytes:
        return self.response.content

    def close(self) -> None:
        self.response.close()


def parse_host(host: str) -> tuple[str, str]:
    """(base URL for requests, canonical host) for `unix:///path` or `tcp://host[:port]`."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        raise ClientError(f"unable to parse docker host `{host}`")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ClientError(f"unable to parse docker host `{host}`: the socket path must be absolute")
        return "http+unix://" + urllib.parse.quote(rest, safe=""), host
    if scheme in ("tcp", "http"):
        address = rest.rstrip("/")
        if not address or "/" in address:
            raise ClientError(f"unable to parse docker host `{host}`")
        if ":" not in address.rsplit("]", 1)[-1]:
            raise ClientError(f"unable to parse docker host `{host}`: a port is required")
        return "http://" + address, host
    raise ClientError(f"unable to parse docker host `{host}`: protocol not available")


def encode_query(query: dict[str, str | list[str]] | None) -> str:
    """url.Values.Encode: keys sorted, repeated keys kept in order, spaces as `+`."""
    if not query:
        return ""
    pairs = []
    for key in sorted(query):
        values = query[key]
        for value in [values] if isinstance(values, str) else values:
            pairs.append(urllib.parse.quote_plus(key) + "=" + urllib.parse.quote_plus(value))
    return "&".join(pairs)


class _Core:
    """Host, session, negotiation and the request helpers every API call goes through."""

    def __init__(self, host: str | None = None, version: str | None = None, timeout: float | None = None):
        self.host = host or os.environ.get("MINIBUILD_HOST") or default_host()
        self.base_url, self.host = parse_host(self.host)
        self.manual_override = bool(version)
        self.version = version or versions.DEFAULT_VERSION
        self.negotiated = bool(version)
        self.timeout = timeout
        self.session = (
            requests_unixsocket.Session() if self.base_url.startswith("http+unix") else requests.Session()
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "_Core":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- version negotiation ---

    def negotiate_api_version(self) -> None:
        """NegotiateAPIVersion: ask /_ping, keep the lower version; a failed ping keeps 1.40."""
        if self.manual_override:
            return
        try:
            ping = self.ping()
        except ClientError:
            return
        self.negotiate_api_version_ping(ping)

    def negotiate_api_version_ping(self, ping: Ping) -> None:
        # A daemon without the header predates it: assume 1.24, as moby's client does.
        server = ping.api_version or "1.24"
        if versions.less_than(server, self.version):
            self.version = server
        self.negotiated = True

    def ping(self) -> Ping:
        """Ping: `HEAD /_ping`, then `GET /_ping` if HEAD is not understood; never version-prefixed."""
        resp = self._send("HEAD", "/_ping", versioned=False, check=False)
        if resp.status_code not in (200, 500):
            resp = self._send("GET", "/_ping", versioned=False, check=False)
        headers = resp.headers
        ping = Ping(
            api_version=headers.get("Api-Version", ""),
            os_type=headers.get("Ostype", ""),
            experimental=headers.get("Docker-Experimental", "") == "true",
            builder_version=headers.get("Builder-Version", ""),
        )
        if resp.status_code >= 400:
            self._check_response_err(resp)
        resp.close()
        return ping

    # --- requests ---

    def _url(self, path: str, query: dict | None, versioned: bool) -> str:
        if versioned and not self.negotiated:
            self.negotiate_api_version()
        prefix = f"/v{self.version}" if versioned and self.version else ""
        qs = encode_query(query)
        return self.base_url + prefix + path + (f"?{qs}" if qs else "")

    def _send(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: Body = None,
        headers: dict[str, str] | None = None,
        *,
        versioned: bool = True,
        check: bool = True,
    ) -> ServerResponse:
        url = self._url(path, query, versioned)
        try:
            resp = self.session.request(
                method, url, data=body, headers=headers, stream=True, timeout=self.timeout
            )
        except requests.ConnectionError as err:
            raise ErrConnectionFailed(self.host) from err
        server_resp = ServerResponse(resp.status_code, resp.headers, resp)
        if check and resp.status_code >= 400:
            self._check_response_err(server_resp)
        return server_resp

    def _check_response_err(self, resp: ServerResponse) -> None:
        """checkResponseErr: turn a 4xx/5xx answer into APIError with the daemon's message."""
        body = resp.read()[: 1 << 20]
        resp.close()
        try:
            status_text = HTTPStatus(resp.status_code).phrase
        except ValueError:
            status_text = str(resp.status_code)
        if not body:
            raise APIError(
                resp.status_code,
                f"request returned {status_text} for API route and version {resp.response.url}, "
                "check if the server supports the requested API version",
            )
        content_type = resp.headers.get("Content-Type", "")
        if versions.greater_than(self.version, "1.23") and content_type == "application/json":
            try:
                decoded = json.loads(body)
            except ValueError as err:
                raise ClientError(f"Error reading JSON: {err}") from err
            if not isinstance(decoded, dict):
                raise ClientError("Error reading JSON: the error body is not a JSON object")
            message = str(decoded.get("message", "")).strip()
        else:
            message = body.decode("utf-8", "replace").strip()
        raise APIError(resp.status_code, message)

    def get(self, path: str, query: dict | None = None, **kw: Any) -> ServerResponse:
        return self._send("GET", path, query, **kw)

    def post(self, path: str, query: dict | None = None, body: Body = None, **kw: Any) -> ServerResponse:
        return self._send("POST", path, query, body, **kw)

    def post_raw(
        self, path: str, query: dict | None, body: Body, headers: dict[str, str] | None = None
    ) -> ServerResponse:
        """postRaw: POST a body as is (a tar, a stream) and hand back the streamed answer."""
        return self._send("POST", path, query, body, headers)

    def delete(self, path: str, query: dict | None = None) -> ServerResponse:
        return self._send("DELETE", path, query)

    def get_json(self, path: str, query: dict | None = None) -> Any:
        resp = self.get(path, query)
        try:
            return resp.response.json()
        finally:
            resp.close()

    # --- system ---

    def server_version(self) -> dict[str, Any]:
        """GET /version."""
        return self.get_json("/version")

    def info(self) -> dict[str, Any]:
        """GET /info."""
        return self.get_json("/info")

    def registry_login(self, auth: AuthConfig) -> dict[str, str]:
        """RegistryLogin: POST /auth with the credentials as JSON; `{"IdentityToken":…,"Status":…}`.

        A refusal is an APIError (status 401 when the daemon says the credentials are wrong).
        """
        body = gojson.dumpb(auth.to_dict())
        resp = self.post("/auth", body=body, headers={"Content-Type": "application/json"})
        try:
            return resp.response.json()
        finally:
            resp.close()


class APIClient(ImageAPIMixin, BuildAPIMixin, _Core):
    """A client for minibuild's (and Docker's) Engine API 1.40."""
