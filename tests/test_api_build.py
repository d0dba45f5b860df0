"""POST /build, /build/prune, /build/cancel: query parsing, the message stream, errors, cancellation.

The builder is a test double (api_doubles.RecordingBuildBackend); what is tested here is the wire.
"""

import base64
import bz2
import gzip
import hashlib
import json
import lzma
import os
import socket
import urllib.parse

import api_doubles
import pytest
from aiohttp.test_utils import make_mocked_request
from api_doubles import RecordingBuildBackend, UnixHTTPConnection, raw_chunks, raw_request, tar_of
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild import errdefs
from minibuild.api.daemon import embedded_daemon
from minibuild.api.router.build import get_auth_configs, new_image_build_options, parse_filters
from minibuild.api.server import API_VERSION_KEY

backend, daemon = api_doubles.backend, api_doubles.daemon  # the fixtures, imported explicitly
CONTEXT = tar_of({"Dockerfile": b"FROM scratch\nRUN echo hello\n", "hello.txt": b"hi\n"})


def options_for(query: str, version: str = "1.40"):
    request = make_mocked_request("POST", "/build?" + query)
    request[API_VERSION_KEY] = version
    return new_image_build_options(request)


def refused(query: str, version: str = "1.40") -> tuple[int, str]:
    with pytest.raises(errdefs.DockerError) as info:
        options_for(query, version)
    return errdefs.get_http_error_status_code(info.value), str(info.value)


# --- new_image_build_options --------------------------------------------------------------------------


def test_defaults_when_nothing_is_given():
    o = options_for("")
    assert o.remove is True  # rm defaults to true when absent
    assert (o.dockerfile, o.version, o.tags, o.build_args, o.suppress_output) == ("", "1", [], {}, False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("True", True), ("maybe", True), (" yes ", True), ("0", False), ("False", False)]
    + [("no", False), ("NONE", False), ("", False), ("  false ", False)],
)
def test_booleans_follow_dockerd(value, expected):
    o = options_for("q=" + urllib.parse.quote(value) + "&nocache=" + urllib.parse.quote(value))
    assert (o.suppress_output, o.no_cache) == (expected, expected)


def test_rm_and_forcerm():
    assert options_for("rm=0").remove is False
    assert options_for("rm=False").remove is False
    assert options_for("rm=0&forcerm=1").remove is True  # forcerm implies rm
    assert options_for("forcerm=1").force_remove is True


def test_repeated_and_plain_parameters():
    o = options_for(
        "t=a:1&t=b&extrahosts=h:1.2.3.4&target=base&networkmode=none&dockerfile=sub/My.Dockerfile"
    )
    assert o.tags == ["a:1", "b"] and o.extra_hosts == ["h:1.2.3.4"]
    assert (o.target, o.network_mode, o.dockerfile) == ("base", "none", "sub/My.Dockerfile")
    assert options_for("t=").tags == [""]  # accepted: the build runs untagged


def test_zeros_and_empties_the_20_10_cli_sends_are_accepted():
    q = (
        "buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus=&cpusetmems="
        "&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0&memswap=0&networkmode=default&rm=1"
        "&shmsize=0&t=x&target=&ulimits=null&version=1"
    )
    o = options_for(q)
    assert (o.build_args, o.labels, o.cache_from, o.ulimits, o.shm_size) == ({}, {}, [], [], 0)


def test_unparsable_resources_become_zero():
    o = options_for("memory=abc&memswap=1e3&cpushares=12&cpuquota=-5")
    assert (o.memory, o.memory_swap, o.cpu_shares, o.cpu_quota) == (0, 0, 12, -5)


def test_build_args_keep_nulls():
    o = options_for("buildargs=" + urllib.parse.quote('{"A":"1","B":null}'))
    assert o.build_args == {"A": "1", "B": None}
    # docker-py sends Python's json.dumps spacing, with spaces as "+"
    assert options_for('buildargs={"A":+"1"}'.replace('"', "%22")).build_args == {"A": "1"}


