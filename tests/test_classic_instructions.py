"""What each instruction does to the image the classic builder commits: its config, its history and
its filesystem (moby builder/dockerfile/dispatchers.go behaviour, reference §5.4 (e) and §7.2).

The builds are data (`CASES`, by name): tests/test_next_differential.py builds every one of them with
the BuildKit-style builder too, and compares the images.
"""

import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import Any

import pytest
from golden.harness import BuildBench

from minibuild.image.service import DOCKER_VERSION

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Case:
    """One build: a Dockerfile with its context files and build options, or a raw context `body`;
    `before` names the cases to build first (a base image they tag)."""

    dockerfile: str
    files: dict[str, bytes] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None
    before: tuple[str, ...] = ()


def _symlinks_context(dockerfile: bytes) -> bytes:
    """A context with a file, a symlink to it, and an absolute symlink leading out of the context."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("real", b"real\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (("link", "real"), ("absolute", "/etc/hostname")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _climbing_out_context() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(info)
    return buf.getvalue()


def _xz_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo("inner/file.txt")
        info.size, info.uid, info.gid = 3, 5, 6
        tar.addfile(info, io.BytesIO(b"in\n"))
    return buf.getvalue()


METADATA = """FROM busybox:local
ARG VERSION=1.0
ARG UNSET
ENV APP_VERSION=$VERSION APP_HOME=/app
LABEL org.example.version=$VERSION maintainer="golden team"
WORKDIR $APP_HOME
COPY hello.txt .
RUN echo golden-e version=$VERSION home=$APP_HOME pwd=$(pwd) > /app/built.txt
USER 1000:1000
EXPOSE 8080/tcp 9090
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
"""
ARG_SCOPING = """ARG GLOBAL=g
FROM busybox:local AS one
ARG LOCAL=l1
ARG GLOBAL
RUN echo "one: $LOCAL $GLOBAL" > /one.txt
FROM busybox:local
ARG LOCAL
RUN echo "two: [$LOCAL] [$GLOBAL]" > /two.txt
COPY --from=one /one.txt /one.txt
"""
COPY_DESTINATIONS = """FROM busybox:local
WORKDIR /w
COPY f.txt renamed.txt
COPY f.txt into/
COPY f.txt /tmp
COPY dir /copied
COPY dir/ /copied2/
COPY x*.md /md/
COPY ./f.txt rel
"""
COPY_CHOWN = """FROM busybox:local
COPY --chown=nobody:www-data f.txt /named.txt
COPY --chown=1234 f.txt /numeric.txt
COPY --chmod=0751 --chown=1:2 dir /d/
"""
COPY_FROM = """FROM busybox:local AS first
RUN mkdir /out && echo owned > /out/f && chown 7:8 /out/f
FROM busybox:local
COPY --from=first /out/f /by-name
COPY --from=0 /out/f /by-index
COPY --from=busybox:local /etc/passwd /passwd-from-image
COPY --from=first --chown=1:1 /out/f /chowned
"""
EXPOSE_ERRORS = {"abc": "Invalid containerPort: abc", "80/bogus": "Invalid proto: bogus",
                 "70000": "Invalid containerPort: 70000"}  # fmt: skip
COPY_FROM_ERRORS = {"nostage": "invalid from flag value nostage: ",
                    "1": "invalid from flag value 1: refers to current build stage",
                    "5": "invalid from flag value 5: index out of bounds"}  # fmt: skip
NETWORK_MODES = {"none": None, "host": None, "container:nope": "No such container: nope"}

CASES: dict[str, Case] = {
    "metadata-reference": Case(METADATA, {"hello.txt": b"hello\n"}, {"build_args": {"VERSION": "2.0"}}),
    "every-step": Case("FROM busybox:local\nENV A=1\nRUN true\nLABEL x=y\n"),
    "env-replaces": Case('FROM busybox:local\nENV A=1 B=2\nENV A=3 C="$A-$B"\n'),
    "env-old-form": Case("FROM busybox:local\nENV PATH /bin\nENV X y z\n"),
    "label-merges": Case("FROM busybox:local\nLABEL a=1 b=2\nLABEL b=3\n", options={"labels": {"a": "q"}}),
    "workdir": Case("FROM busybox:local\nWORKDIR /a\nWORKDIR b/../c\nRUN pwd > /pwd.txt\n"),
    "user": Case("FROM busybox:local\nUSER nobody\nRUN id -u > /tmp/uid; id -un\n"),
    "unknown-user": Case("FROM busybox:local\nUSER nobody2\nRUN true\n"),
    "cmd-shell-form": Case("FROM busybox:local\nCMD echo hi\n"),
    "entrypoint-drops-cmd": Case('FROM busybox:local\nENTRYPOINT ["/bin/echo"]\n'),
    "cmd-then-entrypoint": Case('FROM busybox:local\nCMD ["x"]\nENTRYPOINT /bin/echo\n'),
    "expose": Case('FROM busybox:local\nENV PORTS="80 443/udp"\nEXPOSE $PORTS 7000-7002/tcp\n'),
    **{f"expose-{port}": Case(f"FROM busybox:local\nEXPOSE {port}\n") for port in EXPOSE_ERRORS},
    "volume": Case('FROM busybox:local\nVOLUME /a /b\nVOLUME ["/c"]\n'),
    "stopsignal": Case("FROM busybox:local\nSTOPSIGNAL 9\n"),
    "stopsignal-bogus": Case("FROM busybox:local\nSTOPSIGNAL SIGBOGUS\n"),
    "healthcheck": Case(
        "FROM busybox:local\nHEALTHCHECK --retries=3 --start-period=1m30s CMD ["
        '"check"]\nHEALTHCHECK CMD other\nHEALTHCHECK NONE\n'
    ),
    "shell": Case('FROM busybox:local\nSHELL ["/bin/sh", "-xc"]\nRUN echo shelled\nENV A=1\n'),
    "maintainer": Case("FROM busybox:local\nMAINTAINER Golden Team <g@example.org>\n"),
    "onbuild-parent": Case(
        "FROM busybox:local\nONBUILD RUN echo triggered > /trigger.txt\nONBUILD ENV FROM_TRIGGER=1\n",
        options={"tags": ["golden-onbuild:latest"]},
    ),
    "onbuild-child": Case("FROM golden-onbuild\nRUN cat /trigger.txt\n", before=("onbuild-parent",)),
    "arg-scoping": Case(ARG_SCOPING),
    "arg-scoping-cli": Case(ARG_SCOPING, options={"build_args": {"LOCAL": "cli", "GLOBAL": "G"}}),
    "build-args-in-run": Case(
        "FROM busybox:local\nARG A\nRUN echo a=$A proxy=$HTTP_PROXY > /args.txt\n",
        options={"build_args": {"A": "1", "HTTP_PROXY": "http://proxy:3128"}},
    ),
    "run-exec-form": Case('FROM busybox:local\nRUN ["/bin/echo", "exec-form", "$HOME"]\nRUN echo $HOME\n'),
    "copy-destinations": Case(
        COPY_DESTINATIONS,
        {"f.txt": b"file\n", "dir/sub/a.txt": b"a\n", "dir/b.txt": b"b\n", "x1.md": b"1", "x2.md": b"2"},
    ),
    "copy-several-sources": Case("FROM busybox:local\nCOPY a b /dest\n", {"a": b"", "b": b""}),
    "copy-wildcard-matching-nothing": Case("FROM busybox:local\nCOPY nope*.txt /\n"),
    "add-missing-source": Case("FROM busybox:local\nADD nope.txt /\n"),
    "copy-missing-source": Case("FROM busybox:local\nCOPY nope.txt /\n"),
    "copy-chown-chmod": Case(COPY_CHOWN, {"f.txt": b"f", "dir/x": b"x"}),
    "copy-chown-unknown-user": Case("FROM busybox:local\nCOPY --chown=nobody2 f /f\n", {"f": b""}),
    "copy-from-stage-index-image": Case(COPY_FROM),
    **{
        f"copy-from-{source}": Case(
            f"FROM busybox:local AS a\nFROM busybox:local\nCOPY --from={source} /x /x\n"
        )
        for source in COPY_FROM_ERRORS
    },
    "dockerignore-not-applied": Case(
        "FROM busybox:local\nCOPY . /ctx/\n",
        {".dockerignore": b"ignored.txt\nDockerfile\n", "ignored.txt": b"still here\n"},
    ),
    "copy-symlink": Case("", body=_symlinks_context(b"FROM busybox:local\nCOPY link /copied\n")),
    "copy-absolute-symlink": Case(
        "", body=_symlinks_context(b"FROM busybox:local\nCOPY absolute /escaped\n")
    ),
    "context-symlink-climbing-out": Case("", body=_climbing_out_context()),
    "add-archive": Case(
        "FROM busybox:local\nADD a.tar.xz /x/\nCOPY a.tar.xz /y/\n", {"a.tar.xz": _xz_archive()}
    ),
    "from-scratch-and-stage": Case(
        "FROM scratch AS files\nCOPY f /f\nFROM files\nENV X=1\n", {"f": b"scratch"}
    ),
    "from-platform-scratch": Case("FROM --platform=linux/arm64 scratch\nCOPY f /f\n", {"f": b"x"}),
    "heredoc": Case("FROM busybox:local\nRUN <<EOF\necho hi\nEOF\n"),
    "parse-warning": Case("FROM busybox:local\nRUN echo a \\\n\n    && echo b\n"),
    "run-hostname": Case("FROM busybox:local\nRUN hostname\n", options={"no_cache": True}),
    **{
        f"network-{mode}": Case(
            "FROM busybox:local\nRUN echo net\n", options={"network_mode": mode, "no_cache": True}
        )
        for mode in NETWORK_MODES
    },
    "extra-hosts": Case(
        "FROM busybox:local\nRUN grep golden-host /etc/hosts\n",
        options={"extra_hosts": ["golden-host:10.1.2.3"]},
    ),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return BuildBench(tmp_path_factory.mktemp("root"))


def build(bench, name: str):
    """Build CASES[name] (and what it needs first) with the classic builder."""
    case = CASES[name]
    for first in case.before:
        build(bench, first).ok()
    return bench.build(case.dockerfile, case.files, body=case.body, **case.options)


def created_by(bench, image_id):
    return [entry.get("created_by", "") for entry in bench.config(image_id)["history"]]


def test_metadata_reference_example(bench):
    """Reference §5.4 (e): the final Config, and the history lines of §7.2."""
    built = build(bench, "metadata-reference")
    image_id = built.ok()
    config = bench.config(image_id)
    c = config["config"]
    assert c["User"] == "1000:1000"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "9090/tcp": {}}
    assert c["Env"] == [DEFAULT_PATH, "APP_VERSION=2.0", "APP_HOME=/app"]
    assert c["Cmd"] == ["echo hello"]
    assert c["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 30_000_000_000,
        "Timeout": 3_000_000_000,
    }
    assert c["Volumes"] == {"/data": {}}
    assert c["WorkingDir"] == "/app"
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["OnBuild"] is None
    assert c["Labels"] == {"maintainer": "golden team", "org.example.version": "2.0"}
    assert c["StopSignal"] == "SIGTERM"
    assert c["Image"] == bench.service.image_store.get_parent(image_id)
    cc = config["container_config"]
    assert cc["Cmd"] == ["/bin/sh", "-c", "#(nop) ", 'CMD ["echo hello"]']
    assert cc["Hostname"] == config["container"][:12] and len(config["container"]) == 64
    assert config["docker_version"] == DOCKER_VERSION
    history = created_by(bench, image_id)[1:]  # after busybox's own entry
    assert history[0] == "/bin/sh -c #(nop)  ARG VERSION=1.0"
    assert history[2] == "/bin/sh -c #(nop)  ENV APP_VERSION=2.0 APP_HOME=/app"
    assert history[3] == "/bin/sh -c #(nop)  LABEL org.example.version=2.0 maintainer=golden team"
    assert history[4] == "/bin/sh -c #(nop) WORKDIR /app"
    assert history[5].startswith("/bin/sh -c #(nop) COPY file:") and history[5].endswith(" in . ")
    assert (
        history[6] == "|1 VERSION=2.0 /bin/sh -c echo golden-e version=$VERSION home=$APP_HOME pwd=$(pwd) > "
        "/app/built.txt"
    )
    assert history[7:] == [
        "/bin/sh -c #(nop)  USER 1000:1000",
        "/bin/sh -c #(nop)  EXPOSE 8080/tcp 9090",
        "/bin/sh -c #(nop)  VOLUME [/data]",
        "/bin/sh -c #(nop)  STOPSIGNAL SIGTERM",
        """/bin/sh -c #(nop)  HEALTHCHECK &{["CMD-SHELL" "true"] "30s" "3s" "0s" '\\x00'}""",
        '/bin/sh -c #(nop)  ENTRYPOINT ["/bin/sh" "-c"]',
        '/bin/sh -c #(nop)  CMD ["echo hello"]',
    ]
    empty = [bool(e.get("empty_layer")) for e in config["history"][1:]]
    assert empty == [True, True, True, True, False, False, False, True, True, True, True, True, True, True]
    assert len(config["rootfs"]["diff_ids"]) == 1 + 3  # busybox, WORKDIR, COPY, RUN
    tree = bench.tree(image_id, bench.data_root / "tree-e")
    assert (tree / "app/built.txt").read_text() == "golden-e version=2.0 home=/app pwd=/app\n"
    assert (tree / "app/hello.txt").read_bytes() == b"hello\n"


