"""A private registry for notebook 02, offline: Debian's `docker-registry` (the CNCF distribution
registry, the same program as the `registry:2` image) on 127.0.0.1 with htpasswd Basic auth, in a
temporary directory that `stop()` removes. The test suite has its own in tests/registry_fixture.py.

    registry = LocalRegistry().start()     # registry.host == "127.0.0.1:<port>"
    ...
    registry.stop()
"""

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

USERNAME = "student"
PASSWORD = "notebook-pass"
# The registry accepts only bcrypt entries in its htpasswd file, and neither the standard library nor
# minibuild's dependencies hash bcrypt: this is bcrypt(PASSWORD, cost 4), made once with the test
# suite's pure-Python bcrypt (tests/bcrypt_pure.py). The registry checks every login against it.
HTPASSWD = f"{USERNAME}:$2y$04$wB9eVRIN8KVmigdmaCmoFOqvlWsSfH4ZMOki91ESfq/bU8KUhOY6e\n"
STARTUP_WAIT = 30.0  # seconds for the registry to answer /v2/


class RegistryUnavailable(Exception):
    """docker-registry is missing or would not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """One registry process with its own storage, config and credentials."""

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.host = ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "LocalRegistry":
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if binary is None:
            raise RegistryUnavailable("docker-registry is not installed: `make setup` installs it (apt)")
        self.workdir = Path(tempfile.mkdtemp(prefix="minibuild-registry-"))
        (self.workdir / "htpasswd").write_text(HTPASSWD)
        port = _free_port()
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "notebook-registry", "path": str(self.workdir / "htpasswd")}},
        }
        (self.workdir / "config.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
        with open(self.workdir / "registry.log", "wb") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(self.workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
            )
        self.host = f"127.0.0.1:{port}"
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_WAIT
        while time.monotonic() < deadline:
            if not self.running:
                log = (self.workdir / "registry.log").read_text(errors="replace")
                self.stop()
                raise RegistryUnavailable(f"docker-registry exited:\n{log[-2000:]}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).close()
                return
            except urllib.error.HTTPError:  # 401: it answers, and wants credentials
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RegistryUnavailable(f"docker-registry did not answer within {STARTUP_WAIT:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
