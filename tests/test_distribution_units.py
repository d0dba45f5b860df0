"""Unit tests of the registry client's pieces that need no registry: credentials and their lookup, the
config file, challenges, endpoints, manifests and platforms, error wording, and the test bcrypt."""

import asyncio
import base64
import json
import os
import stat
import warnings

import bcrypt_pure
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild import errdefs
from minibuild.distribution import (
    INDEX_SERVER,
    AuthConfig,
    ConfigFile,
    ConfigFileError,
    InvalidManifestError,
    Platform,
    decode_auth_config,
    decode_auth_configs,
    encode_auth_config,
    pull_reference,
    resolve_auth_config,
)
from minibuild.distribution.auth import ChallengeManager, RepositoryScope, parse_challenge
from minibuild.distribution.client import Descriptor, _rechunk
from minibuild.distribution.config import (
    ServiceConfig,
    is_secure_index,
    new_index_info,
    proxy_for,
    split_host_port,
)
from minibuild.distribution.errors import (
    ErrcodeError,
    ErrcodeErrors,
    ErrorCode,
    NoBasicAuthCredentials,
    NoToken,
    URLError,
    handle_error_response,
    transfer_error,
    translate_pull_error,
)
from minibuild.distribution.manifest import (
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_MANIFEST,
    Manifest,
    ManifestList,
    PlatformManifest,
    build_manifest_list,
    build_schema2_manifest,
    check_config_media_type,
    check_layer_media_type,
    parse_manifest,
)
from minibuild.distribution.metadata import V2Metadata, V2MetadataService
from minibuild.distribution.registry import lookup_pull_endpoints, lookup_push_endpoints

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64


# --- X-Registry-Auth / X-Registry-Config ------------------------------------------------------------------


@settings(deadline=None)  # no timing assertions on a loaded machine
@given(st.builds(AuthConfig, username=st.text(), password=st.text(), serveraddress=st.text()))
def test_auth_config_header_round_trip(auth):
    assert decode_auth_config(encode_auth_config(auth)) == auth


def test_auth_config_header_is_the_docker_clis_bytes():
    """json.Marshal: compact, struct field order, empty fields omitted, `<>&` escaped; then base64url."""
    header = encode_auth_config(AuthConfig(username="u", password="p<&>", serveraddress="r:5000"))
    assert base64.urlsafe_b64decode(header) == (
        b'{"username":"u","password":"p\\u003c\\u0026\\u003e","serveraddress":"r:5000"}'
    )


@pytest.mark.parametrize(
    "header", ["", "!!!", base64.urlsafe_b64encode(b"not json").decode(), "W10=", "bnVsbA=="]
)
def test_undecodable_auth_header_means_anonymous(header):
    assert decode_auth_config(header) == AuthConfig()
    assert decode_auth_configs(header) == {}


def test_x_registry_config_as_the_clients_send_it():
    cli = base64.b64encode(
        b'{"localhost:5000":{"username":"u","password":"p","serveraddress":"localhost:5000"}}'
    ).decode()
    docker_py = base64.urlsafe_b64encode(
        b'{"localhost:5000": {"username": "u", "password": "p", "email": null, '
        b'"serveraddress": "localhost:5000"}}'
    ).decode()
    expected = {"localhost:5000": AuthConfig(username="u", password="p", serveraddress="localhost:5000")}
    assert decode_auth_configs(cli) == expected
    assert decode_auth_configs(docker_py) == expected
    assert decode_auth_configs("e30=") == {}


def test_resolve_auth_config_follows_dockers_rules():
    hub = AuthConfig(username="hub")
    local = AuthConfig(username="local")
    legacy = AuthConfig(username="legacy")
    config = ServiceConfig()
    configs = {INDEX_SERVER: hub, "localhost:5000": local, "https://registry.example.com/v1/": legacy}
    assert resolve_auth_config(configs, new_index_info(config, "docker.io")) == hub
    assert resolve_auth_config(configs, new_index_info(config, "index.docker.io")) == hub
    assert resolve_auth_config(configs, new_index_info(config, "localhost:5000")) == local
    assert resolve_auth_config(configs, new_index_info(config, "registry.example.com")) == legacy
    assert resolve_auth_config(configs, new_index_info(config, "other:5000")) == AuthConfig()
    # Docker Hub is looked up under its key only: a "docker.io" key does not count.
    assert resolve_auth_config({"docker.io": hub}, new_index_info(config, "docker.io")) == AuthConfig()


