"""Real clients build through the classic builder, end to end: `minibuild build`, docker-py, and the
docker CLI with DOCKER_BUILDKIT=0 where its binary exists (the multi-stage examples of the tests and
the bench/ Dockerfiles)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minibuild.api.daemon import embedded_daemon
from minibuild.image.busybox import create_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
DOCKER = shutil.which("docker") or (
    "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else None
)
CONTEXTS = {
    "multi-stage": GOLDEN / "c-multi-stage",
    "target": GOLDEN / "d-target",
    "fanout": REPO / "bench" / "fanout",
    "steps": REPO / "bench" / "steps",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        service = d.daemon.image_service
        busybox = create_busybox_image(service, "busybox:latest", source_date_epoch=0)
        service.tag(busybox, "busybox", "local")
        yield d


def context_copy(tmp_path: Path, name: str) -> Path:
    """The example's directory without the golden files (a client sends what it finds)."""
    dest = tmp_path / name
    shutil.copytree(CONTEXTS[name], dest, ignore=shutil.ignore_patterns("case.json", "stream.jsonl"))
    return dest


def minibuild(daemon, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MINIBUILD_HOST=daemon.host)
    return subprocess.run(
        [sys.executable, "-m", "minibuild", *args], env=env, capture_output=True, text=True, timeout=300
    )


def docker(daemon, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(tmp_path / "docker-config"))
    return subprocess.run(
        [DOCKER, "-H", daemon.host, *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("name", list(CONTEXTS))
def test_minibuild_cli(daemon, tmp_path, name):
    env = dict(os.environ, PYTHONPATH=str(REPO), MINIBUILD_HOST=daemon.host)
    args = (
        ["build", "-t", f"cli-{name}:v1", "--target", "mid"]
        if name == "target"
        else ["build", "-t", f"cli-{name}:v1"]
    )
    done = subprocess.run(
        [sys.executable, "-m", "minibuild", *args, str(context_copy(tmp_path, name))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully built" in done.stdout and f"Successfully tagged cli-{name}:v1" in done.stdout
    assert daemon.daemon.image_service.get_image(f"cli-{name}:v1")


def test_minibuild_cli_exit_status_is_the_run_exit_code(daemon, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN exit 4\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), MINIBUILD_HOST=daemon.host)
    done = subprocess.run(
        [sys.executable, "-m", "minibuild", "build", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 4
    assert "The command '/bin/sh -c exit 4' returned a non-zero code: 4" in done.stderr


@pytest.mark.parametrize("name", list(CONTEXTS))
def test_docker_py(daemon, tmp_path, name):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host, version="1.40")
    try:
        target = {"target": "mid"} if name == "target" else {}
        image, logs = client.images.build(
            path=str(context_copy(tmp_path, name)), tag=f"dpy-{name}:v1", **target
        )
        texts = [entry.get("stream", "") for entry in logs]
        assert any(t.startswith("Successfully built ") for t in texts)
        assert image.id == daemon.daemon.image_service.get_image(f"dpy-{name}:v1").id
    finally:
        client.close()


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
@pytest.mark.parametrize("name", list(CONTEXTS))
def test_docker_cli_classic(daemon, tmp_path, name):
    env = dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(tmp_path / "docker-config"))
    target = ["--target", "mid"] if name == "target" else []
    done = subprocess.run(
        [
            DOCKER,
            "-H",
            daemon.host,
            "build",
            "-t",
            f"docker-{name}:v1",
            *target,
            str(context_copy(tmp_path, name)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Step 1/" in done.stdout and f"Successfully tagged docker-{name}:v1" in done.stdout
    assert daemon.daemon.image_service.get_image(f"docker-{name}:v1")


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_docker_cli_exit_status_and_quiet_iidfile(daemon, tmp_path):
    env = dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(tmp_path / "docker-config"))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN exit 4\n")
    done = subprocess.run(
        [DOCKER, "-H", daemon.host, "build", str(context)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 4, done.stdout + done.stderr
    (context / "Dockerfile").write_text("FROM busybox\nENV QUIET=1\n")
    iid = tmp_path / "iid"
    command = [DOCKER, "-H", daemon.host, "build", "-q", "--iidfile", str(iid), str(context)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # in quiet mode the CLI writes the stream's text itself: `sha256:<id>` and its newline
    assert iid.read_text() == done.stdout and done.stdout.startswith("sha256:")
