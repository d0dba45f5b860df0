"""Dockerfile -> LLB: reachable stages only, BuildKit's vertex names, the image config and history."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.builder.next import llb
from minibuild.builder.next.dockerfile2llb import (
    FROM_BASE,
    ConvertError,
    ConvertOpt,
    dockerfile_to_llb,
    go_duration,
    parse_port_specs,
    parse_signal,
)
from minibuild.dockerfile import DockerfileError

BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["sh"], "Env": ["PATH=/bin", "BASE=1"], "Hostname": "dropped"},
    "container_config": {"Cmd": ["dropped"]},
    "created": "2020-01-01T00:00:00Z",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
    "history": [{"created_by": "ADD rootfs"}],
}


class Resolver:
    def __init__(self, configs=None):
        self.configs = configs or {}
        self.calls = []

    async def resolve_image_config(self, ref, *, platform, resolve_mode, log_name):
        self.calls.append((ref, platform, resolve_mode, log_name))
        return "", self.configs.get(ref, BASE_CONFIG)


CONTEXT = llb.State(llb.source("context://test", name="context"))


def convert(dockerfile: str, **kw):
    resolver = kw.pop("resolver", None) or Resolver()
    kw.setdefault("build_platform", "linux/amd64")
    opt = ConvertOpt(build_context=CONTEXT, meta_resolver=resolver, **kw)
    result = asyncio.run(dockerfile_to_llb(dockerfile.encode(), opt))
    return result, llb.marshal(result.state), resolver


def names(definition):
    return [v.name for v in definition if v.name != "context"]


def test_only_stages_reachable_from_the_target_are_converted():
    df = """FROM busybox AS a
RUN echo a
FROM alpine AS unused
RUN echo never
FROM busybox AS b
COPY --from=a /x /x
FROM debian AS last
RUN echo last
"""
    _result, definition, resolver = convert(df, target="b")
    assert names(definition) == [
        "[b 1/2] FROM docker.io/library/busybox:latest",
        "[a 2/2] RUN echo a",
        "[b 2/2] COPY --from=a /x /x",
    ]
    # Unreachable stages never even resolve their base image.
    assert {c[0] for c in resolver.calls} == {"docker.io/library/busybox:latest"}
    assert resolver.calls[0][3] == "[internal] load metadata for docker.io/library/busybox:latest"


def test_last_stage_is_the_default_target_and_names_follow_buildkit():
    df = """FROM busybox AS a
RUN echo a > /a.txt
FROM busybox
ENV X=1
WORKDIR /app
COPY --from=a /a.txt /
COPY hello.txt .
RUN echo $X
"""
    _result, definition, _ = convert(df)
    assert names(definition) == [
        "[stage-1 1/5] FROM docker.io/library/busybox:latest",
        "[stage-1 2/5] WORKDIR /app",
        "[a 2/2] RUN echo a > /a.txt",
        "[stage-1 3/5] COPY --from=a /a.txt /",
        "[stage-1 4/5] COPY hello.txt .",
        "[stage-1 5/5] RUN echo 1",
    ]
    copy = definition.vertices[3]
    assert copy.op["actions"][0]["dest"] == "/"
    assert copy.op["actions"][0]["src"] == "/a.txt"
    ctx_copy = definition.vertices[-2]
    assert ctx_copy.op["actions"][0]["dest"] == "/app/"
    assert ctx_copy.inputs[1].name == "context"


def test_one_stage_has_no_stage_name_in_vertex_names():
    _result, definition, _ = convert("FROM busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n")
    assert names(definition) == [
        "[1/3] FROM docker.io/library/busybox:latest",
        "[2/3] COPY hello.txt /hello.txt",
        "[3/3] RUN cat /hello.txt",
    ]


def test_identical_stages_share_vertices():
    df = (
        "FROM busybox AS a\nRUN echo same\nFROM busybox AS b\nRUN echo same\n"
        "FROM scratch\nCOPY --from=a /x /a\nCOPY --from=b /x /b\n"
    )
    _result, definition, _ = convert(df)
    runs = [v for v in definition if v.kind == "exec"]
    assert len(runs) == 1
    final = definition.target
    assert final.inputs[-1] is runs[0]  # the second COPY reads the very same vertex
    first_copy = final.inputs[0]
    assert first_copy.op["base"] == -1  # FROM scratch: no base vertex


def test_image_config_from_metadata_instructions():
    df = """FROM busybox
