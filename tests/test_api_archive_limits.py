"""Tar bombs through the API: the daemon's --max-archive-size and --max-archive-entries.

A build context or a `docker load` archive over the limits is refused with a clear error, by both
builders, and leaves nothing behind in the data root; so is a request body larger than any archive
within the limits, while it is still being sent. `minibuild daemon` takes the limits as flags.
"""

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from api_doubles import raw_request, tar_of
from test_daemon import wait_for_socket

from minibuild.api.daemon import embedded_daemon
from minibuild.archive import ArchiveLimits, current_limits
from minibuild.archive.limits import max_body_size
from minibuild.cli.system import DAEMON
from minibuild.client import APIClient

MAX_SIZE = 1 << 20
MAX_ENTRIES = 100
SIZE_ERROR = f"archive exceeds the size limit of {MAX_SIZE} bytes"
ENTRIES_ERROR = f"archive exceeds the limit of {MAX_ENTRIES} entries"
# Over the content limit, yet a body any archive within the limits could be (max_body_size).
OVER_SIZE = tar_of({"Dockerfile": b"FROM scratch\nCOPY big /big\n", "big": bytes(MAX_SIZE + 4096)})
BODY_LIMIT = max_body_size(ArchiveLimits(MAX_SIZE, MAX_ENTRIES))
BODY_ERROR = (
    f"request body exceeds {BODY_LIMIT} bytes, more than an archive within the daemon's limits can take "
    "(--max-archive-size, --max-archive-entries)"
)
OVER_ENTRIES = tar_of({"Dockerfile": b"FROM scratch\nCOPY . /\n", **{f"f{i:03d}": b"" for i in range(150)}})