def test_labels_cachefrom_ulimits_outputs_platform_shmsize():
    o = options_for(
        "labels="
        + urllib.parse.quote('{"l":"v"}')
        + "&cachefrom="
        + urllib.parse.quote('["a","b"]')
        + "&ulimits="
        + urllib.parse.quote('[{"Name":"nofile","Hard":2048,"Soft":1024}]')
        + "&outputs="
        + urllib.parse.quote('[{"Type":"local","Attrs":{"dest":"/x"}}]')
        + "&platform=Linux/x86_64&shmsize=67108864"
    )
    assert o.labels == {"l": "v"} and o.cache_from == ["a", "b"]
    assert (o.ulimits[0].name, o.ulimits[0].hard, o.ulimits[0].soft) == ("nofile", 2048, 1024)
    assert o.outputs == [{"Type": "local", "Attrs": {"dest": "/x"}}]
    assert (o.platform, o.shm_size) == ("linux/amd64", 67108864)
    assert options_for("platform=windows/amd64").platform == "windows/amd64"
    assert options_for("platform=arm64").platform == "linux/arm64"


BUILD_ARGS_ERR = "error reading build args: "
LABELS_ERR = "error reading labels: "
NOT_A_KEY = "looking for beginning of object key string"
UNMARSHAL = "json: cannot unmarshal"


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("buildargs={not json", 400, f"{BUILD_ARGS_ERR}invalid character 'n' {NOT_A_KEY}"),
        ("buildargs=[1,2]", 400, f"{BUILD_ARGS_ERR}{UNMARSHAL} array into Go value of type "
         "map[string]*string"),
        ('buildargs={"a":1}', 400, f"{BUILD_ARGS_ERR}{UNMARSHAL} number into Go value of type string"),
        ("labels={not json", 400, f"{LABELS_ERR}invalid character 'n' {NOT_A_KEY}"),
        ('labels=["a"]', 400, f"{LABELS_ERR}{UNMARSHAL} array into Go value of type map[string]string"),
        ("cachefrom={bad", 500, f"invalid character 'b' {NOT_A_KEY}"),
        ("ulimits=bad", 400, "error reading ulimit settings: invalid character 'b' looking for beginning of "
         "value"),
        ("shmsize=abc", 500, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ("isolation=bogus", 400, 'Unsupported isolation: "bogus"'),
        ("version=3", 500, 'invalid version "3"'),
        ("platform=bogus", 400, '"bogus": unknown operating system or architecture: '
         "invalid argument"),
        ("securityopt=seccomp=x", 400, "The daemon on this platform does not support setting security "
         "options on build"),
    ],
)  # fmt: skip
def test_invalid_parameters_are_refused_like_dockerd(query, status, message):
    assert refused(urllib.parse.quote(query, safe="=&")) == (status, message)


def test_platform_ignored_before_1_32_and_pull_before_1_16():
    assert options_for("platform=bogus", "1.31").platform == ""
    assert options_for("pull=1", "1.15").pull_parent is False
    assert options_for("pull=1", "1.16").pull_parent is True


@settings(deadline=None)  # no per-example time limit: the machine may be loaded
@given(st.text())
def test_options_parsing_never_crashes(value):
    query = "&".join(
        f"{k}={urllib.parse.quote(value)}"
        for k in ("buildargs", "labels", "cachefrom", "ulimits", "shmsize", "platform", "outputs", "memory")
    )
    try:
        options_for(query)
    except errdefs.DockerError:
        pass


# --- X-Registry-Config ------------------------------------------------------------------------------------


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_auth_configs_from_the_cli_and_docker_py():
    cli = b64url('{"localhost:5000":{"username":"u","password":"p","serveraddress":"localhost:5000"}}')
    auths = get_auth_configs({"X-Registry-Config": cli})
    assert auths["localhost:5000"].username == "u" and auths["localhost:5000"].password == "p"
    dpy = b64url(
        '{"localhost:5000": {"username": "u", "password": "p", "email": null, "serveraddress": "x"}}'
    )
    assert get_auth_configs({"X-Registry-Config": dpy})["localhost:5000"].email == ""
    assert get_auth_configs({"X-Registry-Config": "e30="}) == {}


@pytest.mark.parametrize(
    "header", ["!!!notbase64", b64url("not json"), b64url("[1,2]"), b64url("null"), "bnVsbA"]
)
def test_undecodable_auth_configs_are_ignored(header):
    assert get_auth_configs({"X-Registry-Config": header}) == {}


