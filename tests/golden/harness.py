"""Reading the golden transcripts, and talking to a daemon the way the reference's requests did.

for name in case_names(): ...
status, messages = post_build(socket_path, query, context_tar(name))
assert normalize(messages) == normalize(expected_messages(name))
"""

import http.client
import io
import json
import re
import socket
import tarfile
import urllib.parse
from pathlib import Path
from typing import Any

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
