"""Running one build step's process (what moby's daemon/start.go asks of containerd and runc).

`Runtime.run(rootfs, spec, on_stdout=..., on_stderr=...)` runs `spec.args` in new namespaces on the
root filesystem `rootfs` (after mounting `mounts` on it, for a snapshotter's overlay) and returns the
exit code, 128+n for a process killed by signal n. stdout and stderr are separate pipes; each read is
handed to its callback as it comes (sync or async callables), never split into lines, as the classic
builder forwards them.

Cancelling the task that awaits `run` kills the step: the daemon closes the step's lifeline, the
supervisor kills PID 1 and the kernel every other process of the namespace; `run` returns (raising
CancelledError) only once the supervisor has cleaned up and exited, so the caller may then remove the
snapshot. If the daemon dies, its descriptors close and the same happens.

The processes come from a zygote (zygote.py), started on first use; the container side is init.py.
"""

import asyncio
import atexit
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import minibuild
from minibuild.runtime.errors import ContainerError, ProcessStartError, RuntimeUnavailableError
from minibuild.runtime.spec import (
    NETWORK_MODES,
    Mount,
    ProcessSpec,
    build_hosts,
    build_resolv_conf,
    create_daemon_environment,
)

OutputCallback = Callable[[bytes], Awaitable[None] | None]
_READ_SIZE = 32 * 1024  # Go's io.Copy buffer
# How dockerd words a failure of runc's init before the process started.
_SHIM_ERROR = (
    "failed to create shim task: OCI runtime create failed: runc create failed: "
    "unable to start container process: {}: unknown"
)