# --- ~/.docker/config.json --------------------------------------------------------------------------------


def test_config_file_round_trip_keeps_other_keys(tmp_path):
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {}, "currentContext": "default", "psFormat": "{{.ID}}"}))
    config = ConfigFile.load(path)
    config.store(AuthConfig(username="me", password="pa:ss", serveraddress="localhost:5000"))
    config.store(AuthConfig(username="hub", password="x", serveraddress=INDEX_SERVER, identitytoken="tok"))
    raw = json.loads(path.read_text())
    assert raw["auths"]["localhost:5000"] == {"auth": base64.b64encode(b"me:pa:ss").decode()}
    assert raw["auths"][INDEX_SERVER]["identitytoken"] == "tok"
    assert raw["currentContext"] == "default" and raw["psFormat"] == "{{.ID}}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith('{\n\t"auths"')  # tab indented, as the docker CLI writes it
    again = ConfigFile.load(path)
    assert again.get_auth_config("localhost:5000") == AuthConfig(
        username="me", password="pa:ss", serveraddress="localhost:5000"
    )
    again.erase("localhost:5000")
    assert ConfigFile.load(path).get_auth_config("localhost:5000") == AuthConfig()


def test_config_file_legacy_url_keys_and_docker_config_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"user:secret").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"http://registry.local:5000/v1/": {"auth": auth}}})
    )
    config = ConfigFile.load()
    assert config.get_auth_config("registry.local:5000").password == "secret"
    assert set(config.get_all_credentials()) == {"http://registry.local:5000/v1/"}


def test_missing_or_empty_config_file_is_empty(tmp_path):
    assert ConfigFile.load(tmp_path / "absent.json").auths == {}
    (tmp_path / "empty.json").write_text("")
    assert ConfigFile.load(tmp_path / "empty.json").auths == {}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"auths": []}',
        '{"auths": {"x": {"auth": "%%%"}}}',
        '{"auths": {"x": {"auth": "bm9jb2xvbg=="}}}',
    ],
)
def test_malformed_config_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigFileError) as err:
        ConfigFile.load(path)
    assert str(path) in str(err.value)
    assert err.value.status_code == 400


# --- challenges -------------------------------------------------------------------------------------------


def test_bearer_challenge():
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.parameters == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }


def test_basic_challenge_and_odd_spacing():
    assert parse_challenge('Basic realm="basic-realm"').parameters == {"realm": "basic-realm"}
    assert parse_challenge('BEARER  Realm = "x"').parameters == {}  # no space allowed before '='
    assert parse_challenge('Bearer realm="x",  Error="insufficient_scope"').parameters == {
        "realm": "x",
        "error": "insufficient_scope",
    }
    assert parse_challenge("") is None


_TOKEN_CHARS = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~"), min_size=1
)


@settings(deadline=None)
@given(
    st.dictionaries(
        _TOKEN_CHARS, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1)
    )
)
def test_quoted_parameters_round_trip(params):
    header = "Bearer " + ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    assert parse_challenge(header).parameters == {k.lower(): v for k, v in params.items()}


def test_challenge_manager_keys_by_endpoint():
    manager = ChallengeManager()
    manager.add_response("http://Registry.local/v2/", 401, ['Basic realm="r"'])
    assert manager.get_challenges("http://registry.local:80/v2/x/manifests/latest")[0].scheme == "basic"
    assert manager.get_challenges("https://registry.local/v2/x") == []
    manager.add_response("https://hub/v2/", 200, ['Basic realm="r"'])
    assert manager.get_challenges("https://hub/v2/x") == []  # only a 401 carries challenges


def test_repository_scope():
    assert str(RepositoryScope("library/busybox", ("pull",))) == "repository:library/busybox:pull"
    assert str(RepositoryScope("x/y", ("push", "pull"), "plugin")) == "repository(plugin):x/y:push,pull"


# --- secure registries and endpoints ----------------------------------------------------------------------


