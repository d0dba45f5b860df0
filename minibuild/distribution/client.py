"""The registry HTTP API v2, client side (docker/distribution registry/client/repository.go, blob_writer.go,
transport/; moby registry's headers and Go's net/http error texts).

`Transport` sends every request with Docker's headers and the endpoint's authorization, and turns
connection failures into Go's `*url.Error` texts (`Get "http://localhost:1/v2/": dial tcp 127.0.0.1:1:
connect: connection refused`), so errors read as dockerd's do. `Repository` is one repository on one
endpoint: manifests by tag or digest, blobs (stat, open, fetch) and blob uploads.
"""

import hashlib
import json
import platform
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from minibuild import __version__
from minibuild.distribution.auth import Authorizer, response_challenges
from minibuild.distribution.config import proxy_for
from minibuild.distribution.errors import BlobUnknownError, RegistryError, URLError, handle_error_response

USER_AGENT = f"minibuild/{__version__} python/{platform.python_version()} os/linux arch/{platform.machine()}"
MAX_MANIFEST_SIZE = 4 << 20  # manifests and configs are small documents; refuse anything absurd
PING_TIMEOUT = aiohttp.ClientTimeout(total=15)  # PingV2Registry's client timeout
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


@dataclass(frozen=True)
class Descriptor:
    """distribution.Descriptor: what a HEAD (or a manifest entry) says about a blob or manifest."""

    media_type: str
    digest: str
    size: int


# OpenSSL's verification results and the x509 errors Go reports for them
_X509_ERRORS = {
    18: "certificate signed by unknown authority",  # self-signed leaf
    19: "certificate signed by unknown authority",  # self-signed root not trusted
    20: "certificate signed by unknown authority",  # issuer not found
    21: "certificate signed by unknown authority",  # leaf signature not verifiable
    9: "certificate has expired or is not yet valid",
    10: "certificate has expired or is not yet valid",
}
# TLS alerts a server sends, as Go's crypto/tls names them
_TLS_ALERTS = {
    "ALERT_CERTIFICATE_REQUIRED": "remote error: tls: certificate required",
    "ALERT_BAD_CERTIFICATE": "remote error: tls: bad certificate",
    "ALERT_UNKNOWN_CA": "remote error: tls: unknown certificate authority",
    "ALERT_HANDSHAKE_FAILURE": "remote error: tls: handshake failure",
}


def _tls_alert(text: str) -> str | None:
    return next((go for name, go in _TLS_ALERTS.items() if name in text), None)


