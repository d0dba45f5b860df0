"""The API client: hosts, queries, version negotiation, errors, and real round trips over a Unix socket."""

import base64
import io
import json
import urllib.parse

import api_doubles
import pytest
import requests
import requests_unixsocket
from api_doubles import tar_of

from minibuild.api.types import AuthConfig, BuildCachePruneOptions, ImageBuildOptions, Ulimit
from minibuild.client import APIClient, APIError, ErrConnectionFailed, Ping, get_docker_os
from minibuild.client.client import ClientError, encode_query, parse_host
from minibuild.client.image_build import encode_auth_configs, image_build_options_to_query

backend, daemon = api_doubles.backend, api_doubles.daemon  # the fixtures, imported explicitly
CONTEXT = tar_of({"Dockerfile": b"FROM scratch\nRUN echo hi\n"})


def test_pinned_transport_versions():
    # The smoke tests below run with exactly these versions of requests and requests-unixsocket.
    assert requests.__version__ == "2.34.2"
    assert requests_unixsocket.Session is not None


def test_parse_host():
    assert parse_host("unix:///run/minibuild.sock") == (
        "http+unix://%2Frun%2Fminibuild.sock",
        "unix:///run/minibuild.sock",
    )
    assert parse_host("tcp://127.0.0.1:2375")[0] == "http://127.0.0.1:2375"
    for bad in ("/run/x.sock", "unix://relative", "ftp://x:1", "tcp://nohost", "tcp://"):
        with pytest.raises(ClientError):
            parse_host(bad)


def test_encode_query_is_go_url_values():
    assert encode_query({"t": ["b:1", "a b"], "dockerfile": "Dockerfile", "buildargs": '{"A":"1"}'}) == (
        "buildargs=%7B%22A%22%3A%221%22%7D&dockerfile=Dockerfile&t=b%3A1&t=a+b"
    )
    assert encode_query({}) == ""


def test_default_build_query_has_the_1_40_clients_shape():
    query = image_build_options_to_query(ImageBuildOptions(dockerfile="Dockerfile", tags=["x"]))
    assert query == {
        "t": ["x"],
        "rm": "1",
        "cpusetcpus": "",
        "networkmode": "",
        "cpusetmems": "",
        "cpushares": "0",
        "cpuquota": "0",
        "cpuperiod": "0",
        "memory": "0",
        "memswap": "0",
        "cgroupparent": "",
        "shmsize": "0",
        "dockerfile": "Dockerfile",
        "target": "",
        "ulimits": "null",
        "buildargs": "{}",
        "labels": "{}",
        "cachefrom": "[]",
        "version": "1",
    }


def test_build_query_with_options():
    options = ImageBuildOptions(
        suppress_output=True,
        no_cache=True,
        remove=False,
        force_remove=True,
        pull_parent=True,
        build_args={"B": None, "A": "<1>"},
        labels={"l": "v"},
        ulimits=[Ulimit("nofile", 2, 1)],
        platform="Linux/AMD64",
        build_id="abc",
        version="2",
        isolation="default",
        squash=True,
    )
    query = image_build_options_to_query(options, "1.40")
    assert (query["q"], query["nocache"], query["rm"], query["forcerm"], query["pull"]) == ("1",) * 2 + (
        "0",
    ) + ("1",) * 2
    assert query["buildargs"] == '{"A":"\\u003c1\\u003e","B":null}'  # Go's json.Marshal of a map
    assert query["ulimits"] == '[{"Name":"nofile","Hard":2,"Soft":1}]'
    assert (query["platform"], query["buildid"], query["version"], query["squash"]) == (
        "linux/amd64",
        "abc",
        "2",
        "1",
    )
    assert "isolation" not in query
    with pytest.raises(ValueError, match=r'"platform" requires API version 1.32'):
        image_build_options_to_query(ImageBuildOptions(platform="linux"), "1.31")


def test_registry_config_header():
    assert encode_auth_configs(ImageBuildOptions()) == "e30="
    header = encode_auth_configs(
        ImageBuildOptions(auth_configs={"r:5000": AuthConfig(username="u", password="p?>")})
    )
    assert json.loads(base64.urlsafe_b64decode(header)) == {"r:5000": {"username": "u", "password": "p?>"}}
    assert "+" not in header and "/" not in header


def test_get_docker_os():
    assert get_docker_os("Docker/20.10.24+dfsg1 (linux)") == "linux"
    assert get_docker_os("Docker/0.1.0-minibuild (windows)") == "windows"
    assert get_docker_os("nginx") == ""


