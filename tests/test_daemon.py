"""The daemon runner: listeners (Unix socket mode, stale and live sockets, TCP), signals, embedding."""

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from api_doubles import raw_request

from minibuild.api import daemon as daemon_module
from minibuild.api.daemon import (
    Daemon,
    DaemonConfig,
    DaemonError,
    EmbeddedDaemon,
    embedded_daemon,
    parse_daemon_host,
)
from minibuild.api.router.image import ImageRouter
from minibuild.client import APIClient
from minibuild.defaults import default_host, default_socket_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_daemon_host():
    assert parse_daemon_host("unix:///run/x.sock") == ("unix", "/run/x.sock")
    assert parse_daemon_host("tcp://127.0.0.1:2375") == ("tcp", ("127.0.0.1", 2375))
    assert parse_daemon_host("tcp://:2375") == ("tcp", ("127.0.0.1", 2375))  # loopback unless told
    assert parse_daemon_host("tcp://0.0.0.0:2375") == ("tcp", ("0.0.0.0", 2375))
    for bad in ("/run/x.sock", "unix://rel", "tcp://127.0.0.1", "tcp://h:99999", "ssh://x", "fd://"):
        with pytest.raises(DaemonError):
            parse_daemon_host(bad)


def test_default_socket(monkeypatch):
    if os.geteuid() == 0:
        assert default_socket_path() == default_socket_path().__class__("/run/minibuild.sock")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert str(default_socket_path()) == "/run/user/1000/minibuild.sock"
    assert default_host() == "unix:///run/user/1000/minibuild.sock"


def test_socket_is_0660_and_removed_on_stop(tmp_path):
    d = embedded_daemon(tmp_path / "root")
    path = d.socket_path
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        d.stop()
    assert not os.path.exists(path)


def run_daemon_once(config: DaemonConfig) -> None:
    async def go() -> None:
        daemon = Daemon(config)
        await daemon.start()
        await daemon.stop()

    asyncio.run(go())


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(path)
    leftover.close()  # the file stays, nobody listens: what a killed daemon leaves behind
    run_daemon_once(DaemonConfig(hosts=[f"unix://{path}"], data_root=tmp_path / "root"))
    assert not os.path.exists(path)


def test_live_socket_is_refused(tmp_path):
    with embedded_daemon(tmp_path / "a") as first:
        with pytest.raises(DaemonError, match="another daemon is already listening"):
            run_daemon_once(DaemonConfig(hosts=[first.host], data_root=tmp_path / "b"))
        assert APIClient(first.host).ping().api_version == "1.40"  # the first one is untouched
        assert not (tmp_path / "b").exists()  # refused before its data root was made (or swept)
        before = sorted(p.relative_to(first.data_root) for p in Path(first.data_root).rglob("*"))
        with pytest.raises(DaemonError, match="another daemon is already listening"):
            run_daemon_once(DaemonConfig(hosts=[first.host], data_root=first.data_root))
        assert sorted(p.relative_to(first.data_root) for p in Path(first.data_root).rglob("*")) == before


def test_non_socket_file_is_refused(tmp_path):
    path = tmp_path / "file.sock"
    path.write_text("precious")
    with pytest.raises(DaemonError, match="exists and is not a socket"):
        run_daemon_once(DaemonConfig(hosts=[f"unix://{path}"], data_root=tmp_path / "root"))
    assert path.read_text() == "precious"


def test_unusable_data_root(tmp_path):
    (tmp_path / "root").write_text("a file")
    with pytest.raises(DaemonError, match="cannot use data root"):
        run_daemon_once(DaemonConfig(hosts=[f"unix://{tmp_path}/s.sock"], data_root=tmp_path / "root"))


def test_tcp_only_when_asked_with_a_warning(tmp_path, capfd):
    port = free_port()
    with _tcp_daemon(tmp_path, port) as d:
        assert APIClient(f"tcp://127.0.0.1:{port}").ping().os_type == "linux"
        info = json.loads(raw_request(d.socket_path, "GET", "/info")[2])
        expected = f"WARNING: API is accessible on http://127.0.0.1:{port} without encryption."
        assert info["Warnings"][0].startswith(expected)
    assert "without encryption" in capfd.readouterr().err