def test_auth_entries_of_the_wrong_shape_are_kept_empty():
    """Go's json.Decoder fills the map entry by entry and only then reports the first type error.

    getAuthConfigs ignores that error but keeps the map: an entry of the wrong type (or null) is there as
    an empty AuthConfig, a field of the wrong type stays empty, and every other entry is decoded.
    """
    header = b64url('{"a":5,"b":{"username":"u","password":7},"c":"x","d":null,"e":[1],"f":{"auth":"z"}}')
    auths = get_auth_configs({"X-Registry-Config": header})
    assert {registry: auth.to_dict() for registry, auth in auths.items()} == {
        "a": {},
        "b": {"username": "u"},
        "c": {},
        "d": {},
        "e": {},
        "f": {"auth": "z"},
    }


# --- the wire -------------------------------------------------------------------------------------------


def messages(chunks: list[bytes]) -> list[dict]:
    out = []
    for chunk in chunks:
        assert chunk.endswith(b"\r\n")
        out.extend(json.loads(line) for line in chunk.split(b"\r\n") if line)
    return out


def test_build_streams_one_message_per_chunk(daemon, backend):
    chunks = raw_chunks(daemon.socket_path, "POST", "/v1.40/build?t=x:1&t=y", CONTEXT)
    assert all(c.count(b"\r\n") == 1 for c in chunks)  # every message flushed as its own chunk
    image_id = "sha256:" + hashlib.sha256(b"FROM scratch\nRUN echo hello\n").hexdigest()
    assert messages(chunks) == [
        {"stream": "Step 1/2 : FROM scratch"},
        {"stream": "\n"},
        {"stream": "Step 2/2 : RUN echo hello"},
        {"stream": "\n"},
        {"stream": "hello\n"},
        {"aux": {"ID": image_id}},
        {"stream": f"Successfully built {image_id[7:19]}\n"},
        {"stream": "Successfully tagged x:1\n"},
        {"stream": "Successfully tagged y\n"},
    ]
    assert backend.bodies[-1] == CONTEXT
    assert backend.configs[-1].options.tags == ["x:1", "y"]


def test_build_response_headers(daemon):
    status, headers, body = raw_request(daemon.socket_path, "POST", "/build", CONTEXT)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Api-Version"] == "1.40" and headers["Docker-Experimental"] == "false"
    assert b'"stream":"Step 1/2 : FROM scratch"' in body


def test_stream_bytes_are_go_json(daemon):
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN echo a > b && c < d\n"})
    _, _, body = raw_request(daemon.socket_path, "POST", "/build", context)
    assert b'{"stream":"Step 2/2 : RUN echo a \\u003e b \\u0026\\u0026 c \\u003c d"}\r\n' in body


def test_stderr_is_wrapped_in_bright_red(daemon):
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN warn oops\n"})
    _, _, body = raw_request(daemon.socket_path, "POST", "/build", context)
    assert b'{"stream":"\\u001b[91moops\\n\\u001b[0m"}\r\n' in body


def test_no_aux_for_clients_older_than_1_30(daemon):
    _, _, body = raw_request(daemon.socket_path, "POST", "/v1.29/build", CONTEXT)
    assert b'"aux"' not in body and b"Successfully built" in body
    _, _, body = raw_request(daemon.socket_path, "POST", "/v1.30/build", CONTEXT)
    assert b'{"aux":{"ID":"sha256:' in body


def test_error_before_output_is_an_http_error(daemon):
    context = tar_of({"Dockerfile": b"FROM scratch\nBOGUS x\n"})
    status, headers, body = raw_request(daemon.socket_path, "POST", "/build", context)
    assert (status, body) == (
        400,
        b'{"message":"dockerfile parse error line 2: unknown instruction: BOGUS"}\n',
    )
    assert headers["Content-Type"] == "application/json"
    status, _, body = raw_request(daemon.socket_path, "POST", "/build?q=1", context)
    assert status == 400  # quiet builds too


@pytest.mark.parametrize("body", [b"", tar_of({}), tar_of({"other": b"x"})])
def test_missing_dockerfile(daemon, body):
    status, _, text = raw_request(daemon.socket_path, "POST", "/build", body)
    assert (status, text) == (500, b'{"message":"Cannot locate specified Dockerfile: Dockerfile"}\n')


