"""The `minibuild` command line: help, flags, exit statuses, and builds through a real socket."""

import io
import os
import subprocess
import sys
import tarfile

import api_doubles
import pytest
from api_doubles import BinaryStdin, Stream, tar_of

from minibuild.cli.build import BUILD, builder_version, convert_kv_strings_to_map_with_nil
from minibuild.cli.command import Command, StatusError
from minibuild.cli.image import tabwriter
from minibuild.cli.main import CLI, run

backend, daemon = api_doubles.backend, api_doubles.daemon  # the fixtures, imported explicitly


def invoke(host: str, *argv: str, stdin: bytes = b"", env: dict | None = None) -> tuple[int, str, str]:
    cli = CLI(host, Stream(), Stream(), BinaryStdin(stdin), env or {}, clock=lambda: 2_000_000_000.0)
    code = run(list(argv), cli)
    return code, cli.stdout.getvalue(), cli.stderr.getvalue()


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nRUN echo hello\n")
    (tmp_path / "hello.txt").write_text("hi\n")
    (tmp_path / "skip.log").write_text("no\n")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    return tmp_path


# --- help and flags -------------------------------------------------------------------------------------


def test_build_help_reads_like_dockers():
    text = BUILD.help_text()
    lines = text.splitlines()
    assert lines[0] == "Usage:  minibuild build [OPTIONS] PATH | URL | -"
    assert lines[2] == "Build an image from a Dockerfile"
    assert lines[4] == "Options:"
    flag_lines = lines[5:]
    column = flag_lines[0].index("Add a custom")
    assert all(len(line) > column and line[column - 1] == " " for line in flag_lines)
    assert "  -t, --tag list" in text and "      --build-arg list" in text
    assert "Remove intermediate containers after a successful build (default true)" in text
    assert '(default "auto")' in text


def test_help_flag_and_main_help(daemon):
    code, out, _ = invoke(daemon.host, "build", "--help")
    assert code == 0 and out.startswith("Usage:  minibuild build")
    code, out, _ = invoke(daemon.host, "--help")
    assert code == 0 and "Commands:" in out and "  build       Build an image from a Dockerfile" in out
    code, out, _ = invoke(daemon.host, "builder", "prune", "--help")
    assert code == 0 and out.startswith("Usage:  minibuild builder prune")


def test_bad_flag_is_125(daemon):
    code, _, err = invoke(daemon.host, "build", "--nope", ".")
    assert code == 125
    assert err.endswith("See 'minibuild build --help'.\n")


def test_wrong_number_of_arguments(daemon):
    code, _, err = invoke(daemon.host, "build")
    assert code == 1
    assert err.startswith("\"minibuild build\" requires exactly 1 argument.\nSee 'minibuild build --help'.")


@pytest.mark.parametrize(
    ("args", "argv", "first_line"),
    [((0, 0), ["a"], '"minibuild x" accepts no arguments.'),  # NoArgs
     ((1, 1), [], '"minibuild x" requires exactly 1 argument.'),  # ExactArgs
     ((2, 2), ["a"], '"minibuild x" requires exactly 2 arguments.'),
     ((1, None), [], '"minibuild x" requires at least 1 argument.'),  # RequiresMinArgs
     ((2, None), [], '"minibuild x" requires at least 2 arguments.'),
     ((0, 1), ["a", "b"], '"minibuild x" requires at most 1 argument.'),  # RequiresMaxArgs
     ((0, 2), ["a", "b", "c"], '"minibuild x" requires at most 2 arguments.'),
     ((1, 2), [], '"minibuild x" requires at least 1 and at most 2 arguments.'),  # RequiresRangeArgs
     ((2, 3), [], '"minibuild x" requires at least 2 and at most 3 arguments.')],
)  # fmt: skip
def test_argument_count_messages_are_the_docker_clis(args, argv, first_line):
    command = Command("x", "[OPTIONS] THING", "Do a thing", lambda ns, cli: 0, args=args)
    with pytest.raises(StatusError) as err:
        command.parse(argv)
    assert err.value.code == 1
    assert err.value.status == (
        f"{first_line}\nSee 'minibuild x --help'.\n\nUsage:  minibuild x [OPTIONS] THING\n\nDo a thing"
    )


