"""The RUN runtime: namespaces, root filesystem, user, output streams, cancellation, rootless."""

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minibuild.runtime import (
    ContainerError,
    ProcessSpec,
    ProcessStartError,
    Runtime,
    UserLookupError,
    explain_unavailable,
    get_exec_user,
    run,
)
from minibuild.runtime.init import DEFAULT_CAPABILITIES
from minibuild.runtime.spec import build_hosts, build_resolv_conf, create_daemon_environment

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
    "alice:x:1000:1000::/home/alice:/bin/sh\n"
)
GROUP = "root:x:0:\nwheel:x:10:root,alice\nnogroup:x:65534:\nalice:x:1000:\nstaff:x:50:alice\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="these tests run the runtime as root")
pytestmark = [pytest.mark.root, needs_root]


def make_busybox_rootfs(root: Path, *, etc: bool = True) -> Path:
    """A minimal image: the host's static busybox, its applets as relative symlinks, passwd and group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    if etc:
        for name in ("proc", "dev", "sys", "tmp", "root", "etc"):
            (root / name).mkdir()
        (root / "tmp").chmod(0o1777)
        (root / "etc/passwd").write_text(PASSWD)
        (root / "etc/group").write_text(GROUP)
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_busybox_rootfs(tmp_path / "rootfs")


class Output:
    """Collects what a step writes, chunk by chunk."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []

    def stdout(self, data: bytes) -> None:
        self.chunks.append(("out", data))

    def stderr(self, data: bytes) -> None:
        self.chunks.append(("err", data))

    def text(self, stream: str = "out") -> str:
        return b"".join(data for kind, data in self.chunks if kind == stream).decode()


