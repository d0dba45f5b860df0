"""A real registry for the distribution tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Import the fixtures explicitly in a test module (`from registry_fixture import registry, basic_registry`).
Three flavours, each a fresh registry on a free port with its own temp config and storage, always stopped
and deleted at teardown:

- `registry`: anonymous, read-write;
- `basic_registry`: htpasswd Basic auth (the registry only accepts bcrypt entries: hashed by
  tests/bcrypt_pure.py, since neither the standard library nor our dependencies hash bcrypt portably);
- `token_registry`: Bearer token auth against `TokenServer` below, a small token issuer that signs JWTs
  (RS256) with a leaf key whose certificate chains to a CA the registry trusts (`auth.token.rootcertbundle`).
  Keys and certificates are made with the `openssl` command (Debian package openssl, which ca-certificates
  depends on, so nearly every system has it; the tests skip with a message where it is missing).
"""

import base64
import fcntl
import http.client
import io
import json
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt_pure
import pytest

from minibuild.image.service import ImageService

REGISTRY_BINARY = shutil.which("docker-registry") or shutil.which("registry")
USERNAME = "testuser"
PASSWORD = "s3cret-passw0rd"
TOKEN_SERVICE = "minibuild-test-registry"
TOKEN_ISSUER = "minibuild-test-token-issuer"
_STARTUP_LIMIT = 30.0  # seconds to wait for the registry to answer before giving up (not a test assertion)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- the token issuer -------------------------------------------------------------------------------------


@dataclass
class TokenKeys:
    """A CA (trusted by the registry) and a signing key + certificate issued by it."""

    ca_pem: Path
    key_pem: Path
    cert_der: bytes

    @classmethod
    def create(cls, directory: Path) -> "TokenKeys":
        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

        (directory / "leaf.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        )
        openssl("genrsa", "-out", "ca.key", "2048")
        openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=minibuild test token CA",
            "-days",
            "2",
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
        )
        openssl("genrsa", "-out", "leaf.key", "2048")
        openssl(
            "req", "-new", "-key", "leaf.key", "-subj", "/CN=minibuild test token signer", "-out", "leaf.csr"
        )
        openssl(
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "leaf.ext",
            "-outform",
            "DER",
            "-out",
            "leaf.der",
        )
        return cls(directory / "ca.pem", directory / "leaf.key", (directory / "leaf.der").read_bytes())

    def sign_jwt(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_pem)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"


@dataclass
class TokenServer:
    """Docker's token protocol: GET /token?service=&scope=... (Basic auth optional), POST for OAuth2.

    Authenticated users get every action they ask for; anonymous clients get only `anonymous_actions`.
    Wrong credentials get 401 with Docker Hub's `{"details": ...}` body. Every request is logged.
    """

    keys: TokenKeys
    users: dict[str, str]
    anonymous_actions: frozenset[str] = frozenset()
    requests: list[dict] = field(default_factory=list)
    realm: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                params = parse_qs(urlsplit(self.path).query)
                issuer.handle(self, "GET", params, self.headers.get("Authorization"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                issuer.handle(self, "POST", parse_qs(body), self.headers.get("Authorization"))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def _authenticate(self, method: str, params: dict, authorization: str | None) -> tuple[bool, str]:
        """(credentials acceptable, account name or "" for anonymous)."""
        if (
            method == "POST"
        ):  # OAuth2: grant_type=password or refresh_token (the refresh token is "<user>:<pw>")
            grant = params.get("grant_type", [""])[0]
            secret = params.get("refresh_token" if grant == "refresh_token" else "password", [""])[0]
            user = params.get("username", [""])[0]
            if grant == "refresh_token":
                user, _, secret = secret.partition(":")
            return self.users.get(user) == secret and bool(user), user
        if authorization is None:
            return True, ""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, ""
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return self.users.get(user) == password, user

    def handle(self, handler: BaseHTTPRequestHandler, method: str, params: dict, authorization: str | None):
        ok, account = self._authenticate(method, params, authorization)
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        self.requests.append(
            {
                "method": method,
                "account": account,
                "ok": ok,
                "scopes": scopes,
                "service": params.get("service", [""])[0],
            }
        )
        if not ok:
            return self._reply(handler, 401, {"details": "incorrect username or password"})
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = set(actions.split(","))
            granted = wanted if account else wanted & self.anonymous_actions
            access.append({"type": kind, "name": name, "actions": sorted(granted)})
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": account,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = self.keys.sign_jwt(claims)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": 300,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        offline = params.get("offline_token", [""])[0] == "true"  # docker login asks for a refresh token
        if account and (method == "POST" or offline):
            body["refresh_token"] = f"{account}:{self.users[account]}"
        self._reply(handler, 200, body)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


# --- the registry process ---------------------------------------------------------------------------------


@dataclass
class RunningRegistry:
    """A started registry: where it listens, where it stores blobs, and its auth flavour."""

    host: str  # "127.0.0.1:PORT", the reference domain to push/pull with
    storage: Path
    auth: str  # "none" | "basic" | "token"
    token_server: TokenServer | None = None
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_path(self, digest: str) -> Path:
        """The file where the filesystem driver keeps a blob (for tampering tests)."""
        algorithm, hex_ = digest.split(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"


def _config(
    storage: Path, port: int, auth: dict | None, address: str = "127.0.0.1", tls: dict | None = None
) -> str:
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{address}:{port}", "secret": secrets.token_hex(16)},
    }
    if tls:
        config["http"]["tls"] = tls
    if auth:
        config["auth"] = auth
    return json.dumps(config, indent=2)  # YAML is a superset of JSON


def _wait_ready(proc: subprocess.Popen, address: str, port: int, log: Path, https: bool = False) -> bool:
    """True once /v2/ answers (any HTTP status, a TLS refusal of our missing client certificate too);
    False if the process died (e.g. port taken)."""
    deadline = time.monotonic() + _STARTUP_LIMIT
    context = ssl._create_unverified_context() if https else None
    url = f"{'https' if https else 'http'}://{address}:{port}/v2/"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=2, context=context).close()
            return True
        except urllib.error.HTTPError:
            return True
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLError):
                return True  # the TLS listener is up (it wants a client certificate)
            time.sleep(0.05)
        except ssl.SSLError:
            return True
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"registry did not answer within {_STARTUP_LIMIT}s:\n{log.read_text()[-2000:]}")


