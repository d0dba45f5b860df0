"""The container side of a build step (runc libcontainer: nsexec.c, rootfs_linux.go, standard_init_linux.go).

Two processes per step, as runc has its parent and its init:

* the supervisor (`start_container`, forked by the zygote) enters new namespaces — user (when not
  root), mount, UTS, IPC, network (unless network=host) and PID (for its children) —, mounts the
  root filesystem and what a container expects in it (/dev, /sys, /etc/hosts...) and forks the init;
* the init (`container_init`) is PID 1 of the new PID namespace: it mounts /proc, pivot_roots into
  the root filesystem (which moves the supervisor there too), resolves USER, drops capabilities,
  switches user, changes directory and execs the command.

The supervisor waits for PID 1 or for its lifeline to close (the daemon cancelled the step or died);
then it kills PID 1, which takes every process of the namespace with it. It removes the mount points
it had to create (Docker keeps them in an "init layer" below the container's, so a layer diff never
shows them), reports the exit status and exits: its mount namespace, and every mount in it, ends with
it. After pivot_root the host's files are out of reach, so everything here is imported before the
fork, and the supervisor only ever touches paths inside the container's root.

Messages to the daemon are JSON lines on the status pipe: {"error": kind, "message": ...} and, at the
end, {"exit": code}; {"ready": pid} in "hold" mode (a mount namespace kept open for host access).
"""

import errno
import fcntl
import json
import os
import select
import signal
import socket
import stat
import struct
from pathlib import Path

from minibuild.archive import ArchiveError, follow_symlink_in_scope
from minibuild.runtime import linux
from minibuild.runtime.user import UserLookupError, get_exec_user_path

# What a container's /dev holds: runc's default devices, bind-mounted (no mknod in a user namespace).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
)
# Docker's default spec (moby oci/defaults.go): masked and read-only paths, default capabilities.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_CAPABILITIES = frozenset(
    {
        0,  # CAP_CHOWN
        1,  # CAP_DAC_OVERRIDE
        3,  # CAP_FOWNER
        4,  # CAP_FSETID
        5,  # CAP_KILL
        6,  # CAP_SETGID
        7,  # CAP_SETUID
        8,  # CAP_SETPCAP
        10,  # CAP_NET_BIND_SERVICE
        13,  # CAP_NET_RAW
        18,  # CAP_SYS_CHROOT
        27,  # CAP_MKNOD
        29,  # CAP_AUDIT_WRITE
        31,  # CAP_SETFCAP
    }
)
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
ETC_FILES = ("hosts", "resolv.conf", "hostname")
_PROC_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
# Mount options that are flags, not filesystem data (containerd's parseMountOptions).
_MOUNT_FLAGS = {
    "ro": linux.MS_RDONLY,
    "nosuid": linux.MS_NOSUID,
    "nodev": linux.MS_NODEV,
    "noexec": linux.MS_NOEXEC,
    "bind": linux.MS_BIND,
    "rbind": linux.MS_BIND | linux.MS_REC,
}


class SetupError(Exception):
    """A failure to report to the daemon: `kind` is "unavailable", "setup", "start" or "user"."""

    def __init__(self, kind: str, message: str, err: int = 0):
        super().__init__(message)
        self.kind, self.message, self.errno = kind, message, err


def _reason(err: OSError) -> str:
    """Go's wording of an errno: lower case (`no such file or directory`)."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def describe(err: Exception) -> SetupError:
    """A setup failure for the daemon, an OSError worded as Go would (`/x/etc: not a directory`)."""
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.filename}: {_reason(err)}" if err.filename else err.strerror
        return SetupError("setup", text, err.errno or 0)
    return SetupError("setup", str(err))


def _send(status_fd: int, **message: object) -> None:
    os.write(status_fd, json.dumps(message).encode() + b"\n")


def report_error(status_fd: int, error: SetupError) -> None:
    _send(status_fd, error=error.kind, message=error.message, errno=error.errno)


# --- supervisor --------------------------------------------------------------------------------


def start_container(config: dict, stdout_fd: int, stderr_fd: int, status_fd: int, lifeline_fd: int) -> None:
    """Run one step (config["mode"] == "run") or hold its mounts open ("hold"); never raises."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we wait for our child
    created: list[str] = []
    try:
        _enter_namespaces(config)
        rootfs = config["rootfs"]
        _mount_rootfs(rootfs, config["mounts"])
        if config["mode"] == "hold":
            _send(status_fd, ready=os.getpid())
            _wait_readable(lifeline_fd)  # until the daemon is done with the tree
            return
        root = os.stat(rootfs)
        try:
            proc = _mount_container_fs(rootfs, config, created)
            pid = os.fork()
            if pid == 0:
                container_init(config, proc, stdout_fd, stderr_fd, status_fd, lifeline_fd)
            os.close(stdout_fd)
            os.close(stderr_fd)
            code = _supervise(pid, lifeline_fd)
        finally:
            if _enter_container_root(rootfs, root):
                _remove_mount_points(created)
        _send(status_fd, exit=code)
    except SetupError as err:
        report_error(status_fd, err)
    except (OSError, ArchiveError) as err:
        report_error(status_fd, describe(err))


