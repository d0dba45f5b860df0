"""A fork server for build steps (stands in for containerd-shim/runc's fork-exec of `runc init`, runc
libcontainer/process_linux.go; a minibuild-specific optimisation with no moby counterpart).

One warm Python process forks the supervisor of every step.

runc re-executes itself for each container (`runc init`); a fresh Python interpreter would cost tens
of milliseconds per RUN, most of it imports (see bench/run_step.py). The zygote pays them once and
forks instead: it is single-threaded, so forking it is safe, which forking the daemon (threads, an
event loop) would not be.

Protocol: one SOCK_SEQPACKET message per step, a JSON config with four descriptors attached (the
step's stdout and stderr, the status pipe, the lifeline). The zygote does not answer; the forked
supervisor talks to the daemon through those descriptors. The zygote exits when the daemon closes
its end of the socket, or dies.
"""

import json
import os
import signal
import socket
import sys

from minibuild.runtime.init import SetupError, report_error, start_container

_MAX_CONFIG = 1 << 20
_FDS = 4  # stdout, stderr, status, lifeline


def serve(sock: socket.socket) -> None:
    """Fork a supervisor for each request until the daemon hangs up."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the supervisors for us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_CONFIG, _FDS, socket.MSG_CMSG_CLOEXEC)
        if not data:
            return
        if len(fds) != _FDS:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            sock.close()
            _child(data, fds)
        for fd in fds:
            os.close(fd)


def _child(data: bytes, fds: list[int]) -> None:
    status_fd = fds[2]
    try:
        start_container(json.loads(data), *fds)
    except BaseException as err:  # a bug here must still reach the daemon, not vanish with this process
        report_error(status_fd, SetupError("setup", f"runtime init failed: {err!r}"))
    finally:
        os._exit(0)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
