"""Pull, push and login through the daemon's API against a real registry (Debian's docker-registry).

`POST /images/create?fromImage=`, `POST /images/{name}/push` and `POST /auth` over a real socket: the
same image ID after a round trip through a fresh data root, Docker's progress messages, Docker's
errors and statuses (before the first message an HTTP error, after it the stream's last message),
credentials from X-Registry-Auth (or, for old clients, the push body), registry mirrors, and the real
clients (docker-py, the docker CLI) speaking to the daemon.
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time

import api_doubles
import docker
import pytest
import registry_fixture
import requests
from api_doubles import raw_chunks, raw_request
from hypothesis import given, settings
from hypothesis import strategies as st
from registry_fixture import PASSWORD, USERNAME, make_image

from minibuild.api.daemon import (
    DaemonConfig,
    DaemonError,
    embedded_daemon,
    load_registry_config,
    registry_info,
)
from minibuild.api.jsondecode import GoJSONError
from minibuild.client import APIClient, APIError
from minibuild.distribution import AuthConfig, encode_auth_config
from minibuild.distribution.auth import decode_auth_config, decode_auth_config_body, decode_auth_configs
from minibuild.distribution.client import Descriptor
from minibuild.distribution.manifest import Platform, PlatformManifest, build_manifest_list
from minibuild.distribution.registry import lookup_pull_endpoints
from minibuild.image.reference import parse_normalized_named

registry = registry_fixture.registry  # the fixtures, imported explicitly
source, fresh = api_doubles.source, api_doubles.fresh
basic_registry = registry_fixture.basic_registry
token_registry = registry_fixture.token_registry
token_keys = registry_fixture.token_keys

DOCKER = shutil.which("docker")
needs_docker_cli = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
BASE = {"etc/os-release": b"NAME=minibuild\n", "bin/hello": b"#!/bin/sh\necho hello\n"}
APP = {"app/data.bin": bytes(range(256)) * 400}
GOOD = encode_auth_config(AuthConfig(username=USERNAME, password=PASSWORD))
WRONG = encode_auth_config(AuthConfig(username=USERNAME, password="not-the-password"))


def tagged_image(daemon, name: str, layers=(BASE, APP), **kwargs) -> str:
    images = daemon.daemon.image_service
    image_id = make_image(images, list(layers), **kwargs)
    images.add_reference(parse_normalized_named(name), image_id)
    return image_id


def stream(daemon, method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, decoded messages or the error document) of one request."""
    status, head, raw = raw_request(daemon.socket_path, method, url, body, headers)
    if status != 200:
        return status, head, json.loads(raw)
    return status, head, [json.loads(line) for line in raw.split(b"\r\n") if line]


COUNTING = ("Downloading", "Extracting", "Pushing")  # byte counts: how many vary with chunking


def statuses(messages: list[dict]) -> list[tuple[str, str]]:
    """(id, status) of the messages that are not byte counts."""
    return [(m.get("id", ""), m.get("status", "")) for m in messages if m.get("status") not in COUNTING]


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def push(daemon, name: str, tag: str, auth: str = "e30="):
    return stream(daemon, "POST", f"/v1.40/images/{name}/push?tag={tag}", headers={"X-Registry-Auth": auth})


def pull(daemon, name: str, tag: str, auth: str | None = None, extra: str = ""):
    headers = {"X-Registry-Auth": auth} if auth else {}
    return stream(daemon, "POST", f"/v1.40/images/create?fromImage={name}&tag={tag}{extra}", headers=headers)


# --- round trip ------------------------------------------------------------------------------------------