def _dial_error(err: aiohttp.ClientConnectorError) -> str:
    """The text Go's dialer gives for the failures people meet."""
    cause = err.os_error
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        failure = err.certificate_error
        code = getattr(failure, "verify_code", None)
        reason = _X509_ERRORS.get(code) or getattr(failure, "verify_message", None) or str(failure)
        return f"tls: failed to verify certificate: x509: {reason}"
    if isinstance(err, aiohttp.ClientConnectorSSLError) or isinstance(cause, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in str(cause) or "wrong version number" in str(cause):
            return "http: server gave HTTP response to HTTPS client"
        return _tls_alert(str(cause)) or f"tls: {cause}"
    if isinstance(cause, socket.gaierror):
        return f"dial tcp: lookup {err.host}: no such host"
    address = err.host
    try:  # Go names the address it dialled, localhost resolved
        address = socket.getaddrinfo(err.host, err.port, socket.AF_UNSPEC, socket.SOCK_STREAM)[0][4][0]
    except OSError:
        pass
    address = f"[{address}]" if ":" in address else address
    if isinstance(cause, ConnectionRefusedError):
        return f"dial tcp {address}:{err.port}: connect: connection refused"
    reason = getattr(cause, "strerror", None) or str(cause)
    return f"dial tcp {address}:{err.port}: connect: {reason.lower()}"


def _client_error_text(err: aiohttp.ClientError) -> str:
    if isinstance(err, aiohttp.ClientConnectorError):
        return _dial_error(err)
    alert = _tls_alert(str(err))
    if alert:  # TLS 1.3: a refused client certificate shows on the first read
        return alert
    if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "unexpected EOF"
    if isinstance(err, aiohttp.TooManyRedirects):
        return "stopped after 10 redirects"
    return str(err) or type(err).__name__


class Transport:
    """An aiohttp session plus what dockerd adds to every registry request (headers, authorization)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        authorizer: Authorizer | None = None,
        tls_verify: bool | ssl.SSLContext = True,
    ) -> None:
        self.session = session
        self.authorizer = authorizer
        # False: an insecure registry's certificate is not checked; a context: certs.d's roots and pair
        self.ssl = tls_verify

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: object = None,
        timeout: aiohttp.ClientTimeout = TRANSFER_TIMEOUT,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request; the response is released on leaving the block."""
        parts = urlsplit(url)
        if parts.netloc.endswith(":"):  # http.NewRequest drops an empty port (removeEmptyPort)
            url = parts._replace(netloc=parts.netloc[:-1]).geturl()
        if not parts.netloc:  # `https://` + an empty host name: Go's client refuses it
            raise URLError(method, url, "http: no Host in request URL")
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        try:
            if self.authorizer is not None:
                await self.authorizer.authorize(url, all_headers)
        except RegistryError as err:  # Go's http.Client wraps what its transport's modifiers return
            raise URLError(method, url, err) from None
        try:  # aiohttp resends an idempotent request once if the connection drops before the answer
            async with self.session.request(
                method,
                url,
                headers=all_headers,
                data=data,
                timeout=timeout,
                ssl=self.ssl,
                proxy=proxy_for(url),
                auto_decompress=False,
            ) as resp:
                yield resp
        except aiohttp.ClientError as err:
            raise URLError(method, url, _client_error_text(err)) from None
        except TimeoutError:
            raise URLError(method, url, "net/http: request canceled (Client.Timeout exceeded)") from None


async def error_from_response(resp: aiohttp.ClientResponse) -> RegistryError:
    """HandleErrorResponse for a response that is not a success."""
    body = await resp.content.read(64 << 10)
    challenges = response_challenges(resp.status, resp.headers.getall("WWW-Authenticate", []))
    return handle_error_response(resp.status, resp.reason or "", challenges, body)


def verify_digest(data: bytes, digest: str) -> bool:
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256":
        return False
    return hashlib.sha256(data).hexdigest() == expected


class Repository:
    """One repository (`library/busybox`) on one registry endpoint."""

    def __init__(self, transport: Transport, base_url: str, name: str) -> None:
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.name = name

    def _url(self, kind: str, reference: str = "", query: dict[str, str] | None = None) -> str:
        url = f"{self.base_url}/v2/{self.name}/{kind}/{reference}"
        return url + ("?" + urlencode(query) if query else "")

    # --- manifests

    async def resolve_tag(self, tag: str, accept: list[str]) -> Descriptor:
        """tags.Get: HEAD the manifest; on failure GET it, for servers without HEAD and for the error body."""
        url = self._url("manifests", tag)
        headers = {"Accept": ", ".join(accept)}
        async with self.transport.request("HEAD", url, headers=headers) as resp:
            digest = resp.headers.get("Docker-Content-Digest", "")
            if 200 <= resp.status < 400 and digest:
                return _descriptor_from(resp, digest)
        async with self.transport.request("GET", url, headers=headers) as resp:
            if not 200 <= resp.status < 400:
                raise await error_from_response(resp)
            body = await _read_limited(resp, MAX_MANIFEST_SIZE)
            digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
            return Descriptor(resp.headers.get("Content-Type", ""), digest, len(body))

    async def get_manifest(self, digest: str, accept: list[str]) -> tuple[str, bytes]:
        """The manifest with this digest, verified: (media type, bytes)."""
        async with self.transport.request(
            "GET", self._url("manifests", digest), headers={"Accept": ", ".join(accept)}
        ) as resp:
            if resp.status != 200:
                raise await error_from_response(resp)
            body = await _read_limited(resp, MAX_MANIFEST_SIZE)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not verify_digest(body, digest):
            raise RegistryError(f"manifest verification failed for digest {digest}")
        return media_type, body

    async def put_manifest(self, reference: str, media_type: str, body: bytes) -> str:
        """Upload a manifest under a tag (or digest); returns the digest the registry reports."""
        async with self.transport.request(
            "PUT", self._url("manifests", reference), headers={"Content-Type": media_type}, data=body
        ) as resp:
            if resp.status != 201:
                raise await error_from_response(resp)
            return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    async def list_tags(self) -> list[str]:
        """GET /v2/<name>/tags/list, following `Link: <…>; rel="next"` pages."""
        url, tags = self._url("tags", "list"), []
        while url:
            async with self.transport.request("GET", url) as resp:
                if resp.status != 200:
                    raise await error_from_response(resp)
                try:
                    doc = json.loads(await _read_limited(resp, MAX_MANIFEST_SIZE))
                    tags += [str(t) for t in doc.get("tags") or []]
                except (ValueError, AttributeError):
                    raise RegistryError(f"invalid tag list from {url}") from None
                link = resp.links.get("next", {}).get("url")
                url = urljoin(url, str(link)) if link else ""
        return tags

    # --- blobs

    async def stat_blob(self, digest: str) -> Descriptor | None:
        """HEAD a blob: its descriptor, or None when the repository does not have it."""
        async with self.transport.request("HEAD", self._url("blobs", digest)) as resp:
            if resp.status == 404:
                return None
            if not 200 <= resp.status < 400:
                raise await error_from_response(resp)
            return _descriptor_from(resp, digest)

    @asynccontextmanager
    async def open_blob(self, digest: str, offset: int = 0) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a blob (redirects to storage are followed); read the body from the yielded response.

        From `offset` on when it is not 0 (`Range: bytes=<offset>-`, a resumed download): the registry
        must then answer 206, else WrongCodeForByteRange.
        """
        headers = {"Range": f"bytes={offset}-"} if offset else None
        async with self.transport.request("GET", self._url("blobs", digest), headers=headers) as resp:
            if resp.status == 404:
                raise BlobUnknownError()
            if offset and 200 <= resp.status < 400 and resp.status != 206:
                raise WrongCodeForByteRange()
            if resp.status != (206 if offset else 200):
                raise await error_from_response(resp)
            yield resp

    async def fetch_blob(self, digest: str, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob (an image config) in memory, verified against its digest."""
        async with self.open_blob(digest) as resp:
            data = await _read_limited(resp, limit)
        if not verify_digest(data, digest):
            raise RegistryError(f"image config verification failed for digest {digest}")
        return data

    async def upload_blob(
        self, chunks: AsyncIterator[bytes] | bytes, digest: str, size: int, chunk_size: int | None = None
    ) -> None:
        """Start an upload session and send the blob: monolithically (one PUT), or in PATCH chunks.

        `chunks` yields the content; with `chunk_size` each PATCH carries that many bytes and a
        Content-Range, and the closing PUT only names the digest.
        """
        async with self.transport.request("POST", self._url("blobs", "uploads/")) as resp:
            if resp.status != 202:
                raise await error_from_response(resp)
            location = self._location(resp)
        if chunk_size is None:
            await self._put_upload(location, digest, chunks, size)
            return
        offset = 0
        async for piece in _rechunk(chunks, chunk_size):
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            }
            async with self.transport.request("PATCH", location, headers=headers, data=piece) as resp:
                if resp.status != 202:
                    raise await error_from_response(resp)
                location = self._location(resp)
            offset += len(piece)
        if offset != size:
            raise RegistryError(f"blob upload wrote {offset} bytes, expected {size}")
        await self._put_upload(location, digest, b"", 0)

    async def _put_upload(self, location: str, digest: str, data: object, size: int) -> None:
        parts = urlsplit(location)
        url = location + ("&" if parts.query else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self.transport.request("PUT", url, headers=headers, data=data) as resp:
            if resp.status != 201:
                raise await error_from_response(resp)

    def _location(self, resp: aiohttp.ClientResponse) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError("blob upload: the registry sent no Location")
        return urljoin(str(resp.url), location)


class WrongCodeForByteRange(RegistryError):
    """transport.ErrWrongCodeForByteRange: a range request answered with the whole blob."""

    def __init__(self) -> None:
        super().__init__("expected HTTP 206 from byte range request")


def _descriptor_from(resp: aiohttp.ClientResponse, digest: str) -> Descriptor:
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    return Descriptor(
        media_type,
        resp.headers.get("Docker-Content-Digest") or digest,
        int(resp.headers.get("Content-Length") or 0),
    )


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"response from {resp.url} is larger than {limit} bytes")
    return bytes(data)


async def _rechunk(chunks: AsyncIterator[bytes] | bytes, size: int) -> AsyncIterator[bytes]:
    """Regroup a byte stream into pieces of exactly `size` bytes (the last one shorter)."""
    if isinstance(chunks, bytes):
        for i in range(0, len(chunks), size):
            yield chunks[i : i + size]
        return
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if buffer:
        yield buffer
