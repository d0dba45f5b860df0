"""What the BuildKit-style builder asks the controller for (moby builder-next/builder.go Build): the solve
request's frontend attrs, exporter, cache exports and entitlements, made from the build options; and
what the controller does with the attrs that minibuild accepts without applying them."""

import asyncio

import pytest
from test_next_harness import NextBench, needs_root, tar_of

from minibuild import errdefs
from minibuild.api.backend import BuildConfig, ProgressWriter
from minibuild.api.streamformatter import AuxFormatter, BufferSink, JSONProgressOutput
from minibuild.api.types import ImageBuildOptions, Ulimit
from minibuild.builder.next import llb
from minibuild.builder.next.controller import SolveRequest
from minibuild.builder.next.dockerfile2llb import ConvertOpt, dockerfile_to_llb


class Captured(Exception):
    """Raised by the stand-in solve once it has the request: nothing is built."""


@pytest.fixture
def captured(tmp_path, monkeypatch):
    """A builder whose controller records each SolveRequest instead of solving it."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    bench = NextBench(tmp_path / "root", busybox=False)
    requests: list[SolveRequest] = []

    async def solve(req: SolveRequest, progress):  # Controller.solve still opens and closes the progress
        requests.append(req)
        raise Captured

    monkeypatch.setattr(bench.builder.controller, "_solve", solve)

    def request(**options) -> SolveRequest:
        body = tmp_path / "body.tar"
        body.write_bytes(tar_of({"Dockerfile": b"FROM scratch\n"}))
        sink = BufferSink()
        writer = ProgressWriter(sink, None, None, AuxFormatter(sink), JSONProgressOutput(sink))
        config = BuildConfig(body, ImageBuildOptions(**{"version": "2", **options}), writer)
        with pytest.raises(Captured):
            asyncio.run(bench.backend.build(config))
        return requests.pop()

    return request


def test_the_defaults(captured):
    req = captured()
    context = req.frontend_attrs.pop("context")
    assert context == "context://" + req.ref and list(req.bodies) == [context]
    # cache-from, image-resolve-mode and add-hosts are always set, as moby sets them
    assert req.frontend_attrs == {"cache-from": "", "image-resolve-mode": "default", "add-hosts": ""}
    assert (req.exporter, req.exporter_attrs, req.frontend) == ("moby", {}, "dockerfile.v0")
    assert (req.cache_exports, req.entitlements) == ([], [])


def test_every_option_becomes_its_attr(captured):
    req = captured(
        dockerfile="sub/Dockerfile.app",
        target="final",
        build_args={"A": "1", "UNSET": None, "BUILDKIT_INLINE_CACHE": "1"},
        labels={"org.example": "v"},
        no_cache=True,
        cache_from=["cache:1", "cache:2"],
        platform="linux/arm64",
        shm_size=64 << 20,
        ulimits=[Ulimit("nofile", 2048, 1024), Ulimit("nproc", 20, 10)],
        pull_parent=True,
        network_mode="host",
        extra_hosts=["db:10.0.0.5", "v6:[::1]"],
        tags=["app:v1", "app"],
        session_id="sess",
    )
    del req.frontend_attrs["context"]
    assert req.frontend_attrs == {
        "target": "final",
        "filename": "sub/Dockerfile.app",
        "cache-from": "cache:1,cache:2",
        "build-arg:A": "1",  # an unset --build-arg is not passed on
        "build-arg:BUILDKIT_INLINE_CACHE": "1",
        "label:org.example": "v",
        "no-cache": "",
        "image-resolve-mode": "pull",
        "platform": "linux/arm64",
        "force-network-mode": "host",
        "add-hosts": "db=10.0.0.5,v6=[::1]",
        "shm-size": str(64 << 20),
        "ulimit": "nofile=1024:2048,nproc=10:20",
    }
    assert req.exporter_attrs == {"name": "docker.io/library/app:v1,docker.io/library/app:latest"}
    assert req.cache_exports == [{"type": "inline"}]
    assert req.entitlements == ["network.host"]
    assert req.session == "sess"


@pytest.mark.parametrize(("mode", "forced"), [("none", "none"), ("default", None), ("", None)])
def test_network_modes(captured, mode, forced):
    req = captured(network_mode=mode)
    assert req.frontend_attrs.get("force-network-mode") == forced
    assert req.entitlements == []


def test_a_false_inline_cache_arg_exports_nothing(captured):
    assert captured(build_args={"BUILDKIT_INLINE_CACHE": "0"}).cache_exports == []
    assert captured(build_args={"BUILDKIT_INLINE_CACHE": "yes"}).cache_exports == []  # ParseBool: not a bool


# --- what the controller does with them -------------------------------------------------------------


def convert(dockerfile: str, **opt):
    result = asyncio.run(dockerfile_to_llb(dockerfile.encode(), ConvertOpt(build_context=llb.State(), **opt)))
    return llb.marshal(result.state)


def exec_ops(definition) -> list[dict]:
    return [v.op for v in definition if v.kind == "exec"]


def test_ulimit_and_shm_size_are_part_of_the_run_steps_and_their_keys():
    plain = exec_ops(convert("FROM scratch\nRUN true\n"))
    limited = exec_ops(convert("FROM scratch\nRUN true\n", ulimits=["nofile=1024:2048"], shm_size=1 << 20))
    assert "ulimit" not in plain[0] and "shm_size" not in plain[0]
    assert limited[0]["ulimit"] == ["nofile=1024:2048"] and limited[0]["shm_size"] == 1 << 20
    assert (
        convert("FROM scratch\nRUN true\n").target.digest
        != convert("FROM scratch\nRUN true\n", ulimits=["nofile=1024:2048"]).target.digest
    )


@pytest.mark.root
@needs_root
def test_a_run_on_the_host_network_needs_the_entitlement(tmp_path):
    bench = NextBench(tmp_path / "root")
    dockerfile = "FROM busybox:local\nRUN --network=host echo on-the-host\n"
    refused = bench.build(dockerfile)
    assert str(refused.error) == (
        "failed to solve with frontend dockerfile.v0: failed to load LLB: network.host is not allowed"
    )
    assert "[2/2] RUN --network=host echo on-the-host" not in refused.vertices  # refused before it ran
    allowed = bench.build(dockerfile, network_mode="host")
    allowed.ok()
    assert allowed.logs() == b"on-the-host\n"


def test_an_unknown_cache_exporter_is_refused(tmp_path):
    bench = NextBench(tmp_path / "root", busybox=False)
    req = SolveRequest(ref="r", exporter="moby", cache_exports=[{"type": "registry"}])
    with pytest.raises(errdefs.InvalidParameter, match='unknown cache exporter: "registry"'):
        asyncio.run(bench.builder.controller.solve(req))