@contextmanager
def run_registry(
    auth: str = "none",
    *,
    keys: TokenKeys | None = None,
    anonymous_actions: frozenset[str] = frozenset(),
    address: str = "127.0.0.1",
    tls: "TLSFiles | None" = None,
    client_certs: bool = False,
) -> Iterator[RunningRegistry]:
    """Start a registry (auth "none", "basic" or "token"), yield it, always stop it and delete its files.

    With `tls`, it serves https with the server certificate (and, with `client_certs`, requires a client
    certificate issued by the client CA), on `address`."""
    if REGISTRY_BINARY is None:
        pytest.skip(
            "docker-registry is not installed (Debian package docker-registry; `make setup` installs it)"
        )
    with tempfile.TemporaryDirectory(prefix="minibuild-registry-") as tmp:
        workdir = Path(tmp)
        storage = workdir / "storage"
        storage.mkdir()
        token_server = None
        auth_config = None
        if auth == "basic":
            (workdir / "htpasswd").write_text(f"{USERNAME}:{_bcrypt_entry(PASSWORD)}\n")
            auth_config = {"htpasswd": {"realm": "basic-realm", "path": str(workdir / "htpasswd")}}
        elif auth == "token":
            assert keys is not None, "token auth needs TokenKeys"
            token_server = TokenServer(keys, {USERNAME: PASSWORD}, anonymous_actions)
            token_server.start()
            auth_config = {
                "token": {
                    "realm": token_server.realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(keys.ca_pem),
                }
            }
        proc = None
        try:
            for _attempt in range(5):  # another process may grab the free port before the registry binds it
                port = _free_port()
                tls_config = None
                if tls is not None:
                    tls_config = {"certificate": str(tls.server_cert), "key": str(tls.server_key)}
                    if client_certs:
                        tls_config["clientcas"] = [str(tls.client_ca)]
                (workdir / "config.yml").write_text(_config(storage, port, auth_config, address, tls_config))
                log = workdir / "registry.log"
                with open(log, "wb") as log_file:
                    proc = subprocess.Popen(
                        [REGISTRY_BINARY, "serve", str(workdir / "config.yml")],
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                if _wait_ready(proc, address, port, log, https=tls is not None):
                    break
                proc.wait()
            else:
                raise RuntimeError(f"registry failed to start:\n{log.read_text()[-2000:]}")
            creds = (USERNAME, PASSWORD) if auth != "none" else (None, None)
            yield RunningRegistry(f"{address}:{port}", storage, auth, token_server, *creds)
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if token_server is not None:
                token_server.stop()


_BCRYPT_CACHE: dict[str, str] = {}


def _bcrypt_entry(password: str) -> str:
    if password not in _BCRYPT_CACHE:  # pure-Python bcrypt takes a moment; hash each password once
        _BCRYPT_CACHE[password] = bcrypt_pure.hashpw(password, cost=4)
    return _BCRYPT_CACHE[password]


# --- pytest fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_keys() -> Iterator[TokenKeys]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the token issuer's certificates (Debian: openssl)")
    with tempfile.TemporaryDirectory(prefix="minibuild-token-keys-") as tmp:
        yield TokenKeys.create(Path(tmp))


@pytest.fixture
def registry() -> Iterator[RunningRegistry]:
    with run_registry("none") as running:
        yield running


@pytest.fixture
def basic_registry() -> Iterator[RunningRegistry]:
    with run_registry("basic") as running:
        yield running


@pytest.fixture
def token_registry(token_keys: TokenKeys) -> Iterator[RunningRegistry]:
    with run_registry("token", keys=token_keys) as running:
        yield running


# --- local images to push ---------------------------------------------------------------------------------


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A layer diff tar of these regular files (fixed owner and times: same files, same diff ID)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_image(
    images: ImageService,
    layers: list[dict[str, bytes]],
    *,
    architecture: str = "amd64",
    variant: str = "",
    cmd: list[str] | None = None,
) -> str:
    """Commit an image of these layers (bottom first) with the image service; return its ID."""
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": cmd or ["sh"]},
        "created": "2026-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))
        ],
    }
    if variant:
        config["variant"] = variant
    return images.create_image(config, layers=[io.BytesIO(layer_tar(files)) for files in layers])


