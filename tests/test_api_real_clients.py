"""Real clients against the daemon: docker-py 7.2.0 and the docker CLI (28.2.2, classic builder).

docker-py builds for real (`APIClient.build`, `DockerClient.images.build`) on a daemon with the real
builders and the offline busybox image, then lists and inspects what it built. The other tests look
at the wire: their builds go to the test double (api_doubles.RecordingBuildBackend, which runs
nothing, so what a client sent can be read back); their images are real (imported through the API).
"""

import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import api_doubles
import docker
import pytest
from api_doubles import tar_of

from minibuild.api.daemon import embedded_daemon
from minibuild.client import APIClient
from minibuild.image.busybox import create_busybox_image

ROOTFS = tar_of({"bin/x": b"hello", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
DOCKER = shutil.which("docker")
needs_docker_cli = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
runs_steps = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here")
backend = api_doubles.backend  # the fixture, imported explicitly


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, backend):
    with embedded_daemon(tmp_path_factory.mktemp("root"), build_backend=backend) as d:
        with APIClient(d.host) as client, client.image_import(ROOTFS, "mbref-img:v1") as resp:
            (status,) = list(resp.messages())
        backend.result_id = status["status"]
        yield d


# --- docker-py -----------------------------------------------------------------------------------------


@pytest.fixture
def dpy(daemon):
    client = docker.APIClient(base_url=daemon.host)
    yield client
    client.close()


def test_docker_py_negotiates_from_version(dpy):
    assert dpy.version()["ApiVersion"] == "1.40"
    assert dpy.api_version == "1.40"
    assert dpy.info()["OSType"] == "linux"


def test_what_docker_py_sends_with_a_build(dpy, backend):
    context = tar_of({"Dockerfile": b"FROM scratch\nRUN echo from-dpy\n"})
    out = list(
        dpy.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag="mbref-dpy:api",
            decode=True,
            buildargs={"A": "1"},
        )
    )
    assert {"stream": "from-dpy\n"} in out and out[-1] == {"stream": "Successfully tagged mbref-dpy:api\n"}
    options = backend.configs[-1].options
    # docker-py always sends q, nocache, rm, forcerm, pull as Python booleans; rm=False is its default.
    assert (options.remove, options.suppress_output, options.build_args) == (False, False, {"A": "1"})
    assert backend.bodies[-1] == context


# --- docker-py builds for real ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_daemon(tmp_path_factory):
    """A daemon with the real builders, its store holding the offline busybox image."""
    with embedded_daemon(tmp_path_factory.mktemp("real")) as d:
        create_busybox_image(d.daemon.image_service, "busybox:latest", source_date_epoch=0)
        yield d