def test_push_then_pull_into_a_fresh_data_root_gives_the_same_image(registry, source, fresh):
    name = f"{registry.host}/team/app"
    image_id = tagged_image(source, f"{name}:v1")
    diff_ids = source.daemon.image_service.image_store.get(image_id).diff_ids

    status, head, messages = push(source, name, "v1")
    assert (status, head["Content-Type"], head["Transfer-Encoding"]) == (200, "application/json", "chunked")
    result = messages[-1]["aux"]
    layers = [short(d) for d in reversed(diff_ids)]  # Docker lists them top first
    assert statuses(messages)[:3] == [
        ("", f"The push refers to repository [{name}]"),
        (layers[0], "Preparing"),
        (layers[1], "Preparing"),
    ]
    assert sorted(statuses(messages)[3:5]) == sorted((i, "Pushed") for i in layers)
    assert messages[-2:] == [
        {"status": f"v1: digest: {result['Digest']} size: {result['Size']}"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": result["Digest"], "Size": result["Size"]}},
    ]

    status, _, messages = pull(fresh, name, "v1")
    assert status == 200
    got = statuses(messages)
    blobs = [m["id"] for m in messages if m.get("status") == "Pulling fs layer"]
    assert got[0] == ("v1", "Pulling from team/app") and len(blobs) == 2
    assert got[-2:] == [
        ("", f"Digest: {result['Digest']}"),
        ("", f"Status: Downloaded newer image for {name}:v1"),
    ]
    for blob in blobs:
        assert [s for i, s in got if i == blob][-3:] == [
            "Verifying Checksum",
            "Download complete",
            "Pull complete",
        ]

    inspect = APIClient(fresh.host).image_inspect(f"{name}:v1")
    assert inspect["Id"] == image_id
    assert inspect["RepoTags"] == [f"{name}:v1"]
    assert inspect["RepoDigests"] == [f"{name}@{result['Digest']}"]
    assert inspect["RootFS"]["Layers"] == diff_ids


def test_a_second_pull_is_up_to_date(registry, source, fresh):
    name = f"{registry.host}/app"
    tagged_image(source, f"{name}:v1")
    push(source, name, "v1")
    pull(fresh, name, "v1")
    status, _, messages = pull(fresh, name, "v1")
    digest = messages[1]["status"].removeprefix("Digest: ")
    assert messages == [
        {"status": "Pulling from app", "id": "v1"},
        {"status": f"Digest: {digest}"},
        {"status": f"Status: Image is up to date for {name}:v1"},
    ]


def test_pull_by_digest_and_every_tag(registry, source, fresh):
    name = f"{registry.host}/multi"
    one = tagged_image(source, f"{name}:one", [BASE])
    two = tagged_image(source, f"{name}:two", [BASE, APP])
    _, _, messages = push(source, name, "one")
    digest = messages[-1]["aux"]["Digest"]
    push(source, name, "two")

    _, _, messages = pull(fresh, name, digest)
    assert messages[0] == {"status": "Pulling from multi", "id": digest}
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {name}@{digest}"}
    # fromImage with a trailing colon and no tag is how `docker pull -a` asked for every tag.
    _, _, messages = stream(fresh, "POST", f"/images/create?fromImage={name}:")
    assert [m["id"] for m in messages if m.get("status", "").startswith("Pulling from")] == ["one", "two"]
    images = APIClient(fresh.host)
    assert images.image_inspect(f"{name}:one")["Id"] == one
    assert images.image_inspect(f"{name}:two")["Id"] == two


def test_push_every_tag_of_a_name(registry, source, fresh):
    name = f"{registry.host}/every"
    tagged_image(source, f"{name}:a", [BASE])
    tagged_image(source, f"{name}:b", [APP])
    _, _, messages = stream(source, "POST", f"/images/{name}/push", headers={"X-Registry-Auth": "e30="})
    assert [m["aux"]["Tag"] for m in messages if "aux" in m] == ["a", "b"]


def test_a_manifest_list_resolves_to_the_platform_asked_for(registry, source, fresh, tmp_path):
    name = f"{registry.host}/multiarch"
    amd64 = tagged_image(source, f"{name}:amd64", [{"arch": b"amd64\n"}], architecture="amd64")
    arm64 = tagged_image(source, f"{name}:arm64", [{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
    media_type = "application/vnd.docker.distribution.manifest.v2+json"
    entries = []
    for tag, platform in (("amd64", Platform("linux", "amd64")), ("arm64", Platform("linux", "arm64", "v8"))):
        aux = push(source, name, tag)[2][-1]["aux"]
        entries.append(PlatformManifest(Descriptor(media_type, aux["Digest"], aux["Size"]), platform))
    manifest_list = build_manifest_list(entries)
    put = requests.put(
        f"{registry.url}/v2/multiarch/manifests/latest",
        data=manifest_list,
        headers={"Content-Type": "application/vnd.docker.distribution.manifest.list.v2+json"},
        timeout=30,
    )
    assert put.status_code == 201, put.text

    status, _, messages = pull(fresh, name, "latest", extra="&platform=linux/arm64")
    assert status == 200
    assert {"status": f"Digest: sha256:{hashlib.sha256(manifest_list).hexdigest()}"} in messages
    client = APIClient(fresh.host)
    assert client.image_inspect(f"{name}:latest")["Id"] == arm64
    pull(fresh, name, "latest", extra="&platform=linux/amd64")
    assert client.image_inspect(f"{name}:latest")["Id"] == amd64
    status, _, messages = pull(fresh, name, "latest", extra="&platform=linux/s390x")
    text = "no matching manifest for linux/s390x in the manifest list entries"
    assert (status, messages) == (
        200,  # "Pulling from" was already sent: the error ends the stream
        [
            {"status": "Pulling from multiarch", "id": "latest"},
            {"errorDetail": {"message": text}, "error": text},
        ],
    )


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("fromImage=BAD&tag=v1", 400, "invalid reference format: repository name must be lowercase"),
        ("fromImage={host}/app&tag=b%21d", 400, "invalid tag format"),
        ("fromImage={host}/app&tag=v1&platform=bogus", 400,
         '"bogus": unknown operating system or architecture: invalid argument'),
        ("fromImage={host}/app&tag=nope", 404,
         "manifest for {host}/app:nope not found: manifest unknown: manifest unknown"),
        ("fromImage={host}/nothing/here&tag=v1", 404,
         "manifest for {host}/nothing/here:v1 not found: manifest unknown: manifest unknown"),
    ],
)  # fmt: skip
def test_pull_errors_before_the_first_message_are_http_errors(registry, fresh, query, code, message):
    status, head, document = stream(fresh, "POST", "/images/create?" + query.format(host=registry.host))
    assert (status, head["Content-Type"], document) == (
        code,
        "application/json",
        {"message": message.format(host=registry.host)},
    )


def test_pull_from_a_registry_that_is_not_there(fresh):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    status, _, document = pull(fresh, f"127.0.0.1:{port}/x", "v1")
    assert (status, document) == (
        500,
        {
            "message": f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: '
            "connect: connection refused"
        },
    )


def test_push_errors_after_the_first_message_end_the_stream(registry, source):
    status, _, messages = push(source, f"{registry.host}/team/none", "v1")
    text = f"An image does not exist locally with the tag: {registry.host}/team/none"
    assert status == 200
    assert messages == [
        {"status": f"The push refers to repository [{registry.host}/team/none]"},
        {"errorDetail": {"message": text}, "error": text},
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [("BAD/push?tag=v1", "invalid reference format: repository name must be lowercase"),
     ("x/push?tag=b%21d", "invalid tag format"),
     ("x/push?tag=sha256:" + "a" * 64, "invalid tag format")],
)  # fmt: skip
def test_push_reference_errors_are_500(source, path, message):
    status, _, document = stream(source, "POST", f"/images/{path}", headers={"X-Registry-Auth": "e30="})
    assert (status, document) == (500, {"message": message})


@pytest.mark.parametrize(
    ("query", "message"),
    [("fromImage=BAD&tag=v1", "invalid reference format: repository name must be lowercase"),
     ("fromImage=x&tag=b%21d", "invalid tag format"),
     ("fromImage=x&tag=sha256:abc", "invalid tag format")],  # not a digest, so a tag, and not a valid one
)  # fmt: skip
def test_pull_reference_errors_are_400(fresh, query, message):
    assert stream(fresh, "POST", f"/v1.40/images/create?{query}")[::2] == (400, {"message": message})


# --- credentials ----------------------------------------------------------------------------------------


def test_basic_auth_pull_needs_the_credentials_of_x_registry_auth(basic_registry, source, fresh):
    name = f"{basic_registry.host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")
    status, _, messages = push(source, name, "v1")  # anonymous: refused once the registry is asked
    # A layer upload reports missing credentials without the URL (retryOnError); a pull keeps it.
    assert (status, messages[-1]) == (
        200,
        {"errorDetail": {"message": "no basic auth credentials"}, "error": "no basic auth credentials"},
    )
    status, _, messages = push(source, name, "v1", GOOD)
    assert "aux" in messages[-1]

    assert pull(fresh, name, "v1")[::2] == (
        500,
        {
            "message": f'Head "http://{basic_registry.host}/v2/private/app/manifests/v1": '
            "no basic auth credentials"
        },
    )
    assert pull(fresh, name, "v1", WRONG)[::2] == (500, {"message": "unauthorized: authentication required"})
    assert pull(fresh, name, "v1", "!!!not-base64")[0] == 500  # undecodable: anonymous, as dockerd reads it
    status, _, messages = pull(fresh, name, "v1", GOOD)
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {name}:v1"}
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id


def test_token_auth_pull_and_push(token_registry, source, fresh):
    name = f"{token_registry.host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")
    assert "aux" in push(source, name, "v1", GOOD)[2][-1]
    status, _, document = pull(fresh, name, "v1")
    assert status == 404 and document["message"].startswith(
        "pull access denied for " + name + ", repository does not exist or may require 'docker login'"
    )
    assert pull(fresh, name, "v1", GOOD)[0] == 200
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id
    assert {r["account"] for r in token_registry.token_server.requests} == {"", USERNAME}