def test_loopback_and_listed_registries_are_insecure():
    config = ServiceConfig(insecure_registries=["registry.internal:5000", "10.1.0.0/16"])
    assert not is_secure_index(config, "127.0.0.1:5000")
    assert not is_secure_index(config, "localhost:5000")
    assert not is_secure_index(config, "registry.internal:5000")
    assert not is_secure_index(config, "10.1.2.3")
    assert is_secure_index(config, "10.2.0.1:5000")
    assert is_secure_index(config, "registry.internal:5001")
    assert is_secure_index(ServiceConfig(), "no-such-host.invalid")


def test_split_host_port_falls_back_to_the_whole_value_as_go_callers_do():
    assert split_host_port("[::1]:5000") == ("::1", "5000")
    assert split_host_port("registry.local:5000") == ("registry.local", "5000")
    for no_port in ("registry.local", "::1", "[::1]", "[a]:b:c", "a]b:5"):  # SplitHostPort's errors
        assert split_host_port(no_port) == (no_port, "")
    v6_loopback = ServiceConfig(insecure_registries=["::1/128"])  # dockerd 20.10 lists only 127.0.0.0/8
    assert not is_secure_index(v6_loopback, "[::1]:5000")
    assert is_secure_index(v6_loopback, "[::1]")  # no port: Go looks up "[::1]" as a name and finds none


def test_an_insecure_bare_ip_is_an_index_name_not_a_network():
    """registry/config.go: only a CIDR is a network; `10.9.8.7` names one index, not `10.9.8.7:5000`."""
    config = ServiceConfig(insecure_registries=["10.9.8.7", "10.9.9.0/24", "10.9.10.1/32"])
    assert not is_secure_index(config, "10.9.8.7")
    assert is_secure_index(config, "10.9.8.7:5000")
    assert not is_secure_index(config, "10.9.9.200:5000") and not is_secure_index(config, "10.9.10.1:443")
    assert config.insecure_names == {"10.9.8.7"}


def test_endpoints():
    config = ServiceConfig(mirrors=["mirror.local:5000"])
    hub = lookup_pull_endpoints(config, "docker.io")
    assert [e.url for e in hub] == ["https://mirror.local:5000", "https://registry-1.docker.io"]
    assert hub[1].official and hub[0].mirror
    assert [e.url for e in lookup_push_endpoints(config, "docker.io")] == ["https://registry-1.docker.io"]
    local = lookup_pull_endpoints(config, "localhost:5000")
    assert [(e.url, e.tls_verify) for e in local] == [
        ("https://localhost:5000", False),
        ("http://localhost:5000", False),
    ]
    assert [e.url for e in lookup_pull_endpoints(config, "8.8.8.8:443")] == ["https://8.8.8.8:443"]


# --- manifests and platforms ------------------------------------------------------------------------------


def test_schema2_manifest_bytes_are_gos_marshal_indent():
    manifest = build_schema2_manifest(
        Descriptor("application/vnd.docker.container.image.v1+json", D1, 1234),
        [Descriptor(MEDIA_TYPE_LAYER, D2, 56)],
    )
    assert manifest.decode() == (
        "{\n"
        '   "schemaVersion": 2,\n'
        '   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
        '   "config": {\n'
        '      "mediaType": "application/vnd.docker.container.image.v1+json",\n'
        '      "size": 1234,\n'
        f'      "digest": "{D1}"\n'
        "   },\n"
        '   "layers": [\n'
        "      {\n"
        '         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",\n'
        '         "size": 56,\n'
        f'         "digest": "{D2}"\n'
        "      }\n"
        "   ]\n"
        "}"
    )
    parsed = parse_manifest(MEDIA_TYPE_MANIFEST, manifest)
    assert isinstance(parsed, Manifest) and parsed.config.digest == D1 and parsed.layers[0].size == 56


