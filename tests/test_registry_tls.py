"""Per-registry TLS as dockerd's certs.d (moby registry/registry.go newTLSConfig, ReadCertsDirectory).

The test registry serves https with a certificate from a CA made here (openssl), on a non-loopback
address of this machine: dockerd treats loopback registries as insecure and never verifies their
certificates, so only such an address shows the verification. Without the CA in
`<certs dir>/<host:port>/*.crt` the pull fails with Go's certificate error; with it, it succeeds; a
registry requiring a client certificate gets the `*.cert`/`*.key` pair found there.
"""

import asyncio
import shutil
from pathlib import Path

import pytest
from registry_fixture import TLSFiles, make_image, non_loopback_address, run_registry

from minibuild import errdefs
from minibuild.api.daemon import DaemonConfig, load_registry_config
from minibuild.distribution import RegistryService, ServiceConfig
from minibuild.distribution.errors import DistributionError
from minibuild.distribution.images import pull_image, push_image
from minibuild.distribution.registry import lookup_pull_endpoints
from minibuild.image.reference import parse_normalized_named
from minibuild.image.service import ImageService

ADDRESS = non_loopback_address()
needs_tls_setup = pytest.mark.skipif(
    ADDRESS is None or shutil.which("openssl") is None,
    reason="needs a non-loopback IPv4 address and the openssl command",
)
LAYER = {"etc/hello": b"over TLS\n"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if ADDRESS is None or shutil.which("openssl") is None:
        pytest.skip("needs a non-loopback IPv4 address and the openssl command")
    return TLSFiles.create(tmp_path_factory.mktemp("tls"), ADDRESS)


def service(root, certs_dir):
    return RegistryService(root / "distribution", ServiceConfig(certs_dir=certs_dir))


def push_and_pull(registry, tls_files, tmp_path, certs_dir):
    """Push an image with the CA trusted (certs.d of the source), then pull it with `certs_dir`."""
    source_certs = tmp_path / "source-certs.d"
    host_dir = source_certs / registry.host
    host_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tls_files.ca, host_dir / "ca.crt")
    shutil.copy(tls_files.client_cert, host_dir / "client.cert")
    shutil.copy(tls_files.client_key, host_dir / "client.key")
    src = ImageService(tmp_path / "src")
    image_id = make_image(src, [LAYER])
    name = f"{registry.host}/tls/app:v1"
    src.add_reference(parse_normalized_named(name), image_id)
    asyncio.run(push_image(service(tmp_path / "src", source_certs), src, name))
    dst = ImageService(tmp_path / "dst")
    try:
        return image_id, asyncio.run(pull_image(service(tmp_path / "dst", certs_dir), dst, name))
    except errdefs.DockerError as err:
        return image_id, err


@needs_tls_setup
def test_the_ca_in_certs_d_makes_the_registry_trusted(tls_files, tmp_path):
    with run_registry(address=ADDRESS, tls=tls_files) as registry:
        certs = tmp_path / "certs.d"
        _, err = push_and_pull(registry, tls_files, tmp_path, certs)
        assert isinstance(err, DistributionError)
        assert str(err) == (
            f'Get "https://{registry.host}/v2/": tls: failed to verify certificate: '
            "x509: certificate signed by unknown authority"
        )

        (certs / registry.host).mkdir(parents=True)
        shutil.copy(tls_files.ca, certs / registry.host / "registry-ca.crt")
        image_id, pulled = push_and_pull(registry, tls_files, tmp_path, certs)
        assert pulled == image_id


@needs_tls_setup
def test_a_registry_requiring_a_client_certificate_gets_the_pair(tls_files, tmp_path):
    with run_registry(address=ADDRESS, tls=tls_files, client_certs=True) as registry:
        certs = tmp_path / "certs.d"
        host_dir = certs / registry.host
        host_dir.mkdir(parents=True)
        shutil.copy(tls_files.ca, host_dir / "ca.crt")
        _, err = push_and_pull(registry, tls_files, tmp_path, certs)
        assert isinstance(err, DistributionError)
        assert str(err).startswith(f'Get "https://{registry.host}/v2/": ')
        assert "tls: certificate required" in str(err) or "tls: bad certificate" in str(err)

        shutil.copy(tls_files.client_cert, host_dir / "me.cert")
        shutil.copy(tls_files.client_key, host_dir / "me.key")
        image_id, pulled = push_and_pull(registry, tls_files, tmp_path, certs)
        assert pulled == image_id


def test_an_unpaired_cert_or_key_is_refused_in_dockerds_words(tmp_path, tls_files):
    config = ServiceConfig(certs_dir=tmp_path, insecure_registries=[])
    host = "registry.example:5000"
    host_dir = tmp_path / host
    host_dir.mkdir()
    shutil.copy(tls_files.client_cert, host_dir / "client.cert")
    with pytest.raises(errdefs.InvalidParameter) as err:
        lookup_pull_endpoints(config, host)
    assert str(err.value) == (
        "missing key client.key for client certificate client.cert. "
        "CA certificates must use the extension .crt"
    )
    (host_dir / "client.cert").rename(host_dir / "client.key")
    with pytest.raises(errdefs.InvalidParameter) as err:
        lookup_pull_endpoints(config, host)
    assert str(err.value) == "missing client certificate client.cert for key client.key"


def test_certs_d_is_read_only_for_secure_registries(tmp_path, tls_files):
    config = ServiceConfig(certs_dir=tmp_path, insecure_registries=["registry.example:5000"])
    (tmp_path / "registry.example:5000").mkdir()
    (tmp_path / "registry.example:5000" / "lonely.key").write_text("unused")
    insecure = lookup_pull_endpoints(config, "registry.example:5000")  # not read: no error
    assert [(e.url, e.ssl) for e in insecure] == [
        ("https://registry.example:5000", False),
        ("http://registry.example:5000", False),
    ]
    (tmp_path / "secure.example").mkdir()
    shutil.copy(tls_files.ca, tmp_path / "secure.example" / "ca.crt")
    [secure] = lookup_pull_endpoints(config, "secure.example")
    assert secure.url == "https://secure.example" and secure.tls_config is not None
    [plain] = lookup_pull_endpoints(config, "other.example")  # nothing in certs.d: the defaults
    assert plain.ssl is True


def test_the_daemon_reads_certs_d_from_its_flag(tmp_path):
    assert load_registry_config(DaemonConfig()).certs_dir == Path("/etc/docker/certs.d")
    assert load_registry_config(DaemonConfig(registry_certs_dir=tmp_path)).certs_dir == tmp_path