def test_every_step_is_an_image_in_the_store(bench):
    built = build(bench, "every-step")
    ids = [m.group(1) for t in built.texts if (m := re.fullmatch(r" ---> ([0-9a-f]{12})\n", t))]
    assert len(ids) == 4
    for short in ids:
        assert bench.service.get_image(short).id.startswith("sha256:" + short)
    parents = [bench.service.image_store.get_parent(bench.service.get_image(i).id) for i in ids[1:]]
    assert parents == [bench.service.get_image(i).id for i in ids[:-1]]


def test_env_replaces_existing_keys_and_expands(bench):
    image_id = build(bench, "env-replaces").ok()
    assert bench.config(image_id)["config"]["Env"] == [DEFAULT_PATH, "A=3", "B=2", "C=1-2"]


def test_env_old_form_and_path_override(bench):
    image_id = build(bench, "env-old-form").ok()
    assert bench.config(image_id)["config"]["Env"] == ["PATH=/bin", "X=y z"]


def test_label_merges_and_query_labels_win(bench):
    built = build(bench, "label-merges")
    assert bench.config(built.ok())["config"]["Labels"] == {"a": "q", "b": "3"}
    assert "Step 4/4 : LABEL a=q" in built.texts


def test_workdir_is_relative_created_and_used_by_run(bench):
    built = build(bench, "workdir")
    image_id = built.ok()
    assert bench.config(image_id)["config"]["WorkingDir"] == "/a/c"
    tree = bench.tree(image_id, bench.data_root / "tree-workdir")
    assert (tree / "pwd.txt").read_text() == "/a/c\n"
    assert stat.S_IMODE(os.stat(tree / "a/c").st_mode) == 0o755
    assert created_by(bench, image_id)[-2] == "/bin/sh -c #(nop) WORKDIR /a/c"


