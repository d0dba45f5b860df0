"""The build context and the Dockerfile (moby builder/remotecontext), through a real daemon: which
bodies are accepted, how the Dockerfile is found, and dockerd's errors with their HTTP statuses
(reference §3.1, §3.2, §4.1)."""

import bz2
import gzip
import io
import lzma
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from golden.harness import post_build, tar_of

from minibuild.api.daemon import embedded_daemon
from minibuild.builder.remotecontext import Source, file_hash, full_path, is_git_url
from minibuild.image.busybox import create_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
SIMPLE = b"FROM busybox:local\nCOPY . /ctx/\nRUN ls -A /ctx\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        create_busybox_image(d.daemon.image_service, "busybox:local", source_date_epoch=0)
        yield d


def build(daemon, body: bytes, **query):
    return post_build(daemon.socket_path, query, body)


def error_of(result):
    status, messages = result
    return status, messages[-1].get("message") or messages[-1].get("error")


def output(messages) -> str:
    return "".join(m.get("stream", "") for m in messages)


@pytest.mark.parametrize(
    ("body", "query", "expected"),
    [
        (b"", {}, (500, "Cannot locate specified Dockerfile: Dockerfile")),
        (bytes(1024), {}, (500, "Cannot locate specified Dockerfile: Dockerfile")),
        (b"just some text, not an archive", {}, (500, "unexpected EOF")),
        (SIMPLE, {}, (500, "unexpected EOF")),  # a bare Dockerfile is not a context
        (tar_of({"Dockerfile": SIMPLE}), {"dockerfile": "../Dockerfile"},
         (500, "forbidden path outside the build context: ../Dockerfile ()")),
        (tar_of({"Dockerfile": SIMPLE}), {"dockerfile": "/etc/passwd"},
         (500, "Cannot locate specified Dockerfile: /etc/passwd")),
        (tar_of({"Dockerfile": SIMPLE}), {"dockerfile": "nope.Dockerfile"},
         (500, "Cannot locate specified Dockerfile: nope.Dockerfile")),
        (tar_of({"Dockerfile": b""}), {}, (400, "the Dockerfile (Dockerfile) cannot be empty")),
    ],
)  # fmt: skip
def test_context_errors(daemon, body, query, expected):
    assert error_of(build(daemon, body, **query)) == expected