def test_negotiation_rules():
    client = APIClient("unix:///nonexistent.sock")
    client.negotiate_api_version_ping(Ping(api_version="1.30"))
    assert (client.version, client.negotiated) == ("1.30", True)
    client = APIClient("unix:///nonexistent.sock")
    client.negotiate_api_version_ping(Ping())
    assert client.version == "1.24"  # a daemon without the header predates it
    client = APIClient("unix:///nonexistent.sock")
    client.negotiate_api_version_ping(Ping(api_version="1.99"))
    assert client.version == "1.40"  # never upgrade past our own


def test_host_from_environment(monkeypatch):
    monkeypatch.setenv("MINIBUILD_HOST", "tcp://127.0.0.1:1")
    assert APIClient().host == "tcp://127.0.0.1:1"
    assert APIClient("unix:///x.sock").host == "unix:///x.sock"


def test_unreachable_daemon(tmp_path):
    client = APIClient(f"unix://{tmp_path}/none.sock")
    with pytest.raises(
        ErrConnectionFailed, match=r"Cannot connect to the minibuild daemon at unix://.*none.sock"
    ):
        client.server_version()


def test_round_trip_ping_and_version(daemon):
    with APIClient(daemon.host) as client:
        ping = client.ping()
        assert (ping.api_version, ping.os_type, ping.experimental, ping.builder_version) == (
            "1.40",
            "linux",
            False,
            "",
        )
        assert client.server_version()["ApiVersion"] == "1.40"
        assert client.negotiated and client.version == "1.40"
        assert client.info()["OSType"] == "linux"


@pytest.mark.parametrize("body", [CONTEXT, io.BytesIO(CONTEXT), iter([CONTEXT[:100], CONTEXT[100:]])])
def test_image_build_round_trip(daemon, backend, body):
    with APIClient(daemon.host) as client:
        response = client.image_build(body, ImageBuildOptions(tags=["a:b"], dockerfile="Dockerfile"))
        with response:
            messages = list(response.messages())
        assert response.os_type == "linux"
    assert messages[0] == {"stream": "Step 1/2 : FROM scratch"}
    assert messages[-1] == {"stream": "Successfully tagged a:b\n"}
    assert backend.bodies[-1] == CONTEXT
    assert backend.configs[-1].options.tags == ["a:b"]


def test_api_errors_carry_status_and_message(daemon):
    with APIClient(daemon.host) as client:
        with pytest.raises(APIError) as info:
            client.image_build(tar_of({"Dockerfile": b"FROM scratch\nBOGUS\n"}))
        assert info.value.status_code == 400
        assert (
            str(info.value)
            == "Error response from daemon: dockerfile parse error line 2: unknown instruction: BOGUS"
        )
        with pytest.raises(
            APIError, match="^Error response from daemon: Cannot locate specified Dockerfile: Dockerfile$"
        ):
            client.image_build(b"")
        with pytest.raises(APIError, match="^Error response from daemon: build ID not provided$"):
            client.build_cancel("")


def test_old_versions_get_text_errors(daemon):
    with APIClient(daemon.host, version="1.11") as client, pytest.raises(APIError) as info:
        client.server_version()
    assert info.value.status_code == 400
    assert info.value.message.startswith("client version 1.11 is too old.")


def test_unknown_route_error_text(daemon):
    with APIClient(daemon.host) as client, pytest.raises(APIError) as info:
        client.get_json("/nonexistent")
    assert (info.value.status_code, info.value.message) == (404, "page not found")


def test_build_cache_prune_and_cancel(daemon, backend):
    with APIClient(daemon.host) as client:
        report = client.build_cache_prune(
            BuildCachePruneOptions(all=True, keep_storage=5, filters={"id": "x"})
        )
        client.build_cancel("some-build")
    assert (report.caches_deleted, report.space_reclaimed) == (None, 0)
    assert (backend.pruned[-1].all, backend.pruned[-1].keep_storage, backend.pruned[-1].filters) == (
        True,
        5,
        {"id": "x"},
    )
    assert backend.cancelled[-1] == "some-build"


def test_request_paths_are_versioned(daemon, backend):
    with APIClient(daemon.host) as client:
        client.image_build(CONTEXT).close()
        resp = client.get("/version")
        assert urllib.parse.urlsplit(resp.response.url).path == "/v1.40/version"
        resp.close()
