"""Reading the golden transcripts, and talking to a daemon the way the reference's requests did.

for name in case_names(): ...
status, messages = post_build(socket_path, query, context_tar(name))
assert normalize(messages) == normalize(expected_messages(name))
"""

import asyncio
import http.client
import io
import json
import re
import socket
import tarfile
import urllib.parse
from pathlib import Path
from typing import Any

from minibuild.api.backend import BuildConfig, ProgressWriter
from minibuild.api.streamformatter import (
    AuxFormatter,
    BufferSink,
    JSONProgressOutput,
    new_stderr_writer,
    new_stdout_writer,
)
from minibuild.api.types import ImageBuildOptions
from minibuild.archive import apply_layer
from minibuild.backend import new_backend
from minibuild.image.busybox import create_busybox_image

GOLDEN = Path(__file__).resolve().parent
_CASE_FILES = {"case.json", "stream.jsonl"}
_ID_RE = re.compile(r"(?<![0-9a-f])([0-9a-f]{64}|[0-9a-f]{12})(?![0-9a-f])")
_CONTROL = re.compile(
    r"^(Step \d+/\d+ : |\n$| ---> |Removing intermediate container |Successfully |\[Warning\] )"
)
_RED, _RESET = "\x1b[91m", "\x1b[0m"


def case_names() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "case.json").is_file())


def load_case(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name / "case.json").read_text())


def expected_messages(name: str) -> list[dict[str, Any]]:
    lines = (GOLDEN / name / "stream.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def context_files(name: str) -> dict[str, bytes]:
    """The files of a case's context (a case may borrow another's with "context")."""
    directory = GOLDEN / load_case(name).get("context", name)
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in _CASE_FILES
    }


def tar_of(files: dict[str, bytes], *, mtime: int = 1_700_000_000) -> bytes:
    """An uncompressed tar as the docker CLI sends a context: 0644 files, owner 0:0, fixed times."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def context_tar(name: str) -> bytes:
    return tar_of(context_files(name))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def post_build(
    socket_path: str, query: dict[str, Any], body: bytes, *, timeout: float = 240
) -> tuple[int, list[dict[str, Any]]]:
    """POST /v1.40/build; (status, the stream's messages), or (status, [error body]) for an HTTP error."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        url = "/v1.40/build?" + urllib.parse.urlencode(query, doseq=True)
        conn.request("POST", url, body=body, headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, [json.loads(raw)]
    assert raw.endswith(b"\r\n"), raw[-40:]
    return 200, [json.loads(line) for line in raw.split(b"\r\n") if line]


def normalize(messages: list[dict[str, Any]]) -> list[Any]:
    """IDs become <ID1>, <ID2>... by first appearance; a RUN's output becomes its stdout and stderr text."""
    names: dict[str, str] = {}

    def rename(match: re.Match) -> str:
        key = match.group(1)[:12]
        names.setdefault(key, f"<ID{len(names) + 1}>")
        return names[key]

    out: list[Any] = []
    stdout, stderr = [], []
    in_run = False

    def flush() -> None:
        if stdout:
            out.append({"stdout": "".join(stdout)})
        if stderr:
            out.append({"stderr": "".join(stderr)})
        stdout.clear()
        stderr.clear()

    for message in messages:
        text = message.get("stream")
        if in_run and isinstance(text, str) and not _CONTROL.match(text):
            if text.startswith(_RED) and text.endswith(_RESET):
                stderr.append(text[len(_RED) : -len(_RESET)])
            else:
                stdout.append(text)
            continue
        flush()
        in_run = isinstance(text, str) and text.startswith(" ---> Running in ")
        out.append(json.loads(_ID_RE.sub(rename, json.dumps(message))))
    flush()
    return out


# --- builds straight through Backend.build (no HTTP), for tests that look into the store ---------------


class Built:
    """What one build gave: the image ID (or the error), the messages, and the stream's texts."""

    def __init__(self, image_id: str | None, messages: list[dict[str, Any]], error: BaseException | None):
        self.image_id = image_id
        self.messages = messages
        self.error = error

    @property
    def texts(self) -> list[str]:
        return [m["stream"] for m in self.messages if "stream" in m]

    @property
    def output(self) -> str:
        return "".join(self.texts)

    @property
    def stderr(self) -> str:
        """Everything written in bright red (RUN stderr), unwrapped and joined."""
        pieces = [t for t in self.texts if t.startswith(_RED) and t.endswith(_RESET)]
        return "".join(t[len(_RED) : -len(_RESET)] for t in pieces)

    def ok(self) -> str:
        assert self.error is None, f"{self.error!r}\n{self.output}"
        assert self.image_id is not None
        return self.image_id


class BuildBench:
    """A Backend on a fresh data root with busybox:local, and helpers to build and look at images."""

    def __init__(self, data_root: Path, *, busybox_ref: str = "busybox:local") -> None:
        self.data_root = data_root
        self.backend = new_backend(data_root)
        self.service = self.backend.components.image_service
        self.busybox_id = create_busybox_image(self.service, busybox_ref, source_date_epoch=0)

    async def build_async(
        self,
        dockerfile: str,
        files: dict[str, bytes] | None = None,
        *,
        body: bytes | None = None,
        **options: Any,
    ) -> Built:
        """Build a context of `files` plus the Dockerfile, or the raw request `body` when given."""
        context = dict(files or {})
        context.setdefault("Dockerfile", dockerfile.encode())
        path = self.data_root / "body.tar"
        path.write_bytes(tar_of(context) if body is None else body)
        sink = BufferSink()
        writer = ProgressWriter(
            sink,
            new_stdout_writer(sink),
            new_stderr_writer(sink),
            AuxFormatter(sink),
            JSONProgressOutput(sink, newlines=True),
        )
        image_id, error = None, None
        try:
            image_id = await self.backend.build(BuildConfig(path, ImageBuildOptions(**options), writer))
        except Exception as err:  # the router would turn it into the stream's last message
            error = err
        raw = sink.getvalue()
        messages = [json.loads(line) for line in raw.split(b"\r\n") if line]
        return Built(image_id, messages, error)

    def build(self, dockerfile: str, files: dict[str, bytes] | None = None, **options: Any) -> Built:
        return asyncio.run(self.build_async(dockerfile, files, **options))

    def config(self, image_id: str) -> dict[str, Any]:
        return self.service.get_image(image_id).config

    def tree(self, image_id: str, dest: Path) -> Path:
        """The image's filesystem, unpacked layer by layer into `dest` (independent of the snapshotter)."""
        image = self.service.get_image(image_id)
        dest.mkdir(parents=True, exist_ok=True)
        if image.chain_id is not None:
            for layer in self.service.layer_store.chain(image.chain_id):
                with layer.open() as f:
                    apply_layer(f, dest)
        return dest