PARSE_ERRORS = [
    (b"FROM busybox:local\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
    (b"# c\n\nFROM busybox:local\nRUN true\nBOGUS x y\n", "dockerfile parse error line 5: "
     "unknown instruction: BOGUS"),
    (b"FROM busybox:local foo\n", "dockerfile parse error line 1: "
     "FROM requires either one or three arguments"),
    (b"# only\n\n# comments\n", "failed to parse Dockerfile: file with no instructions"),
    (b"RUN true\n", "no build stage in current context"),
    (b"FROM busybox:local\nENV a\n", "failed to parse Dockerfile: ENV must have two arguments"),
    (
        b"FROM busybox:local\nCOPY onlyone\n",
        "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. "
        "Destination could not be determined",
    ),
    (b"FROM busybox:local\nHEALTHCHECK --interval=abc CMD true\n", "dockerfile parse error line 2: "
     'time: invalid duration "abc"'),
    (b"# escape=x\nFROM busybox:local\n", "failed to parse Dockerfile: "
     "invalid escape token 'x' does not match ` or \\"),
    (b"FROM busybox:local\nSHELL /bin/sh -c\n", "dockerfile parse error line 2: "
     "SHELL requires the arguments to be in JSON form"),
    (b"FROM busybox:local\nONBUILD FROM busybox:local\n", "dockerfile parse error line 2: "
     "FROM isn't allowed as an ONBUILD trigger"),
]  # fmt: skip


@pytest.mark.parametrize(("dockerfile", "message"), PARSE_ERRORS)
def test_parse_errors_are_400_before_any_output(daemon, dockerfile, message):
    assert error_of(build(daemon, tar_of({"Dockerfile": dockerfile}))) == (400, message)
    assert error_of(build(daemon, tar_of({"Dockerfile": dockerfile}), q="1")) == (400, message)


def test_dockerfile_locations(daemon):
    files = {"sub/My.Dockerfile": b"FROM busybox:local\nRUN echo from-sub\n"}
    status, messages = build(daemon, tar_of(files), dockerfile="sub/My.Dockerfile")
    assert status == 200 and "from-sub\n" in output(messages)
    status, messages = build(
        daemon, tar_of({"Dockerfile": b"FROM busybox:local\nRUN echo leading\n"}), dockerfile="/Dockerfile"
    )
    assert status == 200 and "leading\n" in output(messages)
    status, messages = build(daemon, tar_of({"dockerfile": b"FROM busybox:local\nRUN echo lower\n"}))
    assert status == 200 and "lower\n" in output(messages)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_bodies(daemon, compress):
    status, messages = build(daemon, compress(tar_of({"Dockerfile": SIMPLE, "f": b"x"})), nocache="1")
    assert status == 200 and "Dockerfile\nf\n" in output(messages), messages


def test_dockerignore_removes_only_the_dockerfile_and_itself(daemon):
    files = {
        "Dockerfile": SIMPLE,
        ".dockerignore": b"Dockerfile\n.dockerignore\nkept.txt\n",
        "kept.txt": b"k",
    }
    status, messages = build(daemon, tar_of(files))
    assert status == 200 and "kept.txt\n" in output(messages) and ".dockerignore" not in output(messages)
    files[".dockerignore"] = b"kept.txt\n"
    status, messages = build(daemon, tar_of(files), nocache="1")
    assert ".dockerignore\nDockerfile\nkept.txt\n" in output(messages)


class _Server:
    """A local HTTP server answering every GET with the given body and headers."""

    def __init__(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(outer.status)
                for key, value in outer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args) -> None:
                pass

        self.body, self.headers, self.status = body, headers, status
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    servers = []

    def start(body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> _Server:
        servers.append(_Server(body, headers or {}, status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_remote_context_of_a_dockerfile_or_a_tar(daemon, http_server):
    text = http_server(b"FROM busybox:local\nRUN echo remote-dockerfile\n", {"Content-Type": "text/plain"})
    status, messages = build(daemon, b"", remote=text.url + "/Dockerfile")
    assert status == 200 and "remote-dockerfile\n" in output(messages)
    archive = http_server(gzip.compress(tar_of({"Dockerfile": SIMPLE, "r.txt": b"r"})))
    status, messages = build(daemon, b"", remote=archive.url + "/ctx.tar.gz")
    assert status == 200 and "Dockerfile\nr.txt\n" in output(messages)


def test_remote_context_errors(daemon, http_server):
    assert error_of(build(daemon, b"", remote="http://localhost:1/ctx.tar")) == (
        500,
        'error downloading remote context http://localhost:1/ctx.tar: Get "http://localhost:1/ctx.tar": '
        "dial tcp 127.0.0.1:1: connect: connection refused",
    )
    missing = http_server(b"no such thing\n", status=404)
    status, message = error_of(build(daemon, b"", remote=missing.url + "/x"))
    assert (status, message) == (
        404,
        f"error downloading remote context {missing.url}/x: "
        f"failed to GET {missing.url}/x with status 404 Not Found: no such thing",
    )
    assert error_of(build(daemon, b"", remote="git@github.com:moby/moby.git"))[0] == 400
    assert is_git_url("https://example.org/repo.git") and not is_git_url("https://example.org/ctx.tar")


def test_source_hash_covers_content_mode_and_owner_but_not_time(tmp_path):
    (tmp_path / "f").write_bytes(b"content")
    source = Source(tmp_path)
    first = source.hash("f")
    os.utime(tmp_path / "f", (1, 1))
    assert Source(tmp_path).hash("f") == first
    os.chmod(tmp_path / "f", 0o600)
    assert Source(tmp_path).hash("f") != first
    os.chmod(tmp_path / "f", 0o644)
    (tmp_path / "f").write_bytes(b"other")
    assert Source(tmp_path).hash("f") != first
    st = os.lstat(tmp_path / "f")
    assert file_hash(tmp_path / "f", "f", st) == Source(tmp_path).hash("f")


def test_full_path_stays_in_the_context(tmp_path):
    (tmp_path / "dir").mkdir()
    os.symlink("/etc", tmp_path / "dir" / "abs")
    source = Source(tmp_path)
    assert full_path(source, "dir/abs/passwd") == tmp_path / "etc" / "passwd"
    assert full_path(source, "/dir") == tmp_path / "dir"
    with pytest.raises(Exception, match=r"forbidden path outside the build context: \.\./x \(\)"):
        full_path(source, "../x")


def test_archive_with_a_file_in_place_of_the_context_root_is_refused(daemon):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    status, message = error_of(build(daemon, buf.getvalue()))
    assert status == 500 and "outside" in message
