"""Errors of the runtime, as a build reports them (moby errdefs; runc's and containerd's messages)."""


class ContainerError(RuntimeError):
    """A step's process could not be set up; the message says why."""


class RuntimeUnavailableError(ContainerError):
    """This machine cannot isolate a process (no namespaces); minibuild never falls back to the host."""


class ProcessStartError(ContainerError):
    """The process did not start: unknown user, missing executable, unknown network.

    The message is the text Docker shows for the same failure, e.g. `unable to find user nobody2: no
    matching entries in passwd file`, or runc's `exec: "/bin/sh": stat /bin/sh: no such file or
    directory` wrapped as dockerd reports it.
    """