def test_error_after_output_is_the_last_message(daemon):
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN echo out\nRUN exit 3\n"})
    status, _, body = raw_request(daemon.socket_path, "POST", "/build", context)
    assert status == 200
    msg = "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    expected = '{"errorDetail":{"code":3,"message":"' + msg + '"},"error":"' + msg + '"}\r\n'
    assert body.endswith(expected.encode())
    assert b"Successfully built" not in body


def test_quiet_success_is_only_the_id(daemon):
    chunks = raw_chunks(daemon.socket_path, "POST", "/build?q=1", CONTEXT)
    assert len(chunks) == 1
    (msg,) = messages(chunks)
    assert msg["stream"].startswith("sha256:") and msg["stream"].endswith("\n") and len(msg["stream"]) == 72


def test_quiet_failure_sends_the_buffered_log_in_one_chunk_then_the_error(daemon):
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN echo out\nRUN exit 5\n"})
    chunks = raw_chunks(daemon.socket_path, "POST", "/build?q=1", context)
    assert len(chunks) == 2
    log = messages(chunks[:1])
    assert log[0] == {"stream": "Step 1/3 : FROM scratch"} and {"stream": "out\n"} in log
    assert messages(chunks[1:]) == [
        {
            "errorDetail": {
                "code": 5,
                "message": "The command '/bin/sh -c exit 5' returned a non-zero code: 5",
            },
            "error": "The command '/bin/sh -c exit 5' returned a non-zero code: 5",
        }
    ]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_bodies_reach_the_builder(daemon, backend, compress):
    body = compress(CONTEXT)
    status, _, text = raw_request(daemon.socket_path, "POST", "/build", body)
    assert status == 200 and b"Successfully built" in text
    assert backend.bodies[-1] == body and "hello.txt" in backend.files[-1]


