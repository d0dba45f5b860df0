"""The API server over a real Unix socket: version prefixes, Docker headers, 404s, /_ping, /version, /info."""

import json

import pytest
from api_doubles import RecordingBuildBackend, raw_request

from minibuild.api import versions
from minibuild.api.daemon import embedded_daemon
from minibuild.api.server import ENGINE_VERSION

STANDARD = {"Api-Version": "1.40", "Ostype": "linux", "Server": f"Docker/{ENGINE_VERSION} (linux)"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root"), build_backend=RecordingBuildBackend()) as d:
        yield d


def request(daemon, method, url, body=None, headers=None):
    return raw_request(daemon.socket_path, method, url, body, headers)


@pytest.mark.parametrize("prefix", ["", "/v1.12", "/v1.24", "/v1.40"])
def test_ping_get_served_under_every_supported_prefix(daemon, prefix):
    status, headers, body = request(daemon, "GET", prefix + "/_ping")
    assert (status, body) == (200, b"OK")
    for key, value in STANDARD.items():
        assert headers[key] == value
    assert headers["Docker-Experimental"] == "false"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert headers["Pragma"] == "no-cache"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == "2"
    assert "Builder-Version" not in headers


def test_ping_head_has_headers_and_no_body(daemon):
    status, headers, body = request(daemon, "HEAD", "/_ping")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "0"
    assert headers["Api-Version"] == "1.40"
    assert "Builder-Version" not in headers


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/_ping"),
        ("HEAD", "/version"),
        ("GET", "/build"),
        ("GET", "/build/prune"),
        ("GET", "/build/cancel"),
        ("GET", "/vfoo/_ping"),
        ("GET", "/v1.40/nonexistent"),
        ("DELETE", "/version"),
    ],
)
def test_unknown_route_or_method_is_bare_404(daemon, method, url):
    status, headers, body = request(daemon, method, url)
    assert status == 404
    if method != "HEAD":
        assert body == b'{"message":"page not found"}\n'
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == "29"
    for key in ("Api-Version", "Ostype", "Server", "Docker-Experimental"):
        assert key not in headers


@pytest.mark.parametrize(("prefix", "shown"), [("/v1.11", "1.11"), ("/v1", "1"), ("/v1.0", "1.0")])
def test_too_old_version_is_plain_text_400(daemon, prefix, shown):
    status, headers, body = request(daemon, "GET", prefix + "/version")
    assert status == 400
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Docker-Experimental" not in headers
    assert headers["Api-Version"] == "1.40"
    assert (
        body
        == (
            f"client version {shown} is too old. Minimum supported API version is 1.12, "
            "please upgrade your client to a newer version\n"
        ).encode()
    )


def test_too_old_version_applies_to_build_too(daemon):
    status, headers, body = request(daemon, "POST", "/v1.11/build", b"")
    assert status == 400
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"client version 1.11 is too old.")


@pytest.mark.parametrize(("prefix", "shown"), [("/v1.41", "1.41"), ("/v1.99", "1.99"), ("/v2", "2")])
def test_too_new_version_is_json_400(daemon, prefix, shown):
    status, headers, body = request(daemon, "GET", prefix + "/_ping")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert "Docker-Experimental" not in headers
    assert (
        body
        == (
            '{"message":"client version ' + shown + ' is too new. Maximum supported API version is 1.40"}\n'
        ).encode()
    )


def test_errors_for_old_clients_are_plain_text(daemon):
    # Clients up to API 1.23 get errors as text; newer ones and unprefixed requests get JSON.
    status, headers, body = request(daemon, "POST", "/v1.23/build/cancel")
    assert (status, headers["Content-Type"], body) == (
        500,
        "text/plain; charset=utf-8",
        b"build ID not provided\n",
    )
    status, headers, body = request(daemon, "POST", "/v1.24/build/cancel")
    assert (status, headers["Content-Type"], body) == (
        500,
        "application/json",
        b'{"message":"build ID not provided"}\n',
    )


def test_version_document(daemon):
    status, headers, body = request(daemon, "GET", "/version")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body.endswith(b"}\n") and b" " not in body.replace(b"Engine", b"")[:20]
    doc = json.loads(body)
    assert list(doc) == [
        "Platform",
        "Components",
        "Version",
        "ApiVersion",
        "MinAPIVersion",
        "GitCommit",
        "GoVersion",
        "Os",
        "Arch",
        "KernelVersion",
    ]
    assert (doc["ApiVersion"], doc["MinAPIVersion"], doc["Os"]) == ("1.40", "1.12", "linux")
    engine = doc["Components"][0]
    assert engine["Name"] == "Engine" and engine["Version"] == ENGINE_VERSION
    assert engine["Details"]["ApiVersion"] == "1.40" and engine["Details"]["MinAPIVersion"] == "1.12"
    assert all(isinstance(v, str) for v in engine["Details"].values())
    assert engine["Details"]["Experimental"] == "false"


def test_info_has_what_clients_read(daemon):
    status, _, body = request(daemon, "GET", "/v1.40/info")
    assert status == 200
    info = json.loads(body)
    for key in ("ID", "Containers", "Images", "Driver", "OSType", "Architecture", "NCPU", "MemTotal"):
        assert key in info
    assert info["ServerVersion"] == ENGINE_VERSION
    assert info["DockerRootDir"] == str(daemon.data_root)
    assert info["OSType"] == "linux" and info["NCPU"] >= 1 and info["MemTotal"] > 0
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    # The engine id is stable for a data root.
    assert json.loads(request(daemon, "GET", "/info")[2])["ID"] == info["ID"]


def test_json_over_2k_is_chunked_like_go(daemon):
    _, headers, body = request(daemon, "GET", "/info")
    if len(body) > 2048:
        assert headers.get("Transfer-Encoding") == "chunked"
    else:
        assert headers["Content-Length"] == str(len(body))


def test_version_comparison_is_numeric():
    assert versions.less_than("1.9", "1.12")
    assert versions.greater_than("1.40", "1.4")
    assert versions.compare("1.40", "1.40.0") == 0
    assert versions.less_than("1", "1.12")
    assert versions.greater_than("2", "1.40")
