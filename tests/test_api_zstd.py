"""A zstd-compressed body, answered as dockerd 20.10.24 answers it (measured on that daemon).

moby 20.10's DetectCompression knows bzip2, gzip and xz only: a zstd body is read as a plain tar, so a
build or an import fails exactly as for any bytes that are not a tar (`unexpected EOF` when the body is
shorter than a tar header, `archive/tar: invalid tar header` when it is longer).
"""

import json

import pytest
from api_doubles import raw_request, tar_of

from minibuild.api.daemon import embedded_daemon
from minibuild.archive import detect_compression

CONTEXT = tar_of({"Dockerfile": b"FROM scratch\n"})


def zstd_frame(data: bytes) -> bytes:
    """A valid zstd frame holding `data` in one raw (stored) block, as `zstd -d` reads it (RFC 8878)."""
    assert 256 <= len(data) < 128 * 1024  # a two-byte content size field; one block
    header = b"\x28\xb5\x2f\xfd" + bytes([0x60]) + (len(data) - 256).to_bytes(2, "little")  # single segment
    block = ((len(data) << 3) | 1).to_bytes(3, "little")  # raw block, the last one
    return header + block + data


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A real daemon (image service and builders): the answer comes from the real context reader."""
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        yield d


def answer(daemon, url: str, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-tar"}
    status, _, text = raw_request(daemon.socket_path, "POST", url, body, headers)
    return status, json.loads(text)["message"]


def test_a_zstd_stream_is_not_detected_as_compressed():
    assert detect_compression(zstd_frame(CONTEXT)) == "identity"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x28\xb5\x2f\xfd" + b"junkjunk", "unexpected EOF"),  # shorter than a tar header
        (zstd_frame(CONTEXT), "archive/tar: invalid tar header"),
    ],
)
def test_a_zstd_build_context_is_refused_as_dockerd_20_10_refuses_it(daemon, body, message):
    assert answer(daemon, "/v1.40/build", body) == (500, message)
    assert list((daemon.data_root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x28\xb5\x2f\xfd" + b"junkjunk", "unexpected EOF"),
        (zstd_frame(CONTEXT), "archive/tar: invalid tar header"),
    ],
)
def test_a_zstd_import_is_refused_as_dockerd_20_10_refuses_it(daemon, body, message):
    assert answer(daemon, "/v1.40/images/create?fromSrc=-&repo=zstd", body) == (
        500,
        "ApplyLayer exit status 1 stdout:  stderr: " + message,
    )