class _tcp_daemon:
    """An embedded daemon that also listens on loopback TCP."""

    def __init__(self, tmp_path, port: int) -> None:
        self.inner = EmbeddedDaemon(tmp_path / "root")
        self.inner.config.hosts.append(f"tcp://:{port}")

    def __enter__(self):
        return self.inner.start()

    def __exit__(self, *exc):
        self.inner.stop()


def test_unix_only_by_default(tmp_path):
    with embedded_daemon(tmp_path / "root") as d:
        assert d.daemon.tcp_addresses == [] and d.config.hosts == [d.host]


def test_embedded_daemon_is_idempotent(tmp_path):
    root = tmp_path / "root"
    first = embedded_daemon(root)
    try:
        again = embedded_daemon(root)
        assert again is first and first.running
        first.start()  # harmless when running
    finally:
        first.stop()
        first.stop()  # harmless when stopped
    assert not first.running
    restarted = embedded_daemon(root)
    try:
        assert restarted is not first and restarted.running
    finally:
        restarted.stop()


def test_one_registry_service_per_data_root(tmp_path):
    """Pulls and pushes (the image router) and both builders' FROM pulls share the daemon's service."""
    with embedded_daemon(tmp_path / "root") as d:
        service = d.daemon.registry_service
        assert service is not None and service.root == tmp_path / "root" / "distribution"
        backend = d.daemon.build_backend
        assert backend.components.registry is service
        assert backend.buildkit.controller.registry is service
        (image_router,) = [r for r in d.daemon.server.routers if isinstance(r, ImageRouter)]
        assert image_router.registry is service


def test_the_build_backend_is_made_off_the_event_loop(tmp_path, monkeypatch):
    """Making it probes overlay and sweeps leftovers: a worker thread does it, not the serving loop."""
    on_loop = []
    make = daemon_module.create_build_backend

    def spy(*args):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return make(*args)

    monkeypatch.setattr(daemon_module, "create_build_backend", spy)
    with embedded_daemon(tmp_path / "root"):
        pass
    assert on_loop == [False]


def test_temporary_data_root_is_removed(tmp_path):
    with embedded_daemon() as d:
        root = d.data_root
        assert root.is_dir()
    assert not root.exists()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Where tempfile makes an embedded daemon's socket directory and temporary data root."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(path))
    return path


def test_a_daemon_that_does_not_start_leaves_no_temporary_directory(scratch):
    with pytest.raises(DaemonError, match="invalid mirror"):
        embedded_daemon(registry_mirrors=["ftp://m"])  # refused before its temporary data root is used
    assert list(scratch.iterdir()) == []


def test_a_daemon_whose_data_root_is_unusable_leaves_only_the_callers_file(scratch, tmp_path):
    data_root = tmp_path / "root"
    data_root.write_text("not a directory")
    with pytest.raises(DaemonError, match="cannot use data root"):
        embedded_daemon(data_root)
    assert list(scratch.iterdir()) == []
    assert data_root.read_text() == "not a directory"


def wait_for_socket(path: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.05)
    raise AssertionError("the daemon did not start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_minibuild_daemon_stops_cleanly_on_signals(tmp_path, sig):
    path = str(tmp_path / "d.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minibuild",
            "daemon",
            "--host",
            f"unix://{path}",
            "--data-root",
            str(tmp_path / "root"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_socket(path, proc)
        assert APIClient(f"unix://{path}").server_version()["ApiVersion"] == "1.40"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(path)
    assert b"API listen on" in proc.stderr.read()


def test_minibuild_daemon_reports_a_busy_socket(tmp_path):
    with embedded_daemon(tmp_path / "a") as first:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "minibuild",
                "daemon",
                "-H",
                first.host,
                "--data-root",
                str(tmp_path / "b"),
            ],
            capture_output=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert b"another daemon is already listening" in result.stderr
