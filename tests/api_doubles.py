"""Test doubles and helpers for the API, client and CLI tests (stand-in streams, raw HTTP over a socket).

`RecordingBuildBackend` is NOT a builder: it runs nothing and commits nothing. It reads the context the
way a builder would (decompress, untar in memory, find the Dockerfile) and writes a stream shaped like
the classic builder's, driven by toy Dockerfile lines, so the router, streamformatter, client and CLI
can be exercised end to end over a real socket:

    RUN echo TEXT      stdout piece "TEXT\\n"        RUN warn TEXT   stderr piece "TEXT\\n"
    RUN exit N         fails with code N            RUN sleep       waits until cancelled
    BOGUS …            a 400 parse error before any output

It also holds the daemons the API, client, CLI and registry tests run against, as pytest fixtures that a
test module imports by name (`daemon = api_doubles.daemon`): `backend` and `daemon` (one embedded daemon
per test module, its builds going to a RecordingBuildBackend), `source` and `fresh` (real daemons, one
per test, e.g. to push from and to pull into).
"""

import asyncio
import hashlib
import http.client
import io
import socket
import tarfile
import threading
from collections.abc import Iterator

import pytest

from minibuild import errdefs
from minibuild.api.backend import BuildConfig
from minibuild.api.daemon import EmbeddedDaemon, embedded_daemon
from minibuild.api.jsonmessage import JSONError
from minibuild.api.types import BuildCachePruneOptions, BuildCachePruneReport
from minibuild.archive import decompress_stream


class RecordingBuildBackend:
    """Records every call; see the module docstring for what the toy Dockerfile lines do."""

    def __init__(self, result_id: str | None = None) -> None:
        self.result_id = result_id  # report this (existing) image id instead of a made-up one
        self.configs: list[BuildConfig] = []
        self.bodies: list[bytes] = []
        self.files: list[dict[str, bytes]] = []
        self.pruned: list[BuildCachePruneOptions] = []
        self.cancelled: list[str] = []
        self.jobs: dict[str, asyncio.Task] = {}
        self.interrupted = threading.Event()  # set when a build saw asyncio.CancelledError
        self.started = threading.Event()  # set (from the daemon's thread) when a RUN sleep begins

    def read_context(self, config: BuildConfig) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        with open(config.source, "rb") as raw:
            try:
                with tarfile.open(fileobj=decompress_stream(raw), mode="r|") as tar:
                    for member in tar:
                        f = tar.extractfile(member) if member.isfile() else None
                        files[member.name] = f.read() if f else b""
            except tarfile.ReadError as err:
                if "empty" not in str(err):
                    raise errdefs.System("unexpected EOF")
        return files

    async def build(self, config: BuildConfig) -> str:
        self.configs.append(config)
        self.bodies.append(config.source.read_bytes())
        if config.options.build_id:
            self.jobs[config.options.build_id] = asyncio.current_task()
        files = self.read_context(config)
        self.files.append(files)
        name = config.options.dockerfile or "Dockerfile"
        if name.lstrip("/") not in files:
            raise errdefs.System(f"Cannot locate specified Dockerfile: {name}")
        lines = [ln for ln in files[name.lstrip("/")].decode().splitlines() if ln.strip()]
        for n, line in enumerate(lines, 1):
            if line.split()[0] == "BOGUS":
                raise errdefs.InvalidParameter(f"dockerfile parse error line {n}: unknown instruction: BOGUS")
        out = config.progress_writer
        for i, line in enumerate(lines, 1):
            out.stdout_formatter.write(f"Step {i}/{len(lines)} : {line}")
            out.stdout_formatter.write("\n")
            words = line.split()
            if words[:2] == ["RUN", "echo"]:
                out.stdout_formatter.write(" ".join(words[2:]) + "\n")
            elif words[:2] == ["RUN", "warn"]:
                out.stderr_formatter.write(" ".join(words[2:]) + "\n")
            elif words[:2] == ["RUN", "exit"]:
                code = int(words[2])
                raise JSONError(
                    f"The command '/bin/sh -c exit {code}' returned a non-zero code: {code}", code
                )
            elif words[:2] == ["RUN", "sleep"]:
                self.started.set()
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    self.interrupted.set()
                    raise
        image_id = self.result_id or "sha256:" + hashlib.sha256(files[name.lstrip("/")]).hexdigest()
        if out.aux_formatter is not None:
            out.aux_formatter.emit("", {"ID": image_id})
        out.stdout_formatter.write(f"Successfully built {image_id[7:19]}\n")
        for tag in config.options.tags:
            out.stdout_formatter.write(f"Successfully tagged {tag}\n")
        return image_id

    async def prune_cache(self, options: BuildCachePruneOptions) -> BuildCachePruneReport:
        self.pruned.append(options)
        return BuildCachePruneReport(None, 0)

    async def cancel(self, build_id: str) -> None:
        self.cancelled.append(build_id)
        task = self.jobs.get(build_id)
        if task is not None:
            task.cancel()


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar with the given regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the lowest-level view of what goes over the wire."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def raw_request(
    path: str, method: str, url: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, raw body bytes)."""
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def raw_chunks(
    path: str, method: str, url: str, body: bytes = b"", headers: dict | None = None
) -> list[bytes]:
    """The HTTP chunks of a chunked answer, as the server framed them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    head = (
        f"{method} {url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    )
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    header_block, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in header_block.lower(), header_block
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


class Stream(io.StringIO):
    def __init__(self, text: str = "", tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class BinaryStdin:
    """stdin with a binary buffer, as sys.stdin has."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self.buffer.readline().decode()


# --- daemons (fixtures: import them by name) -----------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> RecordingBuildBackend:
    return RecordingBuildBackend()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, backend: RecordingBuildBackend
) -> Iterator[EmbeddedDaemon]:
    """An embedded daemon whose builds go to `backend`, shared by the tests of a module."""
    with embedded_daemon(tmp_path_factory.mktemp("root"), build_backend=backend) as d:
        yield d


@pytest.fixture
def source(tmp_path) -> Iterator[EmbeddedDaemon]:
    """A real daemon of its own (image and registry services), e.g. to push from."""
    with embedded_daemon(tmp_path / "source") as d:
        yield d


@pytest.fixture
def fresh(tmp_path) -> Iterator[EmbeddedDaemon]:
    """A real daemon with an empty data root, e.g. to pull into."""
    with embedded_daemon(tmp_path / "fresh") as d:
        yield d
