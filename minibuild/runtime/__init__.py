"""The RUN runtime: one command in Linux namespaces on a root filesystem (runc, as containerd drives it).

`run(rootfs, ProcessSpec(args=[...]), on_stdout=..., on_stderr=...) -> exit code`. The daemon side is
runtime.py, the container side init.py (forked from the zygote in zygote.py), USER resolution user.py,
the step's /etc files and environment spec.py, the system calls linux.py.

The daemon side (asyncio and friends) is imported on first use: the zygote imports only the container
side, and a smaller process forks faster (bench/run_step.py shows the difference).
"""

from importlib import import_module

from minibuild.runtime.errors import ContainerError, ProcessStartError, RuntimeUnavailableError
from minibuild.runtime.spec import Mount, ProcessSpec
from minibuild.runtime.user import ExecUser, UserLookupError, get_exec_user

_DAEMON_SIDE = ("Runtime", "default_runtime", "explain_unavailable", "run")

__all__ = [
    "ContainerError",
    "ExecUser",
    "Mount",
    "ProcessSpec",
    "ProcessStartError",
    "RuntimeUnavailableError",
    "UserLookupError",
    "get_exec_user",
    *_DAEMON_SIDE,
]


def __getattr__(name: str) -> object:
    if name in _DAEMON_SIDE:
        return getattr(import_module("minibuild.runtime.runtime"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