def test_push_credentials_in_the_body_for_old_clients(registry, source):
    name = f"{registry.host}/legacy"
    tagged_image(source, f"{name}:v1", [BASE])
    url = f"/v1.40/images/{name}/push?tag=v1"
    json_type = {"Content-Type": "application/json"}
    assert stream(source, "POST", url, b"{}", json_type)[2][-1]["aux"]["Tag"] == "v1"
    assert stream(source, "POST", url, b'{"username":"u"} trailing bytes are never read', json_type)[0] == 200
    for body, error in [
        (b"", "EOF"),
        (b"abc", "invalid character 'a' looking for beginning of value"),
        (b"[1]", "json: cannot unmarshal array into Go value of type types.AuthConfig"),
        (
            b'{"username":5}',
            "json: cannot unmarshal number into Go struct field AuthConfig.username of type string",
        ),
        (b'{"username":"u"', "unexpected EOF"),
    ]:
        assert stream(source, "POST", url, body, json_type)[::2] == (
            400,
            {"message": f"Bad parameters and missing X-Registry-Auth: {error}"},
        )
    # A form-encoded body is the form itself to dockerd: the JSON decoder finds nothing left.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert stream(source, "POST", url, b"{}", form)[2] == {
        "message": "Bad parameters and missing X-Registry-Auth: EOF"
    }


