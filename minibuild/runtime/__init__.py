"""The RUN runtime: one command in Linux namespaces on a root filesystem (runc, as containerd drives it).

`run(rootfs, ProcessSpec(args=[...]), on_stdout=..., on_stderr=...) -> exit code`. The daemon side is
runtime.py, the container side init.py (forked from the zygote in zygote.py), USER resolution user.py,
the step's /etc files and environment spec.py, the system calls linux.py.
"""

from minibuild.runtime.errors import ContainerError, ProcessStartError, RuntimeUnavailableError
from minibuild.runtime.runtime import Runtime, default_runtime, explain_unavailable, run
from minibuild.runtime.spec import Mount, ProcessSpec
from minibuild.runtime.user import ExecUser, UserLookupError, get_exec_user

__all__ = [
    "ContainerError",
    "ExecUser",
    "Mount",
    "ProcessSpec",
    "ProcessStartError",
    "Runtime",
    "RuntimeUnavailableError",
    "UserLookupError",
    "default_runtime",
    "explain_unavailable",
    "get_exec_user",
    "run",
]
