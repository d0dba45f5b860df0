"""Image commands of the `minibuild` CLI against a real daemon and image store."""

import io
import json
import os
import shutil
import tarfile

import pytest
from api_doubles import BinaryStdin, Stream

from minibuild.api.daemon import embedded_daemon
from minibuild.cli.main import CLI, run

needs_busybox = pytest.mark.skipif(
    not (os.path.exists("/bin/busybox") or shutil.which("busybox")), reason="busybox-static is not installed"
)
NOW = 2_000_000_000.0


def invoke(host, *argv, stdin=b"", tty=False, env=None):
    cli = CLI(host, Stream(tty=tty), Stream(), BinaryStdin(stdin), env or {}, clock=lambda: NOW)
    if tty:
        cli.stdin.isatty = lambda: True
    code = run(list(argv), cli)
    return code, cli.stdout.getvalue(), cli.stderr.getvalue()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        yield d


def rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buf.getvalue()


@pytest.fixture(scope="module")
def image(daemon):
    code, out, err = invoke(
        daemon.host, "import", "-m", "from test", "-c", 'CMD ["sh"]', "-", "mbref-cli:img", stdin=rootfs()
    )
    assert code == 0, err
    return out.strip()


def test_import_prints_the_id(image):
    assert image.startswith("sha256:") and len(image) == 71


def test_images_table(daemon, image):
    code, out, _ = invoke(daemon.host, "images", "mbref-cli")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")
    cols = lines[1].split()
    assert cols[:3] == ["mbref-cli", "img", image[7:19]]
    assert lines[1].endswith("3B") or lines[1].endswith("B")
    code, out, _ = invoke(daemon.host, "images", "-q", "--no-trunc", "mbref-cli")
    assert out == image + "\n"
    code, _, err = invoke(daemon.host, "images", "--filter", "bogus=1")
    assert (code, err) == (1, "Error response from daemon: Invalid filter 'bogus'\n")


def test_inspect(daemon, image):
    code, out, _ = invoke(daemon.host, "inspect", "mbref-cli:img")
    assert code == 0 and out.startswith('[\n    {\n        "Id": ')
    assert json.loads(out)[0]["Comment"] == "from test"
    code, out, err = invoke(daemon.host, "inspect", "mbref-cli:img", "nope-mbref")
    assert code == 1 and len(json.loads(out)) == 1 and err == "Error: No such object: nope-mbref\n"


def test_history(daemon, image):
    code, out, _ = invoke(daemon.host, "history", "mbref-cli:img")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert row.startswith(image[7:19]) and row.endswith("from test")
    code, out, _ = invoke(daemon.host, "history", "-q", "--no-trunc", "mbref-cli:img")
    assert out == image + "\n"


def test_tag_save_load_rmi(daemon, image, tmp_path):
    assert invoke(daemon.host, "tag", "mbref-cli:img", "mbref-cli:copy")[0] == 0
    code, _, err = invoke(daemon.host, "tag", "mbref-cli:img", "BAD")
    assert code == 1 and err.startswith('Error parsing reference: "BAD" is not a valid repository/tag: ')
    archive = tmp_path / "a.tar"
    assert invoke(daemon.host, "save", "-o", str(archive), "mbref-cli:copy")[0] == 0
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]  # no temporary file left behind
    code, out, err = invoke(daemon.host, "rmi", "mbref-cli:copy", "nope-mbref")
    assert (code, out) == (1, "Untagged: mbref-cli:copy\n")
    assert err == "Error response from daemon: No such image: nope-mbref:latest\n"
    code, out, _ = invoke(daemon.host, "load", "-i", str(archive))
    assert (code, out) == (0, "Loaded image: mbref-cli:copy\n")
    code, out, _ = invoke(daemon.host, "load", stdin=archive.read_bytes())
    assert (code, out) == (0, "Loaded image: mbref-cli:copy\n")


def test_terminal_refusals(daemon, image):
    code, _, err = invoke(daemon.host, "save", "mbref-cli:img", tty=True)
    assert (code, err) == (1, "cowardly refusing to save to a terminal. Use the -o flag or redirect\n")
    code, _, err = invoke(daemon.host, "load", tty=True)
    assert (code, err) == (1, "requested load from stdin, but stdin is empty\n")


def test_load_error_is_printed(daemon):
    code, _, err = invoke(daemon.host, "load", stdin=b"garbage")
    assert (code, err) == (1, "Error processing tar file(exit status 1): unexpected EOF\n")


@needs_busybox
def test_busybox_command(daemon):
    code, out, err = invoke(
        daemon.host, "busybox", "--tag", "mbref-busybox:test", env={"SOURCE_DATE_EPOCH": "0"}
    )
    assert code == 0, err
    code, out, _ = invoke(daemon.host, "inspect", "mbref-busybox:test")
    doc = json.loads(out)[0]
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Size"] > 100_000