def _enter_container_root(rootfs: str, root: os.stat_result) -> bool:
    """chroot into the rootfs unless PID 1's pivot_root already moved us there (it moves every process
    of the mount namespace whose root was the old one), so that clean-up only sees the container."""
    here = os.stat("/")
    try:
        if (here.st_dev, here.st_ino) != (root.st_dev, root.st_ino):
            os.chroot(rootfs)
        os.chdir("/")
    except OSError:
        return False  # the rootfs was moved over / (no pivot_root): leave the mount points be
    return True


def _wait_readable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll()


def _enter_namespaces(config: dict) -> None:
    """unshare(2) into the step's namespaces; as non-root, first a user namespace mapping us to root."""
    if config["rootless"]:
        uid, gid = os.getuid(), os.getgid()
        try:
            linux.unshare(linux.CLONE_NEWUSER)
        except OSError as err:
            raise SetupError("unavailable", "user namespace", err.errno)
        # A process may map only its own ids, and only after giving up setgroups(2).
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    flags = linux.CLONE_NEWNS
    if config["mode"] == "run":
        flags |= linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
        if config["network"] != "host":
            flags |= linux.CLONE_NEWNET
    try:
        linux.unshare(flags)
    except OSError as err:
        raise SetupError("unavailable", "namespaces", err.errno)
    # Nothing we mount may propagate back to the host's mount namespace.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)


def _mount_rootfs(rootfs: str, mounts: list[dict]) -> None:
    """Mount the snapshot's mounts on `rootfs`, or bind it on itself (pivot_root needs a mount point)."""
    if not mounts:
        linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
    for m in mounts:
        flags, data = 0, []
        for option in m["options"]:
            if option in _MOUNT_FLAGS:
                flags |= _MOUNT_FLAGS[option]
            else:
                data.append(option)
        target = os.path.join(rootfs, m["target"].lstrip("/"))
        try:
            linux.mount(m["source"], target, m["type"], flags, ",".join(data) or None)
        except OSError as err:
            raise SetupError("setup", f"failed to mount {m['type']} on {target}: {_reason(err)}", err.errno)