def test_manifest_list_round_trip_and_platform_choice():
    entries = [
        PlatformManifest(Descriptor(MEDIA_TYPE_MANIFEST, D1, 10), Platform("linux", "amd64")),
        PlatformManifest(Descriptor(MEDIA_TYPE_MANIFEST, D2, 10), Platform("linux", "arm", "v6")),
        PlatformManifest(Descriptor(MEDIA_TYPE_MANIFEST, D3, 10), Platform("linux", "arm64", "v8")),
    ]
    parsed = parse_manifest(
        "application/vnd.docker.distribution.manifest.list.v2+json", build_manifest_list(entries)
    )
    assert isinstance(parsed, ManifestList)

    def best(platform):
        matches = parsed.filter(platform)
        return matches[0].descriptor.digest if matches else None

    assert best(Platform("linux", "x86_64")) == D1
    assert best(Platform("linux", "aarch64")) == D3
    assert best(Platform("linux", "arm64", "v8")) == D3
    assert best(Platform("linux", "arm", "v7")) == D2  # v7 also runs v6 images
    assert best(Platform("linux", "arm", "v5")) is None
    assert best(Platform("windows", "amd64")) is None
    without_arm64 = ManifestList(parsed.media_type, entries[:2], b"")
    assert without_arm64.filter(Platform("linux", "arm64"))[0].descriptor.digest == D2  # arm64 runs arm


def test_one_platform_type_normalized_as_containerd_does(monkeypatch):
    from minibuild.api import platforms

    assert Platform is platforms.Platform  # what the API parses is what manifest lists are matched with
    assert Platform("LINUX", "armhf").normalize() == Platform("linux", "arm", "v7")
    assert Platform("macos", "x86_64", "v1").normalize() == Platform("darwin", "amd64")
    assert Platform("linux", "aarch64", "8").normalize() == Platform("linux", "arm64")
    for machine, goarch in [("x86_64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm"), ("i686", "386"),
                            ("ppc64le", "ppc64le"), ("s390x", "s390x")]:  # fmt: skip
        monkeypatch.setattr(platforms._host, "machine", lambda m=machine: m)
        assert platforms.host_arch() == goarch


def test_oci_index_without_content_type():
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "x",
                    "digest": D1,
                    "size": 3,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    parsed = parse_manifest("", index)
    assert isinstance(parsed, ManifestList) and parsed.manifests[0].platform == Platform("linux", "amd64")


@pytest.mark.parametrize(
    ("media_type", "body", "message"),
    [
        ("application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}", "schema 1 is not implemented"),
        ("", b'{"schemaVersion": 1}', "schema 1 is not implemented"),
        (MEDIA_TYPE_MANIFEST, b"[]", "not a JSON object"),
        (MEDIA_TYPE_MANIFEST, b"{", "invalid manifest"),
        (
            MEDIA_TYPE_MANIFEST,
            b'{"schemaVersion": 2, "config": {"digest": "sha256:zz", "size": 1}, "layers": []}',
            "invalid digest",
        ),
        (
            MEDIA_TYPE_MANIFEST,
            json.dumps({"schemaVersion": 2, "config": {"digest": D1, "size": -1}, "layers": []}).encode(),
            "invalid size",
        ),
        ("text/html", b"{}", "unsupported manifest media type"),
    ],
)
def test_bad_manifests_are_refused(media_type, body, message):
    with pytest.raises(InvalidManifestError, match=message):
        parse_manifest(media_type, body)


def test_non_image_artifacts_and_zstd_layers_are_refused():
    check_config_media_type("application/vnd.oci.image.config.v1+json")
    with pytest.raises(
        InvalidManifestError,
        match=r'^Encountered remote "application/vnd.docker.plugin.v1\+json"\(plugin\) when fetching$',
    ):
        check_config_media_type("application/vnd.docker.plugin.v1+json")
    check_layer_media_type("application/vnd.oci.image.layer.v1.tar+gzip")
    with pytest.raises(InvalidManifestError, match="unsupported media type"):
        check_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd")


# --- error wording ----------------------------------------------------------------------------------------


def _errors(*entries):
    return json.dumps({"errors": list(entries)}).encode()


