"""`minibuild build`'s upload progress: drawn live on a terminal, only the last line otherwise.

The docker CLI draws `Sending build context to Docker daemon  …` on stdout while the context uploads
when stdout is a terminal (each update ended by CR), and prints only the final count when it is not.
"""

import itertools
import os
import pty
import select
import subprocess
import sys

import api_doubles
import pytest
from api_doubles import BinaryStdin, Stream

from minibuild.cli.main import CLI, run

backend, daemon = api_doubles.backend, api_doubles.daemon  # the fixtures, imported explicitly
ACTION = "Sending build context to Docker daemon"
CONTEXT_SIZE = 3 * 1024 * 1024  # several 512 kB update steps


@pytest.fixture(scope="module")
def big_context(tmp_path_factory):
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big /big\n")
    (ctx / "big").write_bytes(os.urandom(CONTEXT_SIZE))
    return ctx


def progress_lines(text: str) -> list[str]:
    """The `Sending build context` updates in order, as drawn (split at CR and LF)."""
    return [part for part in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ACTION in part]


def build_in_process(host: str, ctx, *, tty: bool, quiet: bool = False) -> tuple[int, str, str]:
    ticks = itertools.count(start=1_000_000.0, step=1.0)  # every reading a second later: no rate limit
    cli = CLI(host, Stream(tty=tty), Stream(), BinaryStdin(b""), {}, clock=lambda: next(ticks))
    code = run(["build", *(["-q"] if quiet else []), str(ctx)], cli)
    return code, cli.stdout.getvalue(), cli.stderr.getvalue()


def test_progress_is_drawn_on_a_terminal(daemon, big_context):
    code, out, err = build_in_process(daemon.host, big_context, tty=True)
    assert (code, err) == (0, "")
    *updates, last = progress_lines(out)
    assert len(updates) >= CONTEXT_SIZE // (1024 * 1024)  # one about every 512 kB
    assert len(set(updates)) == len(updates) and last not in updates  # the count grows
    assert all(line + "\r" + ACTION in out for line in updates)  # each one drawn over by the next
    assert out.index(last + "\r\r\n") < out.index("Step 1/2 : FROM scratch")


def test_progress_stays_off_without_a_terminal(daemon, big_context):
    code, out, err = build_in_process(daemon.host, big_context, tty=False)
    assert (code, err) == (0, "")
    (line,) = progress_lines(out)
    assert out.startswith(line + "\r\r\n") and line.endswith("MB")


def test_quiet_build_on_a_terminal_prints_only_the_id(daemon, big_context):
    code, out, err = build_in_process(daemon.host, big_context, tty=True, quiet=True)
    assert (code, err) == (0, "")
    assert out.startswith("sha256:") and out.count("\n") == 1


def read_pty(master: int) -> bytes:
    data = b""
    while select.select([master], [], [], 60)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("stdout_is_a_tty", [True, False])
def test_minibuild_build_on_a_real_pseudo_terminal(daemon, big_context, stdout_is_a_tty):
    master, slave = pty.openpty()
    stdout = slave if stdout_is_a_tty else subprocess.PIPE
    stderr = subprocess.PIPE if stdout_is_a_tty else slave
    proc = subprocess.Popen(
        [sys.executable, "-m", "minibuild", "--host", daemon.host, "build", str(big_context)],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    os.close(slave)
    try:
        on_tty = read_pty(master).decode()
        piped = (proc.stdout or proc.stderr).read().decode()
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(master)
    out, err = (on_tty, piped) if stdout_is_a_tty else (piped, on_tty)
    assert err == ""
    assert "Successfully built" in out
    lines = progress_lines(out)
    if stdout_is_a_tty:
        assert len(lines) >= 2  # the first update passes the rate limit on any clock, then the last
    else:
        assert len(lines) == 1