def test_user_applies_to_run(bench):
    built = build(bench, "user")
    image_id = built.ok()
    assert "nobody\n" in built.output
    tree = bench.tree(image_id, bench.data_root / "tree-user")
    assert (tree / "tmp/uid").read_text() == "65534\n"


def test_unknown_user_fails_when_run_starts(bench):
    built = build(bench, "unknown-user")
    assert str(built.error) == "unable to find user nobody2: no matching entries in passwd file"


def test_cmd_and_entrypoint_forms(bench):
    image_id = build(bench, "cmd-shell-form").ok()
    assert bench.config(image_id)["config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    # a new ENTRYPOINT drops the base image's CMD (busybox has CMD ["sh"])...
    image_id = build(bench, "entrypoint-drops-cmd").ok()
    assert bench.config(image_id)["config"]["Cmd"] is None
    # ...but not a CMD given in the same stage
    image_id = build(bench, "cmd-then-entrypoint").ok()
    c = bench.config(image_id)["config"]
    assert c["Cmd"] == ["x"] and c["Entrypoint"] == ["/bin/sh", "-c", "/bin/echo"]
    assert created_by(bench, image_id)[-1] == '/bin/sh -c #(nop)  ENTRYPOINT ["/bin/sh" "-c" "/bin/echo"]'


def test_expose_ranges_protocols_and_expansion(bench):
    built = build(bench, "expose")
    ports = bench.config(built.ok())["config"]["ExposedPorts"]
    assert ports == {"80/tcp": {}, "443/udp": {}, "7000/tcp": {}, "7001/tcp": {}, "7002/tcp": {}}
    # the words are sorted as written ($PORTS first), then expanded in place
    assert created_by(bench, built.image_id)[-1] == "/bin/sh -c #(nop)  EXPOSE 80 443/udp 7000-7002/tcp"


@pytest.mark.parametrize(("port", "message"), EXPOSE_ERRORS.items())
def test_expose_errors(bench, port, message):
    assert str(build(bench, f"expose-{port}").error) == message


def test_volume_forms(bench):
    image_id = build(bench, "volume").ok()
    assert bench.config(image_id)["config"]["Volumes"] == {"/a": {}, "/b": {}, "/c": {}}
    assert created_by(bench, image_id)[-2] == "/bin/sh -c #(nop)  VOLUME [/a /b]"


def test_stopsignal(bench):
    image_id = build(bench, "stopsignal").ok()
    assert bench.config(image_id)["config"]["StopSignal"] == "9"
    assert str(build(bench, "stopsignal-bogus").error) == "Invalid signal: SIGBOGUS"


def test_healthcheck_none_and_override_note(bench):
    built = build(bench, "healthcheck")
    image_id = built.ok()
    assert bench.config(image_id)["config"]["Healthcheck"] == {"Test": ["NONE"]}
    assert "Note: overriding previous HEALTHCHECK: [CMD check]\n" in built.texts
    history = created_by(bench, image_id)
    assert history[-3] == """/bin/sh -c #(nop)  HEALTHCHECK &{["CMD" "check"] "0s" "0s" "1m30s" '\\x03'}"""


def test_shell_changes_run_and_the_nop_comment(bench):
    built = build(bench, "shell")
    image_id = built.ok()
    assert built.stderr == "+ echo shelled\n" and "shelled\n" in built.texts
    assert bench.config(image_id)["config"]["Shell"] == ["/bin/sh", "-xc"]
    history = created_by(bench, image_id)
    assert history[-3:] == [
        "/bin/sh -xc #(nop)  SHELL [/bin/sh -xc]",  # committed with the shell it sets, as in Docker
        "/bin/sh -xc echo shelled",
        "/bin/sh -xc #(nop)  ENV A=1",
    ]


def test_maintainer_sets_the_author(bench):
    image_id = build(bench, "maintainer").ok()
    config = bench.config(image_id)
    assert config["author"] == "Golden Team <g@example.org>"
    assert config["history"][-1]["author"] == "Golden Team <g@example.org>"


def test_onbuild_is_stored_and_triggered_in_children(bench):
    parent = build(bench, "onbuild-parent").ok()
    assert bench.config(parent)["config"]["OnBuild"] == [
        "RUN echo triggered > /trigger.txt",
        "ENV FROM_TRIGGER=1",
    ]
    child = build(bench, "onbuild-child")
    image_id = child.ok()
    texts = child.texts
    assert texts[2] == "# Executing 2 build triggers\n"
    assert "triggered\n" in texts
    config = bench.config(image_id)["config"]
    assert config["OnBuild"] is None and "FROM_TRIGGER=1" in config["Env"]


def test_arg_scoping_defaults_and_meta_args(bench):
    image_id = build(bench, "arg-scoping").ok()
    tree = bench.tree(image_id, bench.data_root / "tree-args")
    assert (tree / "one.txt").read_text() == "one: l1 g\n"
    assert (tree / "two.txt").read_text() == "two: [] []\n"
    image_id = build(bench, "arg-scoping-cli").ok()
    tree = bench.tree(image_id, bench.data_root / "tree-args-cli")
    assert (tree / "one.txt").read_text() == "one: cli G\n"
    assert (tree / "two.txt").read_text() == "two: [cli] []\n"


def test_build_args_are_in_the_run_env_and_history_but_not_the_config(bench):
    built = build(bench, "build-args-in-run")
    image_id = built.ok()
    tree = bench.tree(image_id, bench.data_root / "tree-buildargs")
    assert (tree / "args.txt").read_text() == "a=1 proxy=http://proxy:3128\n"
    assert created_by(bench, image_id)[-1] == "|1 A=1 /bin/sh -c echo a=$A proxy=$HTTP_PROXY > /args.txt"
    assert bench.config(image_id)["config"]["Env"] == [DEFAULT_PATH]
    assert not any("Warning" in t for t in built.texts)


def test_run_exec_form_does_not_expand(bench):
    built = build(bench, "run-exec-form")
    built.ok()
    assert "exec-form $HOME\n" in built.texts and "/root\n" in built.texts or "/\n" in built.texts


def test_copy_destinations(bench):
    image_id = build(bench, "copy-destinations").ok()
    t = bench.tree(image_id, bench.data_root / "tree-copy")
    assert (t / "w/renamed.txt").read_bytes() == b"file\n"
    assert (t / "w/into/f.txt").read_bytes() == b"file\n"
    assert (t / "tmp/f.txt").read_bytes() == b"file\n"  # an existing directory takes the file in
    assert (t / "copied/sub/a.txt").read_bytes() == b"a\n" and (t / "copied/b.txt").exists()
    assert not (t / "copied/dir").exists()  # a directory's contents, not the directory
    assert (t / "copied2/sub/a.txt").exists()
    assert sorted(os.listdir(t / "md")) == ["x1.md", "x2.md"]
    assert (t / "w/rel").read_bytes() == b"file\n"
    st = os.stat(t / "w/renamed.txt")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)