class Runtime:
    """Runs build steps through one zygote process, started on first use and stopped by `close()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._zygote: subprocess.Popen | None = None

    async def run(
        self,
        rootfs: Path,
        spec: ProcessSpec,
        *,
        on_stdout: OutputCallback,
        on_stderr: OutputCallback,
        mounts: Sequence[Mount] = (),
    ) -> int:
        """Run `spec` on `rootfs` and return its exit code.

        Raises ProcessStartError, RuntimeUnavailableError or ContainerError when it cannot start.
        """
        config = _run_config(rootfs, spec, mounts)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        try:
            self._submit(config, [out_w, err_w, status_w, life_r])
        except BaseException:
            for fd in (out_r, err_r, status_r, life_w):
                os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, status_w, life_r):
                os.close(fd)

        pumps = [
            asyncio.ensure_future(_pump(out_r, on_stdout)),
            asyncio.ensure_future(_pump(err_r, on_stderr)),
        ]
        status = asyncio.ensure_future(_read_status(status_r))
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a callback's error
            messages = await status
        except BaseException:
            os.close(life_w)  # the supervisor kills the step
            life_w = -1
            for task in pumps:
                task.cancel()
            await _wait_through_cancellation(status)
            raise
        finally:
            if life_w >= 0:
                os.close(life_w)
        return _exit_code(messages)

    @contextmanager
    def mounted(self, rootfs: Path, mounts: Sequence[Mount]) -> Iterator[Path]:
        """The tree `mounts` make on `rootfs`, reachable from the host while the context lasts.

        A supervisor holds the mounts in its own mount namespace (in a user namespace when not root);
        the host reaches them through /proc/<pid>/root. Nothing is mounted in the daemon's namespace,
        so nothing leaks if the daemon is killed. Paths below it must be resolved with
        follow_symlink_in_scope: an absolute symlink there points to the host's /, not the tree's.
        """
        config = {"mode": "hold", "rootfs": _rootfs_path(rootfs), "mounts": [asdict(m) for m in mounts]}
        config["rootless"] = os.geteuid() != 0
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            self._submit(config, [null, null, status_w, life_r])
        except BaseException:
            os.close(status_r)
            os.close(life_w)
            raise
        finally:
            for fd in (null, status_w, life_r):
                os.close(fd)
        try:
            with os.fdopen(status_r, "rb", buffering=0) as status:
                first = status.readline()
                message = json.loads(first) if first else {}
                if "ready" not in message:
                    _exit_code([message])  # raises the reported error
                try:
                    yield Path(f"/proc/{message['ready']}/root") / config["rootfs"].lstrip("/")
                finally:
                    os.close(life_w)
                    life_w = -1
                    status.read()  # EOF: the supervisor, and its mount namespace, are gone
        finally:
            if life_w >= 0:
                os.close(life_w)

    def close(self) -> None:
        """Stop the zygote (running steps are not affected: their lifelines are the daemon's)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._zygote is not None:
                self._zygote.wait()
                self._zygote = None

    def _submit(self, config: dict, fds: list[int]) -> None:
        data = json.dumps(config).encode()
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self._start_zygote()
                try:
                    socket.send_fds(self._sock, [data], fds)
                    return
                except (BrokenPipeError, ConnectionError):
                    if attempt == 2:
                        raise ContainerError(
                            "the runtime's zygote process is gone and could not be restarted"
                        )
                    self._sock.close()  # the zygote died: start a new one
                    self._sock = None
                    if self._zygote is not None:
                        self._zygote.wait()

    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = str(Path(minibuild.__file__).resolve().parent.parent)
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        )
        self._zygote = subprocess.Popen(
            [sys.executable, "-m", "minibuild.runtime.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C is the daemon's, not the steps'
        )
        theirs.close()
        self._sock = ours


async def _open(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def _pump(fd: int, callback: OutputCallback) -> None:
    """Hand each read of `fd` to `callback`, as it comes, until EOF."""
    reader, transport = await _open(fd)
    try:
        while chunk := await reader.read(_READ_SIZE):
            result = callback(chunk)
            if inspect.isawaitable(result):
                await result
    finally:
        transport.close()


async def _read_status(fd: int) -> list[dict]:
    """The supervisor's JSON lines, read to EOF (it has exited then)."""
    reader, transport = await _open(fd)
    try:
        return [json.loads(line) for line in (await reader.read()).splitlines() if line.strip()]
    finally:
        transport.close()


async def _wait_through_cancellation(task: asyncio.Future) -> None:
    """Wait for `task` even if we are cancelled again meanwhile: the step must be gone before we return."""
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


def _rootfs_path(rootfs: Path) -> str:
    path = os.path.abspath(rootfs)
    if not os.path.isdir(path):
        raise ContainerError(f"rootfs {path} is not a directory")
    return path


def _run_config(rootfs: Path, spec: ProcessSpec, mounts: Sequence[Mount]) -> dict:
    """The JSON the supervisor gets: the spec, plus what the daemon side computes for it."""
    if spec.network_mode not in NETWORK_MODES:
        raise ProcessStartError(f"network {spec.network_mode} not found")
    if not spec.args:
        raise ContainerError("no command specified")
    network = "host" if spec.network_mode == "host" else "private"  # a step's own network: loopback only
    return {
        "mode": "run",
        "rootfs": _rootfs_path(rootfs),
        "mounts": [asdict(m) for m in mounts],
        "rootless": os.geteuid() != 0,
        "args": list(spec.args),
        "env": create_daemon_environment(spec.env, spec.hostname),
        "cwd": spec.cwd or "/",
        "user": spec.user,
        "network": network,
        "hostname": spec.hostname,
        "etc": {
            "hosts": build_hosts(spec.extra_hosts, network),
            "resolv.conf": build_resolv_conf(network),
            "hostname": spec.hostname + "\n",
        },
    }


def _exit_code(messages: list[dict]) -> int:
    for message in messages:
        kind = message.get("error")
        if kind == "unavailable":
            raise RuntimeUnavailableError(explain_unavailable(message["message"], message.get("errno", 0)))
        if kind == "user":
            raise ProcessStartError(message["message"])
        if kind == "start":
            raise ProcessStartError(_SHIM_ERROR.format(message["message"]))
        if kind is not None:
            raise ContainerError(message["message"])
    for message in messages:
        if "exit" in message:
            return message["exit"]
    raise ContainerError("the step's supervisor exited without reporting how the step ended")


def _sysctl(name: str) -> str | None:
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def explain_unavailable(namespace: str, err: int) -> str:
    """One sentence: why a step cannot get its namespaces here, and what would allow it."""
    reason = os.strerror(err).lower() if err else "not permitted"
    if namespace == "user namespace":
        if _sysctl("kernel/unprivileged_userns_clone") == "0":
            fix = "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
        elif _sysctl("user/max_user_namespaces") == "0":
            fix = "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
        elif _sysctl("kernel/apparmor_restrict_unprivileged_userns") == "1":
            fix = "AppArmor restricts them (sysctl kernel.apparmor_restrict_unprivileged_userns=1)"
        else:
            fix = "this kernel or sandbox does not allow unprivileged user namespaces"
        return (
            f"RUN needs a user namespace when minibuild is not root, and creating one failed ({reason}): "
            f"{fix}; allow them or run minibuild as root"
        )
    return (
        f"RUN needs mount, PID, IPC, UTS and network namespaces, and creating them failed ({reason}): "
        "run minibuild as root or where unprivileged user namespaces are allowed"
    )


_default: Runtime | None = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The process-wide Runtime, closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Runtime()
            atexit.register(_default.close)
        return _default


async def run(
    rootfs: Path,
    spec: ProcessSpec,
    *,
    on_stdout: OutputCallback,
    on_stderr: OutputCallback,
    mounts: Sequence[Mount] = (),
) -> int:
    """`Runtime.run` on the default runtime."""
    return await default_runtime().run(rootfs, spec, on_stdout=on_stdout, on_stderr=on_stderr, mounts=mounts)