def test_registry_errors_keep_gos_bare_code_distinction():
    bare = handle_error_response(
        401,
        "Unauthorized",
        [],
        _errors({"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}),
    )
    assert str(bare) == "unauthorized" and isinstance(bare.errors[0], ErrorCode)
    full = handle_error_response(
        404,
        "Not Found",
        [],
        _errors({"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "x"}}),
    )
    assert str(full) == "manifest unknown: manifest unknown" and isinstance(full.errors[0], ErrcodeError)
    hub = handle_error_response(401, "Unauthorized", [], b'{"details":"incorrect username or password"}')
    assert str(hub) == "unauthorized: incorrect username or password"
    unparsable = handle_error_response(401, "Unauthorized", [], b"<html>")
    assert str(unparsable) == "unauthorized: authentication required"
    assert str(handle_error_response(400, "Bad Request", [], b"")).startswith(
        "error parsing HTTP 400 response body"
    )
    assert (
        str(handle_error_response(502, "Bad Gateway", [], b""))
        == "received unexpected HTTP status: 502 Bad Gateway"
    )
    several = handle_error_response(
        400,
        "",
        [],
        _errors(
            {"code": "DIGEST_INVALID", "message": "a", "detail": 1},
            {"code": "NOPE", "message": "b", "detail": 2},
        ),
    )
    assert str(several) == "errors:\ndigest invalid: a\nunknown: b\n"


def test_insufficient_scope_becomes_denied():
    challenge = parse_challenge(
        'Bearer realm="r",service="s",scope="repository:x:pull",error="insufficient_scope"'
    )
    err = handle_error_response(
        401,
        "Unauthorized",
        [challenge],
        _errors({"code": "UNAUTHORIZED", "message": "authentication required", "detail": [{"Name": "x"}]}),
    )
    assert isinstance(err, ErrcodeErrors)
    assert str(err) == (
        "errors:\ndenied: requested access to the resource is denied\nunauthorized: authentication required\n"
    )


def test_translate_pull_error():
    denied = ErrcodeErrors([ErrcodeError("DENIED")])
    translated = translate_pull_error(denied, "foo/bar", "foo/bar:latest")
    assert isinstance(translated, errdefs.NotFound)
    assert str(translated) == (
        "pull access denied for foo/bar, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied"
    )
    name_unknown = translate_pull_error(
        ErrcodeError("NAME_UNKNOWN", "repository name not known to registry", {}), "x", "x:1"
    )
    assert str(name_unknown) == "repository x not found: name unknown: repository name not known to registry"
    bare = translate_pull_error(ErrcodeErrors([ErrorCode("MANIFEST_UNKNOWN")]), "x", "x:1")
    assert str(bare) == "manifest unknown" and not isinstance(
        bare, errdefs.NotFound
    )  # Go's bare codes stay Unknown
    url_error = translate_pull_error(URLError("HEAD", "http://h/v2/", "boom"), "x", "x:1")
    assert str(url_error) == 'Head "http://h/v2/": boom' and url_error.status_code == 500


def test_a_transfer_reports_missing_credentials_without_the_url():
    for cause in (NoBasicAuthCredentials(), NoToken()):
        assert transfer_error(URLError("POST", "http://h/v2/x/blobs/uploads/", cause)) is cause
    other = URLError("HEAD", "http://h/v2/x/blobs/sha256:a", "boom")
    assert transfer_error(other) is other
    denied = ErrcodeErrors([ErrcodeError("DENIED")])
    assert transfer_error(denied) is denied.errors[0]  # retryOnError keeps the first error


# --- metadata ---------------------------------------------------------------------------------------------


def test_v2_metadata_service(tmp_path):
    service = V2MetadataService(tmp_path)
    service.add(D1, V2Metadata(D2, "127.0.0.1:5000/a"))
    service.add(D1, V2Metadata(D3, "127.0.0.1:5000/b"))
    service.add(D1, V2Metadata(D2, "127.0.0.1:5000/a"))  # no duplicate
    assert service.get_metadata(D1) == [
        V2Metadata(D3, "127.0.0.1:5000/b"),
        V2Metadata(D2, "127.0.0.1:5000/a"),
    ]
    assert service.get_diff_id(D2) == D1
    service.remove(D1, V2Metadata(D3, "127.0.0.1:5000/b"))
    assert service.get_metadata(D1) == [V2Metadata(D2, "127.0.0.1:5000/a")]
    assert service.get_diff_id("sha256:../../etc") is None
    with pytest.raises(ValueError):
        service.add("sha256:x", V2Metadata(D2, "r"))


# --- chunked uploads regroup the stream -------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=40))
def test_rechunk_preserves_bytes_and_piece_sizes(pieces, size):
    async def collect():
        async def source():
            for piece in pieces:
                yield piece

        return [chunk async for chunk in _rechunk(source(), size)]

    chunks = asyncio.run(collect())
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(c) == size for c in chunks[:-1]) and all(0 < len(c) <= size for c in chunks)


# --- the tests' bcrypt ------------------------------------------------------------------------------------


def test_bcrypt_known_vector():
    # From OpenBSD's and John the Ripper's bcrypt test vectors.
    assert bcrypt_pure.checkpw("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
    assert not bcrypt_pure.checkpw("U*V", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")


def test_bcrypt_agrees_with_the_system_crypt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")  # libxcrypt implements bcrypt; gone from Python 3.13
    hashed = bcrypt_pure.hashpw("s3cret pässword", cost=4, salt=os.urandom(16))
    if crypt.crypt("probe", "$2b$04$" + "a" * 22) is None:
        pytest.skip("this system's crypt(3) has no bcrypt")
    assert crypt.crypt("s3cret pässword", hashed) == hashed


def test_proxies_come_from_the_environment_as_go_reads_them(monkeypatch):
    for name in ("https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3129")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert proxy_for("https://registry-1.docker.io/v2/") == "http://proxy.example:3128"
    assert proxy_for("http://registry.example/v2/") == "http://proxy.example:3129"
    assert proxy_for("http://127.0.0.1:5000/v2/") is None
    assert proxy_for("http://localhost:5000/v2/") is None
    assert proxy_for("https://internal.example/v2/") is None


def test_pull_reference_mirrors_the_images_create_parameters():
    assert str(pull_reference("busybox", "latest")) == "docker.io/library/busybox:latest"
    assert str(pull_reference("busybox")) == "docker.io/library/busybox"  # every tag (docker pull -a)
    assert str(pull_reference("localhost:5000/app:", "")) == "localhost:5000/app"
    assert str(pull_reference("app", D1)) == f"docker.io/library/app@{D1}"
    with pytest.raises(
        errdefs.InvalidParameter, match="invalid reference format: repository name must be lowercase"
    ):
        pull_reference("BusyBox", "latest")
    with pytest.raises(errdefs.InvalidParameter, match="invalid tag format"):
        pull_reference("busybox", "bad tag")
    # a tag that does not parse as a digest is taken as a tag, so a malformed digest is a bad tag (as dockerd)
    for bad in ("sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "a:b"):
        with pytest.raises(errdefs.InvalidParameter, match="^invalid tag format$"):
            pull_reference("busybox", bad)
    # a tag replaces the name's tag and keeps its digest (reference.WithTag); a digest replaces both
    assert str(pull_reference("app:v1", "v2")) == "docker.io/library/app:v2"
    assert str(pull_reference(f"app@{D1}", "v2")) == f"docker.io/library/app:v2@{D1}"
    assert str(pull_reference(f"app:v1@{D1}", D2)) == f"docker.io/library/app@{D2}"


def test_progress_records_render_like_the_daemons_stream_writer():
    """The API's JSON progress writer takes our records as they are; MessageCollector gives the same dicts."""
    from minibuild import gojson
    from minibuild.api.streamformatter import BufferSink, JSONProgressOutput
    from minibuild.distribution import MessageCollector, progress

    sink = BufferSink()
    writer = JSONProgressOutput(sink)
    collector = MessageCollector()
    for out in (writer, collector):
        progress.message(out, "latest", "Pulling from library/busybox")
        progress.update(out, "a3ed95caeb02", "Pulling fs layer")
        progress.transfer(out, "a3ed95caeb02", "Downloading", 32768, 2_800_000)
        progress.aux(out, {"Tag": "v1", "Digest": D1, "Size": 527})
    assert sink.getvalue() == b"".join(gojson.dumpb(m) + b"\r\n" for m in collector.messages)
    assert collector.messages[:3] == [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "a3ed95caeb02"},
        {
            "status": "Downloading",
            "progressDetail": {"current": 32768, "total": 2800000},
            "progress": "[>                                                  ]  32.77kB/2.8MB",
            "id": "a3ed95caeb02",
        },
    ]