def test_copy_several_sources_need_a_directory(bench):
    built = build(bench, "copy-several-sources")
    assert str(built.error) == (
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    )


def test_copy_wildcard_matching_nothing(bench):
    built = build(bench, "copy-wildcard-matching-nothing")
    assert str(built.error) == "COPY failed: no source files were specified"


@pytest.mark.parametrize("instruction", ["ADD", "COPY"])
def test_a_source_missing_from_the_context(bench, instruction):
    """Reference §4.2: the message names the instruction and the path as written."""
    built = build(bench, f"{instruction.lower()}-missing-source")
    assert str(built.error) == (
        f"{instruction} failed: file not found in build context or excluded by .dockerignore: "
        "stat nope.txt: file does not exist"
    )


def test_copy_chown_and_chmod(bench):
    built = build(bench, "copy-chown-chmod")
    t = bench.tree(built.ok(), bench.data_root / "tree-chown")
    st = os.stat(t / "named.txt")
    assert (st.st_uid, st.st_gid) == (65534, 33)
    st = os.stat(t / "numeric.txt")
    assert (st.st_uid, st.st_gid) == (1234, 1234)
    st = os.stat(t / "d/x")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1, 2, 0o751)
    assert created_by(bench, built.image_id)[-1].startswith(
        "/bin/sh -c #(nop) COPY --chmod=0751 --chown=1:2dir:"
    )