def tree(root) -> set[str]:
    """Every path under the data root."""
    return {
        os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(
        tmp_path_factory.mktemp("root"), max_archive_size=MAX_SIZE, max_archive_entries=MAX_ENTRIES
    ) as d:
        for version in ("1", "2"):  # what a first build of each builder sets up, before the comparisons
            ok = tar_of({"Dockerfile": b"FROM scratch\nCOPY f /f\n", "f": b"small"})
            assert (
                b"Successfully tagged"
                in raw_request(d.socket_path, "POST", f"/build?t=ok&version={version}", ok)[2]
            )
        yield d


def test_the_daemon_applies_its_limits_while_it_runs(daemon, tmp_path):
    assert current_limits() == ArchiveLimits(MAX_SIZE, MAX_ENTRIES)
    with embedded_daemon(tmp_path / "other", max_archive_size=None, max_archive_entries=None):
        assert current_limits() == ArchiveLimits(None, None)  # the daemon started last
    assert current_limits() == ArchiveLimits(MAX_SIZE, MAX_ENTRIES)  # given back when it stopped


@pytest.mark.parametrize(("context", "error"), [(OVER_SIZE, SIZE_ERROR), (OVER_ENTRIES, ENTRIES_ERROR)])
def test_a_classic_build_context_over_the_limit_is_refused(daemon, context, error):
    before = tree(daemon.data_root)
    status, _, body = raw_request(daemon.socket_path, "POST", "/build?t=bomb", context)
    assert (status, body) == (500, b'{"message":"' + error.encode() + b'"}\n')
    assert tree(daemon.data_root) == before


@pytest.mark.parametrize(("context", "error"), [(OVER_SIZE, SIZE_ERROR), (OVER_ENTRIES, ENTRIES_ERROR)])
def test_a_buildkit_build_context_over_the_limit_is_refused(daemon, context, error):
    before = tree(daemon.data_root)
    status, _, body = raw_request(daemon.socket_path, "POST", "/build?t=bomb&version=2", context)
    assert status == 200  # the solver has started: the error is the stream's last message
    last = body.rstrip(b"\r\n").split(b"\r\n")[-1]
    assert last == b'{"errorDetail":{"message":"%s"},"error":"%s"}' % (error.encode(), error.encode())
    assert tree(daemon.data_root) == before


def test_a_load_over_the_limit_is_refused(daemon):
    before = tree(daemon.data_root)
    archive = tar_of({"manifest.json": b"[]", "abc/layer.tar": tar_of({"big": bytes(MAX_SIZE + 4096)})})
    status, _, body = raw_request(daemon.socket_path, "POST", "/images/load", archive)
    message = f"Error processing tar file(exit status 1): {SIZE_ERROR}"
    assert status == 200 and body.endswith(b'"error":"' + message.encode() + b'"}\r\n')
    assert tree(daemon.data_root) == before


def test_the_body_limit_covers_any_archive_within_the_limits():
    assert len(OVER_SIZE) < BODY_LIMIT
    fullest = tar_of({f"f{i:03d}": bytes(MAX_SIZE // MAX_ENTRIES) for i in range(MAX_ENTRIES)})
    assert len(fullest) <= BODY_LIMIT
    assert max_body_size(ArchiveLimits(None, MAX_ENTRIES)) is None
    assert max_body_size(ArchiveLimits(MAX_SIZE, None)) is None


def post_endless(path: str, url: str) -> bytes:
    """POST a chunked body of zeros that never ends (until the server stops reading); the raw answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    sock.sendall(f"POST {url} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sent = []

    def send() -> None:
        chunk = b"10000\r\n" + bytes(0x10000) + b"\r\n"
        try:
            while sum(sent) < 64 * BODY_LIMIT:  # far past the limit: the server must stop it first
                sock.sendall(chunk)
                sent.append(len(chunk))
        except OSError:
            pass  # the server answered and closed its end

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    while data := sock.recv(65536):
        answer += data
        if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
            break
    sock.close()
    sender.join(60)
    assert sum(sent) < 64 * BODY_LIMIT
    return answer


@pytest.mark.parametrize("url", ["/build?t=endless", "/build?t=endless&version=2", "/images/load"])
def test_a_body_past_any_archive_within_the_limits_is_refused_while_it_is_sent(daemon, url):
    before = tree(daemon.data_root)
    answer = post_endless(daemon.socket_path, url)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'{"message":"' + BODY_ERROR.encode() + b'"}\n')
    assert tree(daemon.data_root) == before  # the spooled part is gone too


def test_a_body_announced_past_the_limit_is_refused_before_it_is_read(daemon):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(daemon.socket_path)
    head = f"POST /build HTTP/1.1\r\nHost: localhost\r\nContent-Length: {BODY_LIMIT + 1}\r\n\r\n"
    sock.sendall(head.encode())  # and no body at all: the answer must not wait for one
    answer = b""
    while not answer.endswith(b"}\n") and (data := sock.recv(65536)):
        answer += data
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'{"message":"' + BODY_ERROR.encode() + b'"}\n')


def test_minibuild_daemon_takes_the_limits_as_flags(tmp_path):
    path = str(tmp_path / "d.sock")
    argv = [sys.executable, "-m", "minibuild", "daemon", "--host", f"unix://{path}"]
    argv += [
        "--data-root",
        str(tmp_path / "root"),
        "--max-archive-size",
        "1MiB",
        "--max-archive-entries",
        "100",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_socket(path, proc)
        with APIClient(f"unix://{path}") as client:
            assert client.server_version()["ApiVersion"] == "1.40"
        assert raw_request(path, "POST", "/build", OVER_SIZE)[::2] == (
            500,
            b'{"message":"' + SIZE_ERROR.encode() + b'"}\n',
        )
        assert raw_request(path, "POST", "/build", OVER_ENTRIES)[::2] == (
            500,
            b'{"message":"' + ENTRIES_ERROR.encode() + b'"}\n',
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (16 * 1024**3, 1_000_000)),
        (["--max-archive-size", "2g", "--max-archive-entries", "5"], (2 * 1024**3, 5)),
        (["--max-archive-size", "0", "--max-archive-entries", "0"], (None, None)),
    ],
)
def test_daemon_flags_parse_to_limits(monkeypatch, argv, expected):
    from minibuild.cli import system

    seen = []
    monkeypatch.setattr(system, "run_daemon", lambda config: seen.append(config) or 0)
    assert DAEMON.run(DAEMON.parse(argv, "minibuild"), None) == 0
    assert (seen[0].max_archive_size, seen[0].max_archive_entries) == expected


@pytest.mark.parametrize("argv", [["--max-archive-size", "lots"], ["--max-archive-entries", "-1"]])
def test_bad_limits_are_flag_errors(argv):
    from minibuild.cli.command import StatusError

    with pytest.raises(StatusError) as info:
        DAEMON.run(DAEMON.parse(argv, "minibuild"), None)
    assert info.value.code == 125 and info.value.status.startswith(
        f'invalid argument "{argv[1]}" for "{argv[0]}"'
    )