def test_login_through_post_auth(basic_registry, fresh):
    def auth(body: bytes):
        status, _, raw = raw_request(
            fresh.socket_path, "POST", "/v1.40/auth", body, {"Content-Type": "application/json"}
        )
        return status, raw

    good = json.dumps({"username": USERNAME, "password": PASSWORD, "serveraddress": basic_registry.host})
    assert auth(good.encode()) == (200, b'{"IdentityToken":"","Status":"Login Succeeded"}\n')
    legacy_url = json.dumps(
        {"username": USERNAME, "password": PASSWORD, "serveraddress": basic_registry.url + "/v1/"}
    )
    assert auth(legacy_url.encode())[0] == 200
    wrong = json.dumps({"username": USERNAME, "password": "nope", "serveraddress": basic_registry.host})
    # dockerd 20.10 leaves a registry's refusal unmarked: 500 (later versions answer 401).
    assert auth(wrong.encode()) == (
        500,
        b'{"message":"login attempt to http://%s/v2/ failed with status: 401 Unauthorized"}\n'
        % basic_registry.host.encode(),
    )
    anonymous = json.dumps({"serveraddress": basic_registry.host})
    assert auth(anonymous.encode()) == (
        500,
        b'{"message":"Get \\"http://%s/v2/\\": no basic auth credentials"}\n' % basic_registry.host.encode(),
    )
    for body, message in [
        (b"", "EOF"),
        (b"abc", "invalid character 'a' looking for beginning of value"),
        (
            b'{"serveraddress":5}',
            "json: cannot unmarshal number into Go struct field AuthConfig.serveraddress of type string",
        ),
    ]:
        assert auth(body) == (500, json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n")
    assert auth(b"null")[0] == 400  # dockerd crashes the request here; minibuild answers


def test_login_on_a_token_registry_returns_an_identity_token(token_registry, source, fresh):
    name = f"{token_registry.host}/private/app"
    image_id = tagged_image(source, f"{name}:v1")
    push(source, name, "v1", GOOD)
    answer = APIClient(fresh.host).registry_login(
        AuthConfig(USERNAME, PASSWORD, serveraddress=token_registry.host)
    )
    assert answer["Status"] == "Login Succeeded" and answer["IdentityToken"]
    token_only = encode_auth_config(AuthConfig(identitytoken=answer["IdentityToken"]))
    assert pull(fresh, name, "v1", token_only)[0] == 200
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id


def test_client_login_refused_is_an_api_error(basic_registry, fresh):
    with pytest.raises(APIError) as err:
        APIClient(fresh.host).registry_login(AuthConfig(USERNAME, "nope", serveraddress=basic_registry.host))
    assert err.value.status_code == 500
    assert str(err.value).startswith("Error response from daemon: login attempt to ")


def test_login_refused_by_a_token_server_is_401(token_registry, fresh):
    with pytest.raises(APIError) as err:
        APIClient(fresh.host).registry_login(AuthConfig(USERNAME, "nope", serveraddress=token_registry.host))
    assert err.value.status_code == 401
    assert str(err.value) == (
        f'Error response from daemon: Get "http://{token_registry.host}/v2/": '
        "unauthorized: incorrect username or password"
    )


@pytest.mark.parametrize(
    ("address", "status", "message"),
    [("a b", 400, 'unable to parse server address: parse "https://a b": invalid character " " in host name'),
     ("127.0.0.1:abc", 400,
      'unable to parse server address: parse "https://127.0.0.1:abc": invalid port ":abc" after host'),
     ("[::1", 400, 'unable to parse server address: parse "https://[::1": missing \']\' in host'),
     ("a\x01b", 400,
      'unable to parse server address: parse "https://a\\x01b": net/url: invalid control character in URL'),
     ("https://", 500, 'Get "https:/v2/": http: no Host in request URL'),
     ("127.0.0.1:1", 500, 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused')],
)  # fmt: skip
def test_login_failures_have_dockerds_status(fresh, address, status, message):
    """An address url.Parse refuses is the client's mistake (400); failing to reach a registry is a 500."""
    body = json.dumps({"username": "u", "password": "p", "serveraddress": address}).encode()
    answer = raw_request(fresh.socket_path, "POST", "/v1.40/auth", body, {"Content-Type": "application/json"})
    assert (answer[0], json.loads(answer[2])) == (status, {"message": message})


# --- cancellation ---------------------------------------------------------------------------------------


def test_a_client_that_leaves_mid_pull_leaves_nothing_half_stored(registry, source, fresh):
    name = f"{registry.host}/big"
    big = {"big.bin": os.urandom(24 << 20)}  # incompressible: the download takes many chunks
    image_id = tagged_image(source, f"{name}:v1", [BASE, big])
    push(source, name, "v1")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(fresh.socket_path)
        request = (
            f"POST /images/create?fromImage={name}&tag=v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendall(request.encode())
        seen = b""
        while b"Downloading" not in seen:
            seen += sock.recv(4096)

    images = fresh.daemon.image_service
    staging = fresh.data_root / "distribution" / "tmp"

    def settled() -> bool:
        """The pull was cancelled and undone, or (had it won the race) finished."""
        if list(staging.iterdir()):
            return False
        tags = [image["RepoTags"] for image in images.list_images()]
        return tags == [[f"{name}:v1"]] or (tags == [] and images.layer_store.layers() == [])

    deadline = time.monotonic() + 120  # a hang guard, not a speed requirement
    while not settled():
        assert time.monotonic() < deadline, "a cancelled pull left a half-stored image behind"
        time.sleep(0.05)
    assert pull(fresh, name, "v1")[0] == 200  # and the next pull completes it
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id


# --- daemon options: insecure registries, mirrors -------------------------------------------------------


def test_a_mirror_serves_docker_hub_images_offline(registry, source, tmp_path):
    tagged_image(source, f"{registry.host}/library/mirrored:v1", [BASE])
    push(source, f"{registry.host}/library/mirrored", "v1")
    with embedded_daemon(tmp_path / "mirrored", registry_mirrors=[registry.url]) as d:
        status, _, messages = pull(d, "mirrored", "v1")
        assert status == 200
        assert messages[0] == {"status": "Pulling from library/mirrored", "id": "v1"}
        assert messages[-1] == {"status": "Status: Downloaded newer image for mirrored:v1"}
        info = APIClient(d.host).info()["RegistryConfig"]
        assert info["Mirrors"] == [registry.url + "/"]
        assert info["IndexConfigs"]["docker.io"]["Mirrors"] == [registry.url + "/"]


def test_registry_options_are_checked_as_dockerd_checks_them():
    def load(**options):
        return load_registry_config(DaemonConfig(**options))

    config = load(insecure_registries=["10.1.2.0/24", "myregistry:5000", "http://other.local"])
    assert registry_info(config)["InsecureRegistryCIDRs"] == ["10.1.2.0/24", "127.0.0.0/8"]
    assert sorted(registry_info(config)["IndexConfigs"]) == ["docker.io", "myregistry:5000", "other.local"]
    assert registry_info(config)["IndexConfigs"]["myregistry:5000"] == {
        "Name": "myregistry:5000", "Mirrors": [], "Secure": False, "Official": False,
    }  # fmt: skip
    assert load(registry_mirrors=["https://mirror.local:5000"]).mirrors == ["https://mirror.local:5000/"]
    for options, message in [
        ({"registry_mirrors": ["ftp://m"]}, 'invalid mirror: unsupported scheme "ftp" in "ftp://m"'),
        ({"registry_mirrors": ["https://m/path"]},
         'invalid mirror: path, query, or fragment at end of the URI "https://m/path"'),
        ({"registry_mirrors": ["https://u:secret@m/"]},
         'invalid mirror: username/password not allowed in URI "https://u:xxxxx@m/"'),
        ({"registry_mirrors": ["https://m:port"]}, 'invalid mirror: "https://m:port" is not a valid URI'),
        ({"registry_mirrors": ["https://a b"]}, 'invalid mirror: "https://a b" is not a valid URI'),
        ({"insecure_registries": ["git://x"]}, "insecure registry git://x should not contain '://'"),
        ({"insecure_registries": ["-bad"]}, "invalid index name (-bad). Cannot begin or end with a hyphen"),
        ({"insecure_registries": ["in valid"]},
         'insecure registry in valid is not valid: invalid host "in valid"'),
        ({"insecure_registries": ["host:99999"]},
         'insecure registry host:99999 is not valid: invalid port "99999"'),
    ]:  # fmt: skip
        with pytest.raises(DaemonError) as err:
            load(**options)
        assert str(err.value) == message


def test_a_daemon_with_a_bad_mirror_does_not_start(tmp_path):
    with pytest.raises(DaemonError, match="invalid mirror"):
        embedded_daemon(tmp_path / "root", registry_mirrors=["ftp://m"])


def test_insecure_registries_reach_the_registry_service(tmp_path):
    with embedded_daemon(tmp_path / "root", insecure_registries=["myregistry:5000", "10.9.0.0/16"]) as d:
        config = d.daemon.registry_service.config
        assert [e.url for e in lookup_pull_endpoints(config, "myregistry:5000")] == [
            "https://myregistry:5000",
            "http://myregistry:5000",
        ]
        assert [e.url for e in lookup_pull_endpoints(config, "10.9.8.7:5000")][-1] == "http://10.9.8.7:5000"
        assert [e.url for e in lookup_pull_endpoints(config, "secure.example:5000")] == [
            "https://secure.example:5000"
        ]
        info = APIClient(d.host).info()["RegistryConfig"]
        assert info["InsecureRegistryCIDRs"] == ["10.9.0.0/16", "127.0.0.0/8"]
        assert info["IndexConfigs"]["myregistry:5000"]["Secure"] is False


# --- decoding credentials -------------------------------------------------------------------------------

auth_configs = st.builds(
    AuthConfig,
    username=st.text(max_size=20),
    password=st.text(max_size=20),
    serveraddress=st.text(max_size=20),
)


@settings(deadline=None)
@given(auth_configs, st.text(max_size=20))
def test_a_body_is_read_as_gos_decoder_reads_it(auth, trailing):
    body = json.dumps(auth.to_dict()).encode() + trailing.encode()
    assert decode_auth_config_body(body) == auth


@settings(deadline=None)
@given(st.binary(max_size=40))
def test_any_body_is_an_auth_config_or_a_go_json_error(body):
    try:
        decode_auth_config_body(body)
    except GoJSONError:
        pass  # refused with Go's message: the route answers it as an HTTP error


def test_x_registry_config_keeps_what_go_could_decode():
    header = base64.urlsafe_b64encode(
        b'{"r:5000":{"username":"u","password":7},"s:5000":"not an object","t:5000":{"auth":"x"}} tail'
    ).decode()
    assert decode_auth_configs(header) == {
        "r:5000": AuthConfig(username="u"),
        "s:5000": AuthConfig(),  # the wrong type: Go stores the zero value and goes on
        "t:5000": AuthConfig(auth="x"),
    }


def test_credentials_headers_are_base64url_with_padding_as_go_reads_them():
    payload = b'{"username":"u~~~"}'
    standard = base64.b64encode(payload).decode()
    assert "+" in standard  # the standard alphabet: Go's URL decoder refuses it
    assert decode_auth_config(standard) == AuthConfig()
    assert decode_auth_config(base64.urlsafe_b64encode(payload).decode()) == AuthConfig(username="u~~~")
    unpadded = base64.urlsafe_b64encode(b'{"a:1":{"username":"uv"}}').decode().rstrip("=")
    assert len(unpadded) % 4 and decode_auth_configs(unpadded) == {}


# --- real clients ---------------------------------------------------------------------------------------


def test_docker_py_pulls_pushes_and_logs_in(basic_registry, source, fresh):
    name = f"{basic_registry.host}/dpy/app"
    image_id = tagged_image(source, f"{name}:v1")
    auth = {"username": USERNAME, "password": PASSWORD}
    pusher = docker.APIClient(base_url=source.host)
    try:
        # docker-py sends the credentials it is given in X-Registry-Auth; without them, a `{}` body.
        out = list(pusher.push(name, tag="v1", stream=True, decode=True, auth_config=auth))
        assert out[-1]["aux"]["Tag"] == "v1"
        anonymous = list(pusher.push(name, tag="v1", stream=True, decode=True))
        assert anonymous[-1]["error"] == "no basic auth credentials"
    finally:
        pusher.close()
    puller = docker.APIClient(base_url=fresh.host)
    try:
        login = puller.login(USERNAME, PASSWORD, registry=basic_registry.host, reauth=True)
        assert login["Status"] == "Login Succeeded"
        out = list(puller.pull(name, tag="v1", stream=True, decode=True, auth_config=auth))
        assert out[-1] == {"status": f"Status: Downloaded newer image for {name}:v1"}
        assert puller.inspect_image(f"{name}:v1")["Id"] == image_id
    finally:
        puller.close()


@needs_docker_cli
def test_the_docker_cli_pulls_and_pushes_through_the_daemon(registry, source, fresh, tmp_path):
    name = f"{registry.host}/cli/app"
    image_id = tagged_image(source, f"{name}:v1")
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker-config"), HOME=str(tmp_path))

    def docker_cli(daemon, *args):
        return subprocess.run(
            [DOCKER, "-H", daemon.host, *args], capture_output=True, text=True, env=env, timeout=300
        )

    pushed = docker_cli(source, "push", f"{name}:v1")
    assert pushed.returncode == 0, pushed.stderr
    layers = [short(d) for d in reversed(source.daemon.image_service.image_store.get(image_id).diff_ids)]
    lines = pushed.stdout.splitlines()
    assert lines[:3] == [
        f"The push refers to repository [{name}]",
        f"{layers[0]}: Preparing",
        f"{layers[1]}: Preparing",
    ]
    assert sorted(lines[3:5]) == sorted(f"{i}: Pushed" for i in layers)
    assert lines[5].startswith("v1: digest: sha256:") and len(lines) == 6

    pulled = docker_cli(fresh, "pull", f"{name}:v1")
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stdout.splitlines()
    assert lines[0] == "v1: Pulling from cli/app"
    assert lines[-3:-1] == [lines[-3], f"Status: Downloaded newer image for {name}:v1"]
    assert lines[-3].startswith("Digest: sha256:") and lines[-1] == f"{name}:v1"
    assert APIClient(fresh.host).image_inspect(f"{name}:v1")["Id"] == image_id

    missing = docker_cli(fresh, "pull", f"{registry.host}/cli/none:v1")
    assert (missing.returncode, missing.stderr) == (
        1,
        f"Error response from daemon: manifest for {registry.host}/cli/none:v1 not found: "
        "manifest unknown: manifest unknown\n",
    )


def test_the_stream_is_one_chunk_per_message(registry, source):
    tagged_image(source, f"{registry.host}/chunks:v1", [BASE])
    chunks = raw_chunks(
        source.socket_path,
        "POST",
        f"/images/{registry.host}/chunks/push?tag=v1",
        headers={"X-Registry-Auth": "e30="},
    )
    assert all(chunk.endswith(b"\r\n") and chunk.count(b"\r\n") == 1 for chunk in chunks)