def test_copy_chown_unknown_user(bench):
    built = build(bench, "copy-chown-unknown-user")
    assert str(built.error) == (
        "unable to convert uid/gid chown string to host mapping: "
        "can't find uid for user nobody2: no such user: nobody2"
    )


def test_copy_from_stage_index_and_image_keeps_owners(bench):
    t = bench.tree(build(bench, "copy-from-stage-index-image").ok(), bench.data_root / "tree-from")
    for name in ("by-name", "by-index"):
        st = os.stat(t / name)
        assert (t / name).read_text() == "owned\n" and (st.st_uid, st.st_gid) == (7, 8)
    assert (t / "passwd-from-image").read_text().startswith("root:x:0:0")
    assert os.stat(t / "chowned").st_uid == 1


@pytest.mark.parametrize(("source", "message"), COPY_FROM_ERRORS.items())
def test_copy_from_errors(bench, source, message):
    built = build(bench, f"copy-from-{source}")
    assert str(built.error).startswith(message)


def test_context_files_ignored_by_dockerignore_are_still_copied(bench):
    """The daemon does not filter the context (reference §3.2); it only drops a listed Dockerfile."""
    built = build(bench, "dockerignore-not-applied")
    t = bench.tree(built.ok(), bench.data_root / "tree-ignore")
    assert sorted(os.listdir(t / "ctx")) == [".dockerignore", "ignored.txt"]