def file_in_saved_image(archive: bytes, path: str) -> bytes | None:
    """`path` as the top-most layer of a `docker save` archive that has it holds it."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        (manifest,) = json.load(outer.extractfile("manifest.json"))
        for layer in reversed(manifest["Layers"]):
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                if path in inner.getnames():
                    return inner.extractfile(path).read()
    return None


@pytest.mark.root
@runs_steps
def test_docker_py_low_level_build_runs_then_lists_and_inspects(real_daemon):
    dpy = docker.APIClient(base_url=real_daemon.host)
    try:
        dockerfile = b'FROM busybox:latest\nARG A\nRUN echo "from-dpy $A" > /f && cat /f\nLABEL via=api\n'
        out = list(
            dpy.build(
                fileobj=io.BytesIO(tar_of({"Dockerfile": dockerfile})),
                custom_context=True,
                tag="mbref-dpy:api",
                decode=True,
                buildargs={"A": "1"},
            )
        )
        assert not [m for m in out if "error" in m], out
        text = "".join(m.get("stream", "") for m in out)
        assert "from-dpy 1\n" in text  # the RUN step ran, its output streamed back
        assert out[-1] == {"stream": "Successfully tagged mbref-dpy:api\n"}
        short_id = re.search(r"Successfully built ([0-9a-f]{12})\n", text).group(1)

        (listed,) = [i for i in dpy.images() if "mbref-dpy:api" in (i["RepoTags"] or [])]
        assert listed["Id"].startswith("sha256:" + short_id)
        inspected = dpy.inspect_image(short_id)  # a short id resolves, as docker-py relies on
        busybox = dpy.inspect_image("busybox:latest")
        assert inspected["Id"] == listed["Id"] and inspected["RepoTags"] == ["mbref-dpy:api"]
        assert inspected["Config"]["Labels"] == {"via": "api"} and inspected["Config"]["Cmd"] == ["sh"]
        assert inspected["RootFS"]["Layers"][:-1] == busybox["RootFS"]["Layers"]  # one layer more: RUN's
        archive = b"".join(dpy.get_image("mbref-dpy:api"))
        assert file_in_saved_image(archive, "f") == b"from-dpy 1\n"
    finally:
        dpy.close()


@pytest.mark.root
@runs_steps
def test_docker_py_high_level_build_runs_then_lists_and_inspects(real_daemon):
    client = docker.DockerClient(base_url=real_daemon.host)
    try:
        context = tar_of({"Dockerfile": b'FROM busybox:latest\nRUN echo hl > /hl\nCMD ["cat", "/hl"]\n'})
        image, logs = client.images.build(
            fileobj=io.BytesIO(context), custom_context=True, tag="mbref-dpy:hl"
        )  # it finds the image by the short id of "Successfully built"
        assert any("Successfully built" in entry.get("stream", "") for entry in logs)
        assert image.tags == ["mbref-dpy:hl"] and image.attrs["Config"]["Cmd"] == ["cat", "/hl"]
        assert image.id in [i.id for i in client.images.list()]
        assert client.images.get("mbref-dpy:hl").id == image.id
        assert image.history()[0]["Id"] == image.id
        with pytest.raises(docker.errors.BuildError, match="returned a non-zero code: 3"):
            client.images.build(
                fileobj=io.BytesIO(tar_of({"Dockerfile": b"FROM busybox:latest\nRUN exit 3\n"})),
                custom_context=True,
            )
        with pytest.raises(docker.errors.APIError, match=r"400 Client Error.*unknown instruction: BOGUS"):
            client.images.build(
                fileobj=io.BytesIO(tar_of({"Dockerfile": b"FROM busybox:latest\nBOGUS\n"})),
                custom_context=True,
            )
    finally:
        client.close()


def test_docker_py_images(daemon, backend):
    client = docker.DockerClient(base_url=daemon.host)
    try:
        image = client.images.get("mbref-img:v1")
        assert image.id == backend.result_id and image.tags == ["mbref-img:v1"]
        assert any(i.id == image.id for i in client.images.list())
        assert image.history()[0]["Id"] == image.id
        assert image.tag("mbref-dpy", "tagged")
        assert "mbref-dpy:tagged" in client.images.get(image.id).tags
        archive = b"".join(image.save(named=True))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            assert "manifest.json" in tar.getnames()
        (loaded,) = client.images.load(archive)
        assert loaded.id == image.id
        client.images.remove("mbref-dpy:tagged")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("mbref-dpy:tagged")
    finally:
        client.close()


# --- the docker CLI ------------------------------------------------------------------------------------


def run_docker(daemon, tmp_path, *args, stdin: bytes | None = None):
    env = dict(
        os.environ, DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(tmp_path / "docker-config"), HOME=str(tmp_path)
    )
    env.pop("DOCKER_HOST", None)
    return subprocess.run(
        [DOCKER, "-H", daemon.host, *args], input=stdin, capture_output=True, env=env, timeout=120
    )


@needs_docker_cli
def test_docker_version(daemon, tmp_path):
    result = run_docker(daemon, tmp_path, "version")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "API version:       1.40 (downgraded from" in out
    assert "API version:      1.40 (minimum version 1.12)" in out
    assert "Server: minibuild" in out


@needs_docker_cli
def test_docker_images_inspect_history(daemon, backend, tmp_path):
    result = run_docker(daemon, tmp_path, "images")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.split()[:3] == ["mbref-img", "v1", backend.result_id[7:19]] for line in lines[1:])
    result = run_docker(daemon, tmp_path, "inspect", "mbref-img:v1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["Id"] == backend.result_id
    result = run_docker(daemon, tmp_path, "image", "inspect", "nope-mbref")
    assert result.returncode == 1 and b"No such image: nope-mbref" in result.stderr
    result = run_docker(daemon, tmp_path, "history", "mbref-img:v1")
    assert result.returncode == 0 and backend.result_id[7:19].encode() in result.stdout


@needs_docker_cli
def test_docker_tag_save_load_import_rmi(daemon, tmp_path):
    assert run_docker(daemon, tmp_path, "tag", "mbref-img:v1", "mbref-cli:tagged").returncode == 0
    archive = tmp_path / "saved.tar"
    result = run_docker(daemon, tmp_path, "save", "-o", str(archive), "mbref-cli:tagged")
    assert result.returncode == 0, result.stderr
    result = run_docker(daemon, tmp_path, "load", "-i", str(archive))
    assert (result.returncode, result.stdout) == (0, b"Loaded image: mbref-cli:tagged\n"), result.stderr
    result = run_docker(daemon, tmp_path, "import", "-", "mbref-cli:imported", stdin=ROOTFS)
    assert result.returncode == 0 and result.stdout.startswith(b"sha256:"), result.stderr
    result = run_docker(daemon, tmp_path, "rmi", "mbref-cli:tagged")
    assert (result.returncode, result.stdout) == (0, b"Untagged: mbref-cli:tagged\n")
    result = run_docker(daemon, tmp_path, "rmi", "nope-mbref")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(b"Error response from daemon: No such image: nope-mbref:latest")


@needs_docker_cli
def test_docker_build_classic(daemon, backend, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN echo from-cli\n")
    (ctx / "ignored.txt").write_text("x")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    result = run_docker(daemon, tmp_path, "build", "-t", "mbref-cli:v1", "--build-arg", "B", str(ctx))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("Sending build context to Docker daemon")
    assert "from-cli\n" in out and "Successfully tagged mbref-cli:v1" in out
    options = backend.configs[-1].options
    assert (options.tags, options.build_args, options.version) == (["mbref-cli:v1"], {"B": None}, "1")
    assert sorted(backend.files[-1]) == [".dockerignore", "Dockerfile"]
    assert backend.configs[-1].options.auth_configs == {}  # X-Registry-Config: e30=

    (ctx / "Dockerfile").write_text("FROM scratch\nRUN exit 4\n")
    result = run_docker(daemon, tmp_path, "build", str(ctx))
    assert result.returncode == 4
    assert b"The command '/bin/sh -c exit 4' returned a non-zero code: 4" in result.stderr

    (ctx / "Dockerfile").write_text("FROM scratch\nBOGUS\n")
    result = run_docker(daemon, tmp_path, "build", str(ctx))
    assert result.returncode == 1
    assert (
        b"Error response from daemon: dockerfile parse error line 2: unknown instruction: BOGUS"
        in result.stderr
    )

    (ctx / "Dockerfile").write_text("FROM scratch\n")
    iid = tmp_path / "iid"
    result = run_docker(daemon, tmp_path, "build", "-q", "--iidfile", str(iid), str(ctx))
    assert result.returncode == 0 and result.stdout.decode().strip() == backend.result_id
    assert iid.read_text().strip() == backend.result_id