ARG VERSION=1.0
ENV APP_VERSION=$VERSION APP_HOME=/app
LABEL org.example.version=$VERSION maintainer="golden team"
WORKDIR $APP_HOME
USER 1000:1000
EXPOSE 8080/tcp 9090
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
"""
    result, _definition, _ = convert(df, build_args={"VERSION": "2.0"}, labels={"extra": "yes"})
    config = result.image["config"]
    assert config["Env"] == ["PATH=/bin", "BASE=1", "APP_VERSION=2.0", "APP_HOME=/app"]
    assert config["Labels"] == {"org.example.version": "2.0", "maintainer": "golden team", "extra": "yes"}
    assert config["WorkingDir"] == "/app"
    assert config["User"] == "1000:1000"
    assert config["ExposedPorts"] == {"8080/tcp": {}, "9090/tcp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert config["Healthcheck"]["Interval"] == 30_000_000_000
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ["echo hello"]
    assert "Hostname" not in config  # only the fields of an image config survive from the base
    assert result.image["rootfs"]["diff_ids"] == BASE_CONFIG["rootfs"]["diff_ids"]
    history = result.image["history"]
    assert history[0] == {"created_by": "ADD rootfs"}
    assert result.history_sources[0] == FROM_BASE
    assert [h["created_by"] for h in history[1:4]] == [
        "ARG VERSION=1.0",
        "ENV APP_VERSION=2.0 APP_HOME=/app",
        "LABEL org.example.version=2.0 maintainer=golden team",
    ]
    assert history[4]["created_by"] == "WORKDIR /app # buildkit"
    assert result.history_sources[4] is not None  # the mkdir may add a layer
    assert all(h["comment"] == "buildkit.dockerfile.v0" for h in history[1:])


def test_run_env_args_and_history():
    df = "FROM busybox\nARG A=1\nARG B\nENV A=fromenv\nRUN echo $A $B\n"
    result, definition, _ = convert(df, build_args={"B": "2"})
    run = definition.target
    # ENV wins over ARG of the same name; args with a value reach the process after the env.
    assert run.op["env"] == ["PATH=/bin", "BASE=1", "A=fromenv", "B=2"]
    assert run.op["args"] == ["/bin/sh", "-c", "echo $A $B"]
    assert run.name == "[2/2] RUN echo fromenv 2"
    assert result.image["history"][-1]["created_by"] == "RUN |1 B=2 /bin/sh -c echo $A $B # buildkit"
    assert result.history_sources[-1] == run.digest


def test_shell_entrypoint_cmd_and_onbuild():
    df = (
        'FROM busybox\nSHELL ["/bin/ash", "-eo", "pipefail", "-c"]\nRUN echo hi\nCMD echo cmd\n'
        'ENTRYPOINT ["e"]\nONBUILD RUN echo later\n'
    )
    result, definition, _ = convert(df)
    assert definition.target.op["args"] == ["/bin/ash", "-eo", "pipefail", "-c", "echo hi"]
    config = result.image["config"]
    assert config["Cmd"] == ["/bin/ash", "-eo", "pipefail", "-c", "echo cmd"]  # CMD set in this stage stays
    assert config["Entrypoint"] == ["e"]
    assert config["OnBuild"] == ["RUN echo later"]


def test_entrypoint_resets_an_inherited_cmd():
    result, _definition, _ = convert('FROM busybox\nENTRYPOINT ["e"]\n')
    assert result.image["config"]["Cmd"] is None


def test_onbuild_triggers_of_the_base_run_first_and_are_consumed():
    parent = dict(BASE_CONFIG, config={"Env": ["PATH=/bin"], "OnBuild": ["RUN echo triggered"]})
    resolver = Resolver({"docker.io/library/parent:latest": parent})
    result, definition, _ = convert("FROM parent\nRUN echo own\n", resolver=resolver)
    runs = [v.op["args"][-1] for v in definition if v.kind == "exec"]
    assert runs == ["echo triggered", "echo own"]
    assert result.image["config"]["OnBuild"] is None


def test_global_args_in_from_and_platform_args():
    df = "ARG BASE=busybox\nFROM ${BASE}:local\nARG TARGETARCH\nRUN echo $TARGETARCH\n"
    _result, definition, resolver = convert(df, target_platform="linux/arm64")
    assert resolver.calls[0][:2] == ("docker.io/library/busybox:local", "linux/arm64")
    assert definition.target.op["env"][-1] == "TARGETARCH=arm64"


def test_no_cache_marks_vertices_and_network_modes():
    df = "FROM busybox AS a\nRUN echo a\nFROM busybox\nRUN --network=none echo b\n"
    _result, definition, _ = convert(df, ignore_cache=[], force_network_mode="host")
    runs = [v for v in definition if v.kind == "exec"]
    assert all(v.ignore_cache for v in runs)
    assert [v.op["network"] for v in runs] == ["none"]
    _result, definition, _ = convert(df, ignore_cache=["a"])
    assert [v.ignore_cache for v in definition if v.kind == "exec"] == [False]


def test_copy_heredoc_chmod_chown_and_add_url():
    df = (
        "FROM busybox\nCOPY --chmod=0755 --chown=1:2 <<EOF /run.sh\necho $HOME\nEOF\n"
        "ADD https://example.com/dir/file.txt /dl/\n"
    )
    result, definition, _ = convert(df)
    copy = [v for v in definition if v.kind == "file" and v.op["actions"][0]["action"] == "copy"][0]
    action = copy.op["actions"][0]
    assert action["mode"] == 0o755 and action["chown"] == "1:2"
    inline = copy.inputs[1]
    assert inline.name == "[internal] preparing inline document"
    assert bytes.fromhex(inline.op["actions"][0]["data"]) == b"echo \n"  # expanded: HOME is unset
    add = definition.target
    assert add.inputs[1].op["identifier"] == "https://example.com/dir/file.txt"
    assert add.op["actions"][0]["src"] == "/file.txt" and add.op["actions"][0]["dest"] == "/dl/"
    assert result.image["history"][-1]["created_by"] == "ADD https://example.com/dir/file.txt /dl/ # buildkit"


def test_run_heredoc_runs_its_body_with_the_shell():
    _result, definition, _ = convert("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\n")
    assert definition.target.op["args"] == ["/bin/sh", "-c", "echo one\necho two\n"]


@pytest.mark.parametrize(
    ("dockerfile", "kw", "message"),
    [
        ("FROM busybox\nCOPY --from=nostage /x /x\n", {}, None),
        ("FROM ${NOPE}\n", {}, "base name (${NOPE}) should not be blank"),
        ("FROM busybox\n", {"target": "nope"}, "target stage nope could not be found"),
        ("FROM busybox\nEXPOSE abc\n", {}, "Invalid containerPort: abc"),
        ("FROM busybox\nSTOPSIGNAL NOPE\n", {}, "Invalid signal: NOPE"),
        ("FROM busybox\nCOPY --chmod=9z a b\n", {}, "invalid chmod parameter: 9z"),
        ("FROM busybox\nRUN --mount=type=secret,id=x cat /run/secrets/x\n", {}, "needs a client session"),
        ("FROM busybox\nCOPY http://example.com/x /x\n", {}, "source can't be a URL for COPY"),
        ("FROM busybox\nFROM 0\n", {}, None),
    ],
)
def test_refusals(dockerfile, kw, message):
    if message is None:  # not errors: an image name in --from, a stage named like an index
        convert(dockerfile, **kw)
        return
    with pytest.raises(
        ConvertError, match=message.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")
    ):
        convert(dockerfile, **kw)


def test_parse_errors_keep_the_parser_wording():
    with pytest.raises(DockerfileError, match="dockerfile parse error line 2: unknown instruction: NOPE"):
        convert("FROM busybox\nNOPE\n")
    with pytest.raises(ConvertError, match="the Dockerfile cannot be empty"):
        convert("")


def test_copy_from_an_image_is_a_stage_of_its_own():
    _result, definition, resolver = convert("FROM busybox\nCOPY --from=alpine:3 /etc/os-release /\n")
    source = definition.target.inputs[1]
    assert source.op["identifier"] == "docker-image://docker.io/library/alpine:3"
    assert source.name == "FROM docker.io/library/alpine:3"
    assert len(resolver.calls) == 1  # like BuildKit, such an image is not resolved for its config


def test_helpers():
    assert parse_port_specs(["80", "53/udp", "8000-8002"]) == [
        "80/tcp",
        "53/udp",
        "8000/tcp",
        "8001/tcp",
        "8002/tcp",
    ]
    assert parse_signal("SIGKILL") == 9 and parse_signal("term") == 15 and parse_signal("SIGRTMIN+3") == 37
    assert [go_duration(x) for x in (0, 30_000_000_000, 90_000_000_000, 1_500_000_000, 5_000_000)] == [
        "0s",
        "30s",
        "1m30s",
        "1.5s",
        "5ms",
    ]


_WORDS = st.sampled_from(
    ["FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "CMD",
     "ENTRYPOINT", "VOLUME", "STOPSIGNAL", "SHELL", "ONBUILD", "HEALTHCHECK", "AS", "--from=a",
     "--chown=1:1", "--mount=type=bind", "--network=none", "a", "b", "0", "1", "$X", "${Y:-z}",
     "scratch", "busybox", "/x", ".", "*", "[\"sh\"]", "=", "A=1", "<<EOF", "EOF", "\\", "#", "'q'",
     "\"d\""]
)  # fmt: skip


@settings(deadline=None, max_examples=300)
@given(st.lists(st.lists(_WORDS, min_size=1, max_size=5).map(" ".join), min_size=1, max_size=8))
def test_any_dockerfile_converts_or_raises_our_errors(lines):
    """Property: whatever the text, conversion gives a graph or a DockerfileError/ConvertError."""
    try:
        convert("\n".join(lines) + "\n")
    except (DockerfileError, ConvertError):
        pass