def test_copy_follows_symlinks_only_inside_the_context(bench):
    built = build(bench, "copy-symlink")
    t = bench.tree(built.ok(), bench.data_root / "tree-link")
    assert (t / "copied").read_bytes() == b"real\n"
    # an absolute target means the context's root, as in a chroot: /etc/hostname is not in it
    built = build(bench, "copy-absolute-symlink")
    assert str(built.error) == (
        "COPY failed: file not found in build context or excluded by .dockerignore: "
        "stat absolute: file does not exist"
    )


def test_a_context_with_a_symlink_climbing_out_is_refused(bench):
    built = build(bench, "context-symlink-climbing-out")
    assert str(built.error) == 'invalid symlink "/escape" -> "../../etc"'


def test_add_extracts_local_archives_but_copy_does_not(bench):
    image_id = build(bench, "add-archive").ok()
    t = bench.tree(image_id, bench.data_root / "tree-add")
    assert (t / "x/inner/file.txt").read_bytes() == b"in\n"
    assert os.stat(t / "x/inner/file.txt").st_uid == 5  # the archive's owners, not root
    assert (t / "y/a.tar.xz").read_bytes() == CASES["add-archive"].files["a.tar.xz"]


def test_from_scratch_and_from_a_previous_stage(bench):
    built = build(bench, "from-scratch-and-stage")
    config = bench.config(built.ok())
    assert built.texts[2] == " ---> \n"
    assert len(config["rootfs"]["diff_ids"]) == 1 and config["os"] == "linux"
    assert config["config"]["Env"] == [DEFAULT_PATH, "X=1"]