def _mount_point(rootfs: str, path: str, *, is_dir: bool, created: list[str]) -> str:
    """The host path of `path` in the rootfs (symlinks followed inside it), created when missing.

    Whatever is created is recorded (as a path in the container) so that it can be removed again.
    """
    host = str(follow_symlink_in_scope(path.lstrip("/"), Path(rootfs)))
    missing = []
    probe = host
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for index, new in enumerate(reversed(missing)):
        if is_dir or index < len(missing) - 1:
            os.mkdir(new, 0o755)
        else:
            os.close(os.open(new, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        created.append("/" + os.path.relpath(new, rootfs))
    return host


def _mount_container_fs(rootfs: str, config: dict, created: list[str]) -> str:
    """/dev, /sys, /etc/{hosts,resolv.conf,hostname}, as runc sets them up; the host path for /proc.

    /proc itself is mounted by PID 1: a proc mount shows the PID namespace of the process mounting it.
    """
    proc = _mount_point(rootfs, "/proc", is_dir=True, created=created)
    dev = _mount_point(rootfs, "/dev", is_dir=True, created=created)
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_STRICTATIME, "mode=755,size=65536k")
    for name in DEVICES:
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        linux.mount(f"/dev/{name}", node, None, linux.MS_BIND)
    for name, target in DEV_SYMLINKS:
        os.symlink(target, os.path.join(dev, name))
    for name, fstype, flags, data in (
        ("pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
        ("shm", "tmpfs", _PROC_FLAGS, "mode=1777,size=65536k"),
        ("mqueue", "mqueue", _PROC_FLAGS, None),
    ):
        os.mkdir(os.path.join(dev, name), 0o755)
        linux.mount(name, os.path.join(dev, name), fstype, flags, data)

    sys_dir = _mount_point(rootfs, "/sys", is_dir=True, created=created)
    try:
        linux.mount("sysfs", sys_dir, "sysfs", _PROC_FLAGS | linux.MS_RDONLY)
    except PermissionError:
        # A user namespace sharing the host's network may not mount sysfs: bind the host's, read-only.
        linux.mount("/sys", sys_dir, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, sys_dir, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | _PROC_FLAGS)

    for name in ETC_FILES:
        # Written on the new /dev tmpfs, bind-mounted, then unlinked: nothing lands in the rootfs.
        source = os.path.join(dev, f".{name}")
        with open(source, "w") as f:
            f.write(config["etc"][name])
        target = _mount_point(rootfs, f"/etc/{name}", is_dir=False, created=created)
        linux.mount(source, target, None, linux.MS_BIND)
        os.unlink(source)

    if config["network"] != "host":
        _loopback_up()
    socket.sethostname(config["hostname"])
    return proc


def _loopback_up() -> None:
    """`ip link set lo up`: a new network namespace starts with its loopback down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _pivot_root(rootfs: str) -> None:
    """Make `rootfs` the root, detaching the host's (runc's pivotRoot: no put_old directory needed)."""
    os.chdir(rootfs)
    try:
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        # pivot_root refuses an initramfs root: move the rootfs over / and chroot (runc's msMoveRoot).
        linux.mount(rootfs, "/", None, linux.MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def _supervise(pid: int, lifeline_fd: int) -> int:
    """Wait for PID 1; kill it when the lifeline closes. The exit code, 128+n for signal n."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(lifeline_fd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if lifeline_fd in ready:
            os.kill(pid, signal.SIGKILL)  # PID 1 dies: the kernel kills the whole namespace
            poller.unregister(lifeline_fd)
        if pidfd in ready:
            break
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _remove_mount_points(created: list[str]) -> None:
    """Unmount and remove the mount points we created, unless the step put something in them.

    Best effort by design: a step may have filled a created directory, which then stays (as in Docker).
    """
    for path in reversed(created):
        try:
            linux.umount2(path, linux.MNT_DETACH)
        except OSError:
            pass  # not a mount point
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(path)
        except OSError:
            pass


# --- init (PID 1) ------------------------------------------------------------------------------


def container_init(
    config: dict, proc: str, stdout_fd: int, stderr_fd: int, status_fd: int, lifeline_fd: int
) -> None:
    """Become the step's process; reports a failure on the status pipe and exits. Never returns."""
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.close(lifeline_fd)
        # In a user namespace the kernel mounts a new proc only where the host's is still visible:
        # before pivot_root.
        linux.mount("proc", proc, "proc", _PROC_FLAGS)
        _pivot_root(config["rootfs"])
        _mask_proc()
        user = _resolve_user(config["user"])
        env = dict(entry.partition("=")[::2] for entry in config["env"])
        env.setdefault("HOME", user.home)
        cwd = os.path.join("/", config["cwd"])
        os.makedirs(cwd, 0o755, exist_ok=True)  # runc creates a missing working directory
        _drop_capabilities()
        _switch_user(user.uid, user.gid, user.sgids, rootless=config["rootless"])
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # a change of credentials cleared it
        try:
            os.chdir(cwd)
        except OSError as err:
            raise SetupError("start", f'chdir to cwd ("{cwd}") set in config.json failed: {_reason(err)}')
        args = config["args"]
        path = look_path(args[0], env.get("PATH", ""))
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec keeps what is ignored
            signal.signal(sig, signal.SIG_DFL)
    except SetupError as err:
        report_error(status_fd, err)
        os._exit(1)
    except (OSError, ArchiveError) as err:
        report_error(status_fd, describe(err))
        os._exit(1)
    try:
        os.execve(path, args, env)
    except OSError as err:
        # After the process started, runc reports an exec failure as the process's own output.
        os.write(2, f"exec {path}: {_reason(err)}\n".encode())
    os._exit(1)


def _mask_proc() -> None:
    """Docker's masked and read-only paths in /proc and /sys."""
    for path in READONLY_PATHS:
        if os.path.exists(path):
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | _PROC_FLAGS)
    for path in MASKED_PATHS:
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
        elif os.path.exists(path):
            linux.mount("/dev/null", path, None, linux.MS_BIND)


def _resolve_user(user_spec: str):
    try:
        return get_exec_user_path(user_spec)
    except UserLookupError as err:
        raise SetupError("user", str(err))


def _drop_capabilities() -> None:
    """Keep Docker's default capabilities: drop the rest from the bounding set (exec keeps no others)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in DEFAULT_CAPABILITIES:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def _switch_user(uid: int, gid: int, sgids: list[int], *, rootless: bool) -> None:
    if rootless:
        if uid or gid:
            raise SetupError(
                "setup",
                f"cannot run as {uid}:{gid}: a rootless step has only root mapped in its user namespace",
            )
        return  # setgroups(2) is denied in our user namespace
    os.setgroups(list(dict.fromkeys([gid, *sgids])))  # the primary group too, as Docker sets it since 23.0
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def look_path(name: str, path_env: str) -> str:
    """Go's exec.LookPath, as runc calls it; a failure has Go's exec.Error text."""

    def find_executable(file: str) -> str | None:
        """None when `file` is executable, else Go's reason."""
        try:
            st = os.stat(file)
        except OSError as err:
            return f"stat {file}: {_reason(err)}"
        if stat.S_ISDIR(st.st_mode):
            return "is a directory"
        return None if os.access(file, os.X_OK, effective_ids=True) else "permission denied"

    quoted = json.dumps(name, ensure_ascii=False)  # Go's strconv.Quote
    if "/" in name:
        reason = find_executable(name)
        if reason is None:
            return name
        raise SetupError("start", f"exec: {quoted}: {reason}")
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", name)
        if find_executable(candidate) is None:
            return candidate
    raise SetupError("start", f"exec: {quoted}: executable file not found in $PATH")
