"""The classic builder and the network: base images pulled from a registry (FROM, COPY --from,
`pull=1`) and ADD of http(s) URLs (moby daemon/images/image_builder.go pullForBuilder; builder/dockerfile
copy.go downloadSource)."""

import asyncio
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import registry_fixture
from golden.harness import BuildBench

from minibuild.image.reference import parse_normalized_named

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
registry = registry_fixture.registry  # the fixture, imported explicitly


def push(bench: BuildBench, name: str) -> None:
    asyncio.run(bench.backend.components.registry.push(bench.service, name))


def test_from_and_copy_from_pull_missing_images(registry, tmp_path):
    source = BuildBench(tmp_path / "source")
    base = f"{registry.host}/golden/base:v1"
    source.build("FROM busybox:local\nRUN echo from-the-registry > /base.txt\n", tags=[base]).ok()
    push(source, base)
    bench = BuildBench(tmp_path / "fresh", busybox_ref="busybox:other")
    built = bench.build(f"FROM {base}\nRUN cat /base.txt\nCOPY --from={base} /base.txt /again.txt\n")
    image_id = built.ok()
    statuses = [m.get("status") for m in built.messages if "status" in m]
    assert "Pulling from golden/base" in statuses and f"Status: Downloaded newer image for {base}" in statuses
    assert "from-the-registry\n" in built.texts
    tree = bench.tree(image_id, tmp_path / "tree")
    assert (tree / "again.txt").read_text() == "from-the-registry\n"
    # a second build finds the image locally: no pull
    again = bench.build(f"FROM {base}\nRUN cat /base.txt\nCOPY --from={base} /base.txt /again.txt\n")
    assert again.ok() == image_id and not any("status" in m for m in again.messages)


def test_pull_parent_always_pulls(registry, tmp_path):
    bench = BuildBench(tmp_path / "root")
    local_only = f"{registry.host}/golden/local-only:v1"
    bench.service.add_reference(parse_normalized_named(local_only), bench.busybox_id)
    assert bench.build(f"FROM {local_only}\nENV A=1\n").error is None
    built = bench.build(f"FROM {local_only}\nENV A=1\n", pull_parent=True)
    assert built.error is not None and "golden/local-only" in str(built.error)
    assert built.texts[:2] == [f"Step 1/2 : FROM {local_only}", "\n"]


def test_a_missing_image_where_nothing_answers(tmp_path):
    built = BuildBench(tmp_path / "root").build("FROM localhost:1/x:v1\n")
    assert (
        str(built.error) == 'Get "http://localhost:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'
    )
    built = BuildBench(tmp_path / "root2").build("FROM busybox:local\nCOPY --from=localhost:1/x:v1 /a /a\n")
    assert str(built.error).startswith("invalid from flag value localhost:1/x:v1: Get ")


class Files(BaseHTTPRequestHandler):
    """Serves /named.txt (with Last-Modified), / (a Content-Disposition name), /missing (404)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/missing":
            body, headers, status = b"gone\n", {}, 404
        elif self.path == "/disposition/":
            body, headers, status = (
                b"disposed\n",
                {"Content-Disposition": 'attachment; filename="given.txt"'},
                200,
            )
        elif self.path == "/archive.tar.gz":
            import gzip
            import io
            import tarfile

            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                info = tarfile.TarInfo("inside.txt")
                info.size = 2
                tar.addfile(info, io.BytesIO(b"in"))
            body, headers, status = gzip.compress(buf.getvalue()), {}, 200
        else:
            body, headers, status = b"served\n", {"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}, 200
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_add_downloads_urls(web, tmp_path):
    bench = BuildBench(tmp_path / "root")
    dockerfile = f"""FROM busybox:local
ADD {web}/named.txt /downloads/
ADD {web}/ /unnamed
ADD {web}/disposition/ /d/
ADD {web}/archive.tar.gz /archive/
"""
    built = bench.build(dockerfile)
    tree = bench.tree(built.ok(), tmp_path / "tree")
    named = tree / "downloads/named.txt"
    assert named.read_bytes() == b"served\n"
    assert oct(os.stat(named).st_mode & 0o777) == oct(0o600)
    assert int(os.stat(named).st_mtime) == 1445412480  # Last-Modified
    assert (tree / "unnamed").read_bytes() == b"served\n"
    assert (tree / "d/given.txt").read_bytes() == b"disposed\n"
    assert (tree / "archive/archive.tar.gz").is_file()  # a download is never extracted
    assert any(m.get("status") == "Downloading" for m in built.messages)
    history = bench.config(built.image_id)["history"]
    # a URL's hash has no "file:" prefix in Docker's history line
    assert re.fullmatch(r"/bin/sh -c #\(nop\) ADD [0-9a-f]{64} in /downloads/ ", history[-4]["created_by"])
    # the same URLs with the same content: a cache hit
    assert " ---> Using cache\n" in bench.build(dockerfile).texts


def test_url_errors(web, tmp_path):
    bench = BuildBench(tmp_path / "root")
    assert str(bench.build(f"FROM busybox:local\nCOPY {web}/named.txt /x\n").error) == (
        "COPY failed: source can't be a URL for COPY"
    )
    assert str(bench.build(f"FROM busybox:local\nADD {web}/ /dir/\n").error) == (
        f"ADD failed: cannot determine filename for source {web}/"
    )
    assert str(bench.build(f"FROM busybox:local\nADD {web}/missing /x\n").error) == (
        f"ADD failed: failed to GET {web}/missing with status 404 Not Found: gone"
    )