def test_from_platform_is_accepted_for_scratch(bench):
    built = build(bench, "from-platform-scratch")
    assert bench.config(built.ok())["architecture"] == "arm64"


def test_heredocs_need_buildkit(bench):
    built = build(bench, "heredoc")
    assert "requires BuildKit" in str(built.error)


def test_parse_warnings_go_to_stderr_before_the_first_step(bench):
    built = build(bench, "parse-warning")
    built.ok()
    assert built.texts[0].startswith("\x1b[91m[WARNING]: Empty continuation line found in: RUN echo a")
    assert built.texts[1] == "Step 1/2 : FROM busybox:local"
    assert "a\nb\n" in built.output


def test_a_run_container_is_named_by_its_id(bench):
    built = build(bench, "run-hostname")
    built.ok()
    container = next(t for t in built.texts if t.startswith(" ---> Running in ")).split()[-1]
    assert container + "\n" in built.texts


@pytest.mark.parametrize(("mode", "error"), NETWORK_MODES.items())
def test_network_modes(bench, mode, error):
    built = build(bench, f"network-{mode}")
    assert (str(built.error) if built.error else None) == error


def test_extra_hosts_reach_run(bench):
    built = build(bench, "extra-hosts")
    built.ok()
    assert "10.1.2.3\tgolden-host\n" in built.output