def sh(rootfs: Path, script: str, **spec) -> tuple[int, Output]:
    output = Output()
    process = ProcessSpec(args=["/bin/sh", "-c", script], **spec)
    code = asyncio.run(run(rootfs, process, on_stdout=output.stdout, on_stderr=output.stderr))
    return code, output


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its mode and size (not times: /etc's mtime changes, as in Docker)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            result[str(path.relative_to(root))] = (st.st_mode, 0 if stat.S_ISDIR(st.st_mode) else st.st_size)
    return result


# --- output, exit codes ------------------------------------------------------------------------


def test_stdout_and_stderr_are_separate_and_exit_code_comes_back(rootfs):
    code, output = sh(rootfs, "echo out1; echo err1 >&2; printf 'no-newline'; exit 3")
    assert code == 3
    assert output.text("out") == "out1\nno-newline"
    assert output.text("err") == "err1\n"


def test_each_read_is_forwarded_as_it_comes_without_line_splitting(rootfs):
    chunks: list[bytes] = []

    def on_stdout(data: bytes) -> None:
        chunks.append(data)
        if data == b"a":
            (rootfs / "tmp/go").touch()  # the step waits for this before writing more

    script = "printf a; while [ ! -e /tmp/go ]; do sleep 0.01; done; printf 'b\\nc'"
    code = asyncio.run(
        run(rootfs, ProcessSpec(args=["/bin/sh", "-c", script]), on_stdout=on_stdout, on_stderr=print)
    )
    assert code == 0
    assert chunks == [b"a", b"b\nc"]


def test_async_callbacks_are_awaited(rootfs):
    seen = []

    async def on_stdout(data: bytes) -> None:
        await asyncio.sleep(0)
        seen.append(data)

    async def main() -> int:
        return await run(rootfs, ProcessSpec(args=["echo", "hi"]), on_stdout=on_stdout, on_stderr=on_stdout)

    assert asyncio.run(main()) == 0
    assert b"".join(seen) == b"hi\n"


def test_signal_exit_is_128_plus_signal(rootfs):
    marker = f"8{os.getpid():08d}"

    async def on_stdout(data: bytes) -> None:
        # PID 1 ignores signals sent from inside its namespace: kill it from the host, like the OOM killer.
        for _ in range(200):  # "ready" comes before the exec
            if pids := _processes_with(marker):
                os.kill(pids[0], 9)
                return
            await asyncio.sleep(0.05)

    spec = ProcessSpec(args=["/bin/sh", "-c", f"echo ready; exec sleep {marker}"])  # sleep is PID 1
    assert asyncio.run(run(rootfs, spec, on_stdout=on_stdout, on_stderr=print)) == 137


def test_exec_form_is_not_expanded(rootfs):
    output = Output()
    spec = ProcessSpec(args=["/bin/echo", "exec-form", "$HOME"])
    assert asyncio.run(run(rootfs, spec, on_stdout=output.stdout, on_stderr=output.stderr)) == 0
    assert output.text() == "exec-form $HOME\n"


def test_concurrent_steps(tmp_path):
    async def one(i: int) -> tuple[int, str]:
        output = Output()
        rootfs = make_busybox_rootfs(tmp_path / f"rootfs{i}")  # each step has its own snapshot
        code = await run(
            rootfs,
            ProcessSpec(args=["sh", "-c", f"echo {i}; exit {i}"]),
            on_stdout=output.stdout,
            on_stderr=print,
        )
        return code, output.text()

    async def main() -> list[tuple[int, str]]:
        return await asyncio.gather(*(one(i) for i in range(6)))

    assert asyncio.run(main()) == [(i, f"{i}\n") for i in range(6)]


# --- process environment ---------------------------------------------------------------------


def test_environment_pid_namespace_and_hostname(rootfs):
    script = "echo $$; hostname; "
    script += "echo $HOSTNAME; echo $PATH; echo $HOME; echo $FOO; pwd; cat /proc/1/cmdline | tr '\\0' ' '"
    code, output = sh(rootfs, script, env=["FOO=bar baz"], hostname="0123456789ab")
    assert code == 0
    lines = output.text().splitlines()
    assert lines[0] == "1"  # PID 1 of its own namespace
    assert lines[1:3] == ["0123456789ab", "0123456789ab"]
    assert lines[3] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[4:7] == ["/root", "bar baz", "/"]
    assert lines[7].startswith("/bin/sh -c echo $$")


def test_daemon_environment_keeps_image_path_and_adds_hostname():
    assert create_daemon_environment(["PATH=/x", "A=1"], "h") == ["HOSTNAME=h", "PATH=/x", "A=1"]
    assert create_daemon_environment([], "h")[0].startswith("PATH=/usr/local/sbin:")


def test_working_directory_is_created_when_missing(rootfs):
    code, output = sh(rootfs, "pwd", cwd="/app/src")
    assert (code, output.text()) == (0, "/app/src\n")
    st = (rootfs / "app/src").stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0


def test_devices_and_special_filesystems(rootfs):
    script = textwrap.dedent(
        """
        ls /dev | tr '\\n' ' '; echo
        head -c 4 /dev/zero | od -An -tx1
        echo x > /dev/null && echo null-ok
        grep -E ' /(proc|sys|dev|dev/shm|dev/pts|proc/sys) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1
        grep CapBnd /proc/self/status
        """
    )
    code, output = sh(rootfs, script)
    assert code == 0, output.text("err")
    lines = output.text().splitlines()
    expected = {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "ptmx"}
    assert expected <= set(lines[0].split())
    assert lines[1].split() == ["00"] * 4
    assert lines[2] == "null-ok"
    mounts = {line.split()[0]: line.split()[1:] for line in lines[3:-1]}
    assert mounts["/proc"] == ["proc", "rw"]
    assert mounts["/sys"] == ["sysfs", "ro"]
    assert mounts["/dev"] == ["tmpfs", "rw"]
    assert mounts["/dev/shm"] == ["tmpfs", "rw"]
    assert mounts["/dev/pts"] == ["devpts", "rw"]
    assert mounts["/proc/sys"][1] == "ro"
    assert int(lines[-1].split()[1], 16) == sum(1 << cap for cap in DEFAULT_CAPABILITIES)


def test_private_network_has_only_loopback_up(rootfs):
    code, output = sh(rootfs, "cat /proc/net/dev | tail -n +3 | cut -d: -f1; cat /sys/class/net/lo/operstate")
    assert code == 0
    interfaces = output.text().split()
    assert interfaces[:-1] == ["lo"]
    assert interfaces[-1] in ("unknown", "up")  # lo reports "unknown" when up


def test_host_network_sees_the_hosts_interfaces(rootfs):
    host_interfaces = sorted(os.listdir("/sys/class/net"))
    code, output = sh(rootfs, "ls /sys/class/net", network_mode="host")
    assert code == 0
    assert sorted(output.text().split()) == host_interfaces


def test_unknown_network_is_refused_like_docker(rootfs):
    with pytest.raises(ProcessStartError, match="^network bogusnet not found$"):
        sh(rootfs, "true", network_mode="bogusnet")


def test_etc_hosts_resolv_conf_hostname(rootfs):
    code, output = sh(
        rootfs,
        "cat /etc/hosts; echo ---; cat /etc/hostname; echo ---; cat /etc/resolv.conf",
        hostname="c0ffee",
        extra_hosts=["db:10.0.0.5", "v6:fe80::1"],
    )
    assert code == 0
    hosts, hostname, resolv = output.text().split("---\n")
    assert hosts.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert hosts.endswith("10.0.0.5\tdb\nfe80::1\tv6\n")
    assert hostname == "c0ffee\n"
    assert resolv == build_resolv_conf("private")


def test_resolv_conf_drops_localhost_nameservers(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("search example.org\nnameserver 127.0.0.53\nnameserver ::1\n")
    assert (
        build_resolv_conf("private", host) == "search example.org\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    )
    host.write_text("nameserver 127.0.0.53\nnameserver 10.1.1.1\n")
    assert build_resolv_conf("private", host) == "nameserver 10.1.1.1\n"
    assert build_resolv_conf("host", host) == host.read_text()


def test_bad_extra_host_is_refused():
    with pytest.raises(ContainerError, match='invalid IP address in add-host: "nope"'):
        build_hosts(["db:nope"], "private")


def test_mount_points_and_etc_files_are_not_left_in_the_rootfs(tmp_path):
    bare = make_busybox_rootfs(tmp_path / "bare", etc=False)  # no /proc, /dev, /sys, /etc at all
    before = tree(bare)
    code, output = sh(bare, "ls -d /proc /dev /sys /etc/hosts && echo hi > /out")
    assert code == 0, output.text("err")
    after = tree(bare)
    assert set(after) - set(before) == {"out"}

    with_etc = make_busybox_rootfs(tmp_path / "with-etc")
    before = tree(with_etc)
    assert sh(with_etc, "cat /etc/hosts >/dev/null")[0] == 0
    assert tree(with_etc) == before


def test_step_keeps_what_it_writes_next_to_created_mount_points(tmp_path):
    bare = make_busybox_rootfs(tmp_path / "bare", etc=False)
    assert sh(bare, "echo x > /etc/motd")[0] == 0
    assert sorted(os.listdir(bare / "etc")) == ["motd"]


# --- users ------------------------------------------------------------------------------------


def test_user_by_name_uid_and_groups(rootfs):
    cases = {
        "": "uid=0(root) gid=0(root) groups=0(root),10(wheel)",
        "nobody": "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)",
        "alice": "uid=1000(alice) gid=1000(alice) groups=10(wheel),50(staff),1000(alice)",  # kernel-sorted
        "alice:staff": "uid=1000(alice) gid=50(staff) groups=50(staff)",
        "1234:5678": "uid=1234 gid=5678 groups=5678",
    }
    for user, expected in cases.items():
        code, output = sh(rootfs, "id", user=user)
        assert (code, output.text().strip()) == (0, expected), user


def test_unknown_user_fails_with_dockers_message(rootfs):
    with pytest.raises(ProcessStartError) as info:
        sh(rootfs, "true", user="nobody2")
    assert str(info.value) == "unable to find user nobody2: no matching entries in passwd file"
    with pytest.raises(
        ProcessStartError, match="^unable to find group nogroup2: no matching entries in group file$"
    ):
        sh(rootfs, "true", user="nobody:nogroup2")


def test_get_exec_user_follows_runc():
    user = get_exec_user("", PASSWD, GROUP)
    assert (user.uid, user.gid, user.sgids, user.home) == (0, 0, [10], "/root")
    user = get_exec_user("4242", PASSWD, GROUP)
    assert (user.uid, user.gid, user.sgids, user.home) == (4242, 0, [], "/")
    user = get_exec_user("alice:0", PASSWD, GROUP)
    assert (user.uid, user.gid, user.sgids) == (1000, 0, [])
    assert get_exec_user("7:8", None, None).uid == 7  # no passwd file: only numbers can be resolved
    with pytest.raises(UserLookupError, match="unable to find user root: no matching entries in passwd file"):
        get_exec_user("root", None, None)
    with pytest.raises(UserLookupError, match="uids and gids must be in range 0-2147483647"):
        get_exec_user("-1", PASSWD, GROUP)


def test_home_defaults_to_slash_without_a_passwd_entry(rootfs):
    code, output = sh(rootfs, "echo $HOME", user="4242")
    assert (code, output.text()) == (0, "/\n")


# --- failures to start ------------------------------------------------------------------------


def test_from_scratch_has_no_shell(tmp_path):
    empty = tmp_path / "scratch"
    empty.mkdir()
    with pytest.raises(ProcessStartError) as info:
        sh(empty, "true")
    assert str(info.value) == (
        "failed to create shim task: OCI runtime create failed: runc create failed: unable to start "
        'container process: exec: "/bin/sh": stat /bin/sh: no such file or directory: unknown'
    )
    assert os.listdir(empty) == []  # the mount points made for the attempt are gone again


def test_command_not_in_path(rootfs):
    with pytest.raises(ProcessStartError, match=r'exec: "nosuchcmd": executable file not found in \$PATH'):
        asyncio.run(run(rootfs, ProcessSpec(args=["nosuchcmd"]), on_stdout=print, on_stderr=print))


def test_exec_format_error_is_the_process_output(rootfs):
    script = rootfs / "bin/not-elf"
    script.write_bytes(b"\x7fELF-not-really")
    script.chmod(0o755)
    output = Output()
    code = asyncio.run(
        run(rootfs, ProcessSpec(args=["/bin/not-elf"]), on_stdout=output.stdout, on_stderr=output.stderr)
    )
    assert code == 1
    assert output.text("err") == "exec /bin/not-elf: exec format error\n"


def test_a_setup_failure_is_reported_and_cleaned_up(tmp_path):
    broken = make_busybox_rootfs(tmp_path / "broken", etc=False)
    (broken / "etc").write_text("a file where /etc/hosts must go")
    with pytest.raises(ContainerError, match="^lstat /etc/hosts: not a directory$"):
        sh(broken, "true")
    assert sorted(os.listdir(broken)) == ["bin", "etc"]  # /proc, /dev, /sys made for it are gone


def test_missing_rootfs_is_a_clear_error(tmp_path):
    with pytest.raises(ContainerError, match="is not a directory"):
        sh(tmp_path / "nope", "true")


# --- cancellation -----------------------------------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    """Host pids of `sleep <marker>` processes."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_cancelling_kills_the_whole_process_tree(rootfs):
    marker = f"9{os.getpid():08d}"  # a unique sleep time to find the processes by

    async def main() -> None:
        started = asyncio.Event()

        def on_stdout(data: bytes) -> None:
            if b"started" in data:
                started.set()

        script = f"(sleep {marker} &); sleep {marker} & echo started; wait"
        task = asyncio.create_task(
            run(rootfs, ProcessSpec(args=["/bin/sh", "-c", script]), on_stdout=on_stdout, on_stderr=print)
        )
        await started.wait()
        for _ in range(200):  # the background subshell may not have exec'd its sleep yet
            if len(_processes_with(marker)) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(_processes_with(marker)) == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _processes_with(marker) == []  # gone before run() returned

    asyncio.run(main())
    assert not (rootfs / "etc/hosts").exists()


def test_a_failing_callback_kills_the_step(rootfs):
    def on_stdout(data: bytes) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        asyncio.run(
            run(
                rootfs,
                ProcessSpec(args=["sh", "-c", "echo x; sleep 1000"]),
                on_stdout=on_stdout,
                on_stderr=print,
            )
        )


def test_zygote_is_restarted_when_it_died(rootfs):
    runtime = Runtime()
    try:
        spec = ProcessSpec(args=["true"])
        assert asyncio.run(runtime.run(rootfs, spec, on_stdout=print, on_stderr=print)) == 0
        runtime._zygote.kill()
        runtime._zygote.wait()
        assert asyncio.run(runtime.run(rootfs, spec, on_stdout=print, on_stderr=print)) == 0
    finally:
        runtime.close()


def test_mounted_holds_mounts_open_for_the_host(rootfs, tmp_path):
    runtime = Runtime()
    target = tmp_path / "target"
    target.mkdir()
    try:
        from minibuild.runtime import Mount

        with runtime.mounted(target, [Mount(type="bind", source=str(rootfs), options=("rbind",))]) as view:
            assert (view / "etc/passwd").read_text() == PASSWD
            (view / "tmp/written-through").write_text("x")
            assert os.listdir(target) == []  # the host's namespace has no mount
        assert (rootfs / "tmp/written-through").read_text() == "x"
    finally:
        runtime.close()


# --- where namespaces are missing, and rootless ----------------------------------------------


def test_explain_unavailable_names_the_cause():
    message = explain_unavailable("user namespace", 28)
    assert message.startswith(
        "RUN needs a user namespace when minibuild is not root, and creating one failed"
    )
    assert message.count(".") <= 2 and message.endswith("run minibuild as root")
    assert "root" in explain_unavailable("namespaces", 1)


ROOTLESS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from minibuild.runtime import ProcessSpec, run

    out = []
    async def main():
        spec = ProcessSpec(args=["sh", "-c", sys.argv[2]], user=sys.argv[3])
        try:
            code = await run(Path(sys.argv[1]), spec, on_stdout=out.append, on_stderr=out.append)
            print(json.dumps({"code": code, "out": b"".join(out).decode()}))
        except Exception as err:
            print(json.dumps({"error": type(err).__name__, "message": str(err)}))
    asyncio.run(main())
    """
)


def _world_readable_rootfs() -> Path:
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"minibuild-rootless-{os.getpid()}-{time.monotonic_ns()}"
    base.mkdir(mode=0o755)
    make_busybox_rootfs(base / "rootfs")
    subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
    return base


NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]


def _python_for_nobody(setpriv: str) -> str:
    """An interpreter (3.11+) the unprivileged user can run, and re-run for the zygote."""
    check = (
        "import subprocess, sys; assert sys.version_info >= (3, 11); "
        "subprocess.run([sys.executable, '-c', '1'], check=True)"
    )
    for python in dict.fromkeys([sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"]):
        if subprocess.run([setpriv, *NOBODY, python, "-c", check], capture_output=True).returncode == 0:
            return python
    pytest.skip("the unprivileged user cannot run a Python 3.11 interpreter here")


def _run_as_nobody(rootfs: Path, script: str, user: str = "", *, prefix: list[str] | None = None) -> dict:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop to an unprivileged user")
    argv = [setpriv, *NOBODY, _python_for_nobody(setpriv), "-c", ROOTLESS_SCRIPT]
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME="/tmp")
    result = subprocess.run(
        (prefix or []) + argv + [str(rootfs), script, user],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _unprivileged_userns_allowed() -> bool:
    probe = subprocess.run(["setpriv", *NOBODY, "unshare", "-r", "true"], capture_output=True)
    return probe.returncode == 0


def test_rootless_runs_in_a_user_namespace_as_mapped_root():
    if not _unprivileged_userns_allowed():
        pytest.skip("this machine does not allow unprivileged user namespaces")
    base = _world_readable_rootfs()
    try:
        result = _run_as_nobody(
            base / "rootfs", "id -u; cat /proc/self/uid_map; echo $$; cat /etc/hosts | head -1"
        )
        assert result.get("code") == 0, result
        lines = result["out"].splitlines()
        assert lines[0] == "0"
        assert lines[1].split() == ["0", "65534", "1"]
        assert lines[2:] == ["1", "127.0.0.1\tlocalhost"]
        assert not (base / "rootfs/etc/hosts").exists()

        refused = _run_as_nobody(base / "rootfs", "true", "alice")
        assert refused["error"] == "ContainerError"
        assert "only root mapped" in refused["message"]
    finally:
        shutil.rmtree(base)


def test_no_user_namespaces_gives_one_clear_sentence():
    """Run as an unprivileged user inside a user namespace whose user.max_user_namespaces is 0."""
    base = _world_readable_rootfs()
    helper = textwrap.dedent(
        """
        import os, sys
        from minibuild.runtime import linux
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
            os.execv(sys.argv[1], sys.argv[1:])
        os.read(ready_r, 1)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("0 0 65536")
        os.write(go_w, b"x")
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    try:
        result = _run_as_nobody(base / "rootfs", "true", prefix=[sys.executable, "-c", helper])
        assert result["error"] == "RuntimeUnavailableError", result
        assert result["message"] == (
            "RUN needs a user namespace when minibuild is not root, and creating one failed (no space left "
            "on device): user namespaces are disabled (sysctl user.max_user_namespaces=0); allow them or "
            "run minibuild as root"
        )
    finally:
        shutil.rmtree(base)