def test_chunked_request_body(daemon, backend):
    def body():
        for i in range(0, len(CONTEXT), 700):
            yield CONTEXT[i : i + 700]

    conn = UnixHTTPConnection(daemon.socket_path)
    conn.request("POST", "/build", body=body(), encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    assert resp.status == 200 and b"Successfully built" in resp.read()
    conn.close()
    assert backend.bodies[-1] == CONTEXT


def test_non_archive_body(daemon):
    status, _, text = raw_request(daemon.socket_path, "POST", "/build", b"FROM scratch\n")
    assert (status, text) == (500, b'{"message":"unexpected EOF"}\n')


def test_spooled_body_is_removed_after_the_build(daemon):
    raw_request(daemon.socket_path, "POST", "/build", CONTEXT)
    assert list((daemon.data_root / "tmp").glob("build-context-*")) == []


def test_auth_header_reaches_the_backend(daemon, backend):
    header = b64url('{"reg:5000":{"username":"u","password":"p"}}')
    raw_request(daemon.socket_path, "POST", "/build", CONTEXT, {"X-Registry-Config": header})
    assert backend.configs[-1].options.auth_configs["reg:5000"].password == "p"
    raw_request(daemon.socket_path, "POST", "/build", CONTEXT, {"X-Registry-Config": "%%%"})
    assert backend.configs[-1].options.auth_configs == {}


def test_squash_needs_experimental(daemon, tmp_path):
    status, _, body = raw_request(daemon.socket_path, "POST", "/build?squash=1", CONTEXT)
    assert (status, body) == (400, b'{"message":"squash is only supported with experimental mode"}\n')
    with embedded_daemon(tmp_path, build_backend=RecordingBuildBackend(), experimental=True) as exp:
        status, headers, _ = raw_request(exp.socket_path, "POST", "/build?squash=1", CONTEXT)
        assert status == 200 and headers["Docker-Experimental"] == "true"


def test_invalid_option_is_an_http_error(daemon):
    status, _, body = raw_request(daemon.socket_path, "POST", "/build?buildargs=%5B1%5D", CONTEXT)
    assert status == 400
    assert body == (
        b'{"message":"error reading build args: json: cannot unmarshal array into Go value of type '
        b'map[string]*string"}\n'
    )


# --- cancellation ---------------------------------------------------------------------------------------


def start_sleeping_build(daemon, backend, query="") -> socket.socket:
    backend.started.clear()
    backend.interrupted.clear()
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN sleep\n"})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(daemon.socket_path)
    head = f"POST /build{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += f"Content-Length: {len(context)}\r\n\r\n"
    sock.sendall(head.encode() + context)
    assert backend.started.wait(30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_client_disconnect_cancels_the_build(daemon, backend):
    sock = start_sleeping_build(daemon, backend)
    sock.close()
    assert backend.interrupted.wait(30)


def test_build_cancel_ends_the_stream_with_context_canceled(daemon, backend):
    sock = start_sleeping_build(daemon, backend, "?version=2&buildid=job1")
    status, headers, body = raw_request(daemon.socket_path, "POST", "/build/cancel?id=job1")
    assert (status, body, headers["Content-Type"], headers["Content-Length"]) == (
        200,
        b"",
        "application/json",
        "0",
    )
    data = read_all(sock)
    sock.close()
    assert backend.interrupted.is_set() and backend.cancelled[-1] == "job1"
    assert b'{"errorDetail":{"message":"context canceled"},"error":"context canceled"}\r\n' in data


def test_build_cancel_needs_an_id_and_accepts_unknown_ones(daemon):
    assert raw_request(daemon.socket_path, "POST", "/build/cancel")[::2] == (
        500,
        b'{"message":"build ID not provided"}\n',
    )
    assert raw_request(daemon.socket_path, "POST", "/build/cancel?id=")[0] == 500
    assert raw_request(daemon.socket_path, "POST", "/build/cancel?id=nope")[::2] == (200, b"")


def test_stopping_the_daemon_cancels_running_builds(tmp_path):
    backend = RecordingBuildBackend()
    d = embedded_daemon(tmp_path, build_backend=backend)
    sock = start_sleeping_build(d, backend)
    d.stop()
    assert not d.running  # the serving thread has ended: the running build did not hold it up
    assert backend.interrupted.is_set()
    assert b"Step 1/2 : FROM scratch" in read_all(sock)  # then the daemon closed the connection
    sock.close()
    assert not os.path.exists(d.socket_path)


# --- /build/prune ---------------------------------------------------------------------------------------


def test_prune_reports_null_when_nothing_was_deleted(daemon, backend):
    status, headers, body = raw_request(daemon.socket_path, "POST", "/build/prune?all=1&keep-storage=100")
    assert (status, body) == (200, b'{"CachesDeleted":null,"SpaceReclaimed":0}\n')
    assert headers["Content-Type"] == "application/json"
    assert (backend.pruned[-1].all, backend.pruned[-1].keep_storage) == (True, 100)


def test_prune_filters_reach_the_backend(daemon, backend):
    raw_request(
        daemon.socket_path, "POST", "/build/prune?filters=" + urllib.parse.quote('{"id":{"abc":true}}')
    )
    assert backend.pruned[-1].filters == {"id": "abc"}
    raw_request(daemon.socket_path, "POST", "/build/prune?filters=" + urllib.parse.quote('{"until":["24h"]}'))
    assert backend.pruned[-1].filters == {"until": "24h"}


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ('filters={"bogus":["x"]}', 400, "failed to prune build cache: Invalid filter 'bogus'"),
        ('filters={"id":["a","b"]}', 400, "failed to prune build cache: filters expect only one value"),
        ("filters=notjson", 500, "could not parse filters: invalid character 'o' in literal null "
         "(expecting 'u')"),
        ("keep-storage=abc", 500, "keep-storage is in bytes and expects an integer, got abc: "
         'strconv.Atoi: parsing "abc": invalid syntax'),
    ],
)  # fmt: skip
def test_prune_errors(daemon, query, status, message):
    got = raw_request(daemon.socket_path, "POST", "/build/prune?" + urllib.parse.quote(query, safe="="))
    assert (got[0], json.loads(got[2])["message"]) == (status, message)


def test_parse_filters_both_forms():
    assert parse_filters('{"id":{"a":true}}') == {"id": ["a"]}
    assert parse_filters('{"id":["a"]}') == {"id": ["a"]}
    assert parse_filters("") == {}