def test_import_ignores_arguments_after_the_repository(daemon, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("hello")
        tar.addfile(info, io.BytesIO(b""))
    code, out, _ = invoke(daemon.host, "import", str(rootfs), "minibuild-import:v1", "ignored")
    assert code == 0 and out.startswith("sha256:")


def test_unknown_command(daemon):
    code, _, err = invoke(daemon.host, "frobnicate")
    assert code == 1 and err.startswith("minibuild: 'frobnicate' is not a minibuild command.")


def test_invalid_tag_is_refused_before_any_request(daemon, backend, ctx):
    before = len(backend.configs)
    code, _, err = invoke(daemon.host, "build", "-t", "Golden-Upper", str(ctx))
    assert code == 125
    assert err.startswith(
        'invalid argument "Golden-Upper" for "-t, --tag" flag: invalid reference format: '
        "repository name must be lowercase"
    )
    assert len(backend.configs) == before


def test_builder_selection():
    assert builder_version("", {}) == "1"
    assert builder_version("", {"DOCKER_BUILDKIT": "1"}) == "2"
    assert builder_version("", {"DOCKER_BUILDKIT": "false"}) == "1"
    assert builder_version("buildkit", {"DOCKER_BUILDKIT": "0"}) == "2"
    with pytest.raises(StatusError, match='strconv.ParseBool: parsing "maybe": invalid syntax'):
        builder_version("", {"DOCKER_BUILDKIT": "maybe"})


def test_build_args_with_and_without_values():
    assert convert_kv_strings_to_map_with_nil(["A=1", "B", "C", "D="], {"C": "env"}) == {
        "A": "1",
        "B": None,
        "C": "env",
        "D": "",
    }


def test_tabwriter_like_go():
    assert tabwriter([["REPOSITORY", "TAG"], ["a", "latest"]]) == "REPOSITORY   TAG\na            latest\n"
    assert tabwriter([["A", "B", "C"], ["x", "y", "z"]]) == "A         B         C\nx         y         z\n"


# --- builds ---------------------------------------------------------------------------------------------


def test_build_prints_what_docker_prints(daemon, backend, ctx, tmp_path_factory):
    iid = tmp_path_factory.mktemp("out") / "iid"
    code, out, err = invoke(daemon.host, "build", "-t", "x:1", "--iidfile", str(iid), str(ctx))
    assert (code, err) == (0, "")
    lines = out.split("\n")
    assert lines[0] == "Sending build context to Docker daemon  4.096kB\r\r"
    assert lines[1:4] == ["Step 1/2 : FROM scratch", "Step 2/2 : RUN echo hello", "hello"]
    assert out.endswith("Successfully tagged x:1\n")
    assert iid.read_text().startswith("sha256:") and len(iid.read_text()) == 71
    assert sorted(backend.files[-1]) == [".dockerignore", "Dockerfile", "hello.txt"]
    options = backend.configs[-1].options
    assert (options.dockerfile, options.version, options.remove, options.network_mode) == (
        "Dockerfile",
        "1",
        True,
        "default",
    )


def test_build_flags_reach_the_daemon(daemon, backend, ctx):
    code, _, _ = invoke(
        daemon.host,
        "build", "-t", "a", "-t", "b:2", "--build-arg", "A=1", "--build-arg", "B", "--label", "l=v",
        "--target", "base", "--no-cache", "--pull", "--network", "none", "--platform", "linux/amd64",
        "--rm=false", "--force-rm", "--add-host", "h:1.2.3.4", "--cache-from", "c",
        str(ctx),
    )  # fmt: skip
    assert code == 0
    o = backend.configs[-1].options
    assert (o.tags, o.build_args, o.labels, o.target) == (
        ["a", "b:2"],
        {"A": "1", "B": None},
        {"l": "v"},
        "base",
    )
    assert (o.no_cache, o.pull_parent, o.network_mode, o.platform) == (True, True, "none", "linux/amd64")
    assert (o.remove, o.force_remove, o.extra_hosts, o.cache_from) == (True, True, ["h:1.2.3.4"], ["c"])


def test_quiet_build_prints_only_the_id(daemon, ctx):
    code, out, err = invoke(daemon.host, "build", "-q", str(ctx))
    assert code == 0 and err == ""
    assert out.startswith("sha256:") and out.endswith("\n") and out.count("\n") == 1


def test_failed_run_exits_with_its_code(daemon, ctx):
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN exit 4\n")
    code, out, err = invoke(daemon.host, "build", str(ctx))
    assert code == 4
    assert "Step 2/2 : RUN exit 4" in out
    assert err == "The command '/bin/sh -c exit 4' returned a non-zero code: 4\n"


def test_quiet_failure_shows_the_log_on_stderr(daemon, ctx):
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN echo before\nRUN exit 2\n")
    code, out, err = invoke(daemon.host, "build", "-q", str(ctx))
    assert (code, out) == (2, "")
    assert err.startswith("Sending build context to Docker daemon")
    assert "before\n" in err and err.endswith("returned a non-zero code: 2\n")


def test_daemon_refusal_is_error_response_exit_1(daemon, ctx):
    (ctx / "Dockerfile").write_text("FROM scratch\nBOGUS x\n")
    code, _, err = invoke(daemon.host, "build", str(ctx))
    assert (code, err) == (
        1,
        "Error response from daemon: dockerfile parse error line 2: unknown instruction: BOGUS\n",
    )


def test_missing_context_and_dockerfile(daemon, tmp_path):
    code, _, err = invoke(daemon.host, "build", str(tmp_path / "nope"))
    assert (code, err) == (1, f'unable to prepare context: path "{tmp_path}/nope" not found\n')
    code, _, err = invoke(daemon.host, "build", "-f", str(tmp_path / "nope.Dockerfile"), str(tmp_path))
    assert code == 1
    assert err == (
        "unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
        f"lstat {tmp_path}/nope.Dockerfile: no such file or directory\n"
    )


def test_dockerfile_from_stdin_and_context_from_stdin(daemon, backend, ctx):
    code, out, _ = invoke(daemon.host, "build", "-", stdin=b"FROM scratch\nRUN echo piped\n")
    assert code == 0 and "piped\n" in out
    assert list(backend.files[-1]) == ["Dockerfile"]
    code, out, _ = invoke(
        daemon.host, "build", "-", stdin=tar_of({"Dockerfile": b"FROM scratch\n", "x": b"1"})
    )
    assert code == 0 and sorted(backend.files[-1]) == ["Dockerfile", "x"]
    code, _, _ = invoke(daemon.host, "build", "-f", "-", str(ctx), stdin=b"FROM scratch\nRUN echo other\n")
    assert code == 0
    name = backend.configs[-1].options.dockerfile
    assert name.startswith(".dockerfile.") and backend.files[-1][name] == b"FROM scratch\nRUN echo other\n"
    code, _, err = invoke(daemon.host, "build", "-f", "-", "-")
    assert (code, err) == (1, "invalid argument: can't use stdin for both build context and dockerfile\n")


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz"])
def test_compressed_context(daemon, backend, ctx, compression):
    code, _, _ = invoke(daemon.host, "build", "--compression", compression, str(ctx))
    assert code == 0
    magic = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ"}[compression]
    assert backend.bodies[-1].startswith(magic) and "hello.txt" in backend.files[-1]
    code, _, _ = invoke(daemon.host, "build", "--compress", str(ctx))
    assert backend.bodies[-1].startswith(b"\x1f\x8b")


def test_buildkit_builds_send_version_2_and_a_build_id(daemon, backend, ctx):
    code, out, err = invoke(daemon.host, "build", "--builder", "buildkit", "--progress", "plain", str(ctx))
    assert code == 0
    o = backend.configs[-1].options
    assert o.version == "2" and len(o.build_id) == 64
    code, _, _ = invoke(daemon.host, "build", str(ctx), env={"DOCKER_BUILDKIT": "1"})
    assert backend.configs[-1].options.version == "2"


def test_uncompressed_tar_is_what_the_daemon_sees(daemon, backend, ctx):
    invoke(daemon.host, "build", str(ctx))
    with tarfile.open(fileobj=io.BytesIO(backend.bodies[-1])) as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")


# --- other commands -------------------------------------------------------------------------------------


def test_version_command(daemon):
    code, out, _ = invoke(daemon.host, "version")
    assert code == 0
    assert out.startswith("Client:\n Version:           ")
    assert "\nServer: minibuild\n Engine:\n  Version:          " in out
    assert "  API version:      1.40 (minimum version 1.12)\n" in out


def test_version_without_a_daemon(tmp_path):
    code, out, err = invoke(f"unix://{tmp_path}/none.sock", "version")
    assert code == 1 and out.startswith("Client:")
    assert (
        err
        == f"Cannot connect to the minibuild daemon at unix://{tmp_path}/none.sock. Is the daemon running?\n"
    )


def test_builder_prune(daemon, backend):
    code, out, _ = invoke(
        daemon.host, "builder", "prune", "-f", "-a", "--keep-storage", "1k", "--filter", "id=x"
    )
    assert (code, out) == (0, " Total reclaimed space: 0B\n")
    assert (backend.pruned[-1].all, backend.pruned[-1].keep_storage, backend.pruned[-1].filters) == (
        True,
        1024,
        {"id": "x"},
    )
    code, out, _ = invoke(daemon.host, "builder", "prune", stdin=b"n\n")
    assert (
        code == 0
        and out
        == "WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N] "
    )


def test_console_entry_points():
    result = subprocess.run([sys.executable, "-m", "minibuild", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("minibuild version ")
    result = subprocess.run(
        [sys.executable, "-m", "minibuild", "images", "--nope"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert result.returncode == 125


@pytest.fixture
def http_files(tmp_path):
    """A local HTTP server (no internet needed) serving files from tmp_path/www."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_contexts(daemon, backend, http_files):
    www, base = http_files
    (www / "Dockerfile").write_bytes(b"FROM scratch\nRUN echo from-url\n")
    (www / "ctx.tar").write_bytes(tar_of({"Dockerfile": b"FROM scratch\n", "a": b"1"}))
    code, out, _ = invoke(daemon.host, "build", f"{base}/Dockerfile")
    assert code == 0 and "from-url\n" in out and list(backend.files[-1]) == ["Dockerfile"]
    code, _, _ = invoke(daemon.host, "build", f"{base}/ctx.tar")
    assert code == 0 and sorted(backend.files[-1]) == ["Dockerfile", "a"]
    code, _, err = invoke(daemon.host, "build", f"{base}/missing")
    assert code == 1 and err.startswith(
        f"unable to prepare context: unable to download remote context {base}/missing"
    )
    code, _, err = invoke(daemon.host, "build", "git://example.invalid/repo.git")
    assert code == 1 and "does not clone git contexts" in err