# --- a registry double that fails chosen requests ---------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up on a request (a push failing while its other uploads run) is no error here."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultyProxy:
    """An HTTP proxy in front of a registry that answers chosen requests with failures.

    Which requests fail, each fault list consumed one matching request at a time:

    - `faults[digest]`: GETs of that blob;
    - `upload_faults[key]`: requests of a push, `key` being a blob digest (the PUT that closes that
      blob's upload session: its query names the digest), "HEAD <digest>" (an existence check of that
      blob), "POST" (any upload session opened), "PATCH" (any upload chunk) or "manifest" (any
      manifest PUT).

    A fault is "500", "503", "401", "403", "404" (an error answer; 500, 503 and 403 with a body that
    is not the registry's JSON), "reset" (the connection closed before any answer), "cut" (for a GET, a
    200 whose body stops halfway; for an upload, the connection closed once part of the request body has
    come, half of it or its first chunk: an upload cut short), or "corrupt" (the body, the registry's
    answer or the request sent on, with its first byte changed). Other requests pass through unchanged,
    a Range header included, with the Host the client sent, so the upload URLs the registry hands out
    lead back through the proxy. `requests` logs (method, path, Range).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # host:port of the registry
        self.faults: dict[str, list[str]] = {}
        self.upload_faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: a connection per request, never reused
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_HEAD(self) -> None:
                proxy.handle(self, "HEAD")

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

            def do_PATCH(self) -> None:
                proxy.handle(self, "PATCH")

            def do_PUT(self) -> None:
                proxy.handle(self, "PUT")

            def do_DELETE(self) -> None:
                proxy.handle(self, "DELETE")

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def blob_gets(self, digest: str) -> list[str | None]:
        """The Range header of every GET of this blob, in order (None: the whole blob)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(f"/blobs/{digest}")]

    def upload_requests(self) -> list[tuple[str, str]]:
        """(method, path) of every blob upload request (POST, PATCH, PUT to blobs/uploads/), in order."""
        methods = ("POST", "PATCH", "PUT")
        return [(m, p) for m, p, _ in self.requests if "/blobs/uploads/" in p and m in methods]

    def blob_puts(self, digest: str) -> int:
        """How many PUTs closed an upload of this blob (each attempt sends one)."""
        return sum(1 for m, p in self.upload_requests() if m == "PUT" and _upload_digest(p) == digest)

    def _fault_key(self, method: str, path: str) -> tuple[dict[str, list[str]], str] | None:
        if method in ("GET", "HEAD") and "/blobs/" in path and "/blobs/uploads/" not in path:
            digest = path.rsplit("/", 1)[1]
            return (self.faults, digest) if method == "GET" else (self.upload_faults, f"HEAD {digest}")
        if "/blobs/uploads/" in path:
            if method == "PUT":
                return self.upload_faults, _upload_digest(path)
            if method in ("POST", "PATCH"):
                return self.upload_faults, method
        if method == "PUT" and "/manifests/" in path:
            return self.upload_faults, "manifest"
        return None

    def _next_fault(self, method: str, path: str) -> str | None:
        found = self._fault_key(method, path)
        if found is None:
            return None
        table, key = found
        with self._lock:
            pending = table.get(key)
            return pending.pop(0) if pending else None

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.requests.append((method, handler.path, handler.headers.get("Range")))
        fault = self._next_fault(method, handler.path)
        sending = method not in ("GET", "HEAD")  # a request with a body: the fault applies to it
        if sending and fault == "cut":
            _read_request_body(handler, limit=max(1, int(handler.headers.get("Content-Length") or 2) // 2))
            return _drop_connection(handler)
        request_body = _read_request_body(handler) if sending else None
        if fault == "reset":
            return _drop_connection(handler)
        if fault in ("500", "503", "401", "403", "404"):
            return _error_answer(handler, int(fault))
        if sending and fault == "corrupt" and request_body:
            request_body = bytes([request_body[0] ^ 0xFF]) + request_body[1:]
        skipped = ("connection", "transfer-encoding", "content-length")
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skipped}
        if request_body is not None:
            headers["Content-Length"] = str(len(request_body))
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            conn.request(method, handler.path, body=request_body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        handler.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                handler.send_header(key, value)
        length = int(resp.getheader("Content-Length") or len(body))
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        if method == "HEAD":
            return
        if not sending and fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if not sending and fault == "cut":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            return _drop_connection(handler)
        handler.wfile.write(body)


def _upload_digest(path: str) -> str:
    """The `digest` query parameter of an upload URL ("" when there is none)."""
    return parse_qs(urlsplit(path).query).get("digest", [""])[0]


def _read_request_body(handler: BaseHTTPRequestHandler, limit: int | None = None) -> bytes:
    """The request's body (Content-Length or chunked), or only its first `limit` bytes."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        body = b""
        while limit is None or len(body) < limit:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                break
            body += handler.rfile.read(size)
            handler.rfile.readline()  # the CRLF after the chunk
        return body if limit is None else body[:limit]
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length if limit is None else min(limit, length))


def _drop_connection(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def _error_answer(handler: BaseHTTPRequestHandler, status: int) -> None:
    if status in (500, 503, 403):
        body = b"<html>registry trouble</html>"
    else:
        entry = {
            "code": "UNAUTHORIZED" if status == 401 else "BLOB_UNKNOWN",
            "message": "refused",
            "detail": "by the test proxy",
        }
        body = json.dumps({"errors": [entry]}).encode()
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def faulty_proxy(registry: RunningRegistry) -> Iterator[FaultyProxy]:
    """A FaultyProxy in front of the anonymous `registry`."""
    proxy = FaultyProxy(registry.host)
    try:
        yield proxy
    finally:
        proxy.stop()


# --- TLS: a CA, a server certificate for an address, a client CA and a client pair ---------------------


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(directory, "genrsa", "-out", f"{name}.key", "2048")
    _openssl(
        directory, "req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN=minibuild test {name}",
        "-days", "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.pem",
    )  # fmt: skip


def _issue(directory: Path, ca: str, name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "genrsa", "-out", f"{name}.key", "2048")
    _openssl(directory, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-set_serial", str(secrets.randbelow(1 << 60)), "-days", "2", "-sha256",
        "-extfile", f"{name}.ext", "-out", f"{name}.pem",
    )  # fmt: skip


@dataclass
class TLSFiles:
    """PEM files: the registry's CA and its certificate for `address`; a client CA and a client pair."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path, address: str) -> "TLSFiles":
        _make_ca(directory, "server-ca")
        _issue(
            directory, "server-ca", "server", f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n"
        )
        _make_ca(directory, "client-ca")
        _issue(directory, "client-ca", "client", "extendedKeyUsage=clientAuth\n")
        return cls(
            directory / "server-ca.pem", directory / "server.pem", directory / "server.key",
            directory / "client-ca.pem", directory / "client.pem", directory / "client.key",
        )  # fmt: skip


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (loopback registries are always insecure,
    so dockerd never verifies their certificates), or None."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                return address
    return None
