"""The BuildKit-style builder end to end through Backend.build, with real RUN steps on busybox."""

import asyncio
import base64
import contextlib
import http.server
import json
import os
import re
import threading

import pytest
from test_next_harness import IMAGE_ID, TRACE, NextBench, needs_root, snapshot_of_tree, tar_of

from minibuild import errdefs
from minibuild.api.backend import BuildConfig, ProgressWriter
from minibuild.api.streamformatter import AuxFormatter, BufferSink, JSONProgressOutput
from minibuild.api.types import BuildCachePruneOptions, ImageBuildOptions
from minibuild.builder.next import builder as builder_module
from minibuild.builder.next.progress import StatusResponse
from minibuild.builder.next.solver import CANCELED, SolveError

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def bench(tmp_path):
    return NextBench(tmp_path / "root")


FANOUT = """FROM busybox:local AS a
RUN echo built-a > /a.txt && sleep 1
FROM busybox:local AS b
RUN echo built-b > /b.txt && sleep 1
FROM busybox:local AS unused
RUN echo never > /marker && exit 1
FROM busybox:local
COPY --from=a /a.txt /a.txt
COPY --from=b /b.txt /b.txt
RUN cat /a.txt /b.txt
"""


def test_unused_stages_never_run_and_independent_stages_overlap(bench, tmp_path):
    built = bench.build(FANOUT, tags=["fanout:test"])
    image_id = built.ok()
    assert not any("unused" in name or "never" in name for name in built.vertices)  # not even announced
    a = built.timeline["[a 2/2] RUN echo built-a > /a.txt && sleep 1"]
    b = built.timeline["[b 2/2] RUN echo built-b > /b.txt && sleep 1"]
    assert a.start < b.end and b.start < a.end  # they ran at the same time
    assert a.lane != b.lane
    assert built.logs() == b"built-a\nbuilt-b\n"
    tree = bench.tree(image_id, tmp_path / "tree")
    assert (tree / "a.txt").read_text() == "built-a\n" and (tree / "b.txt").read_text() == "built-b\n"
    assert not (tree / "marker").exists()
    assert [m for m in built.messages if m.get("id") == IMAGE_ID] == [
        {"id": IMAGE_ID, "aux": {"ID": image_id}}
    ]
    assert built.texts() == ["Successfully tagged fanout:test\n"]
    assert bench.service.get_image("fanout:test").id == image_id


def test_the_trace_has_buildkits_vertices_in_order(bench):
    built = bench.build(
        "FROM busybox:local\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n", {"hello.txt": b"hi\n"}
    )
    built.ok()
    names = list(built.vertices)
    assert names[:2] == ["[internal] load remote build context", "copy /context /"]
    assert "[internal] load metadata for docker.io/library/busybox:local" in names
    assert names[-4:] == [
        "[1/3] FROM docker.io/library/busybox:local",
        "[2/3] COPY hello.txt /hello.txt",
        "[3/3] RUN cat /hello.txt",
        "exporting to image",
    ]
    copy = built.vertices["[2/3] COPY hello.txt /hello.txt"]
    assert set(copy.inputs) == {
        built.vertices["[1/3] FROM docker.io/library/busybox:local"].digest,
        built.vertices["copy /context /"].digest,
    }
    statuses = [s.id for sr in built.traces for s in sr.statuses]
    assert "exporting layers" in statuses and any(s.startswith("writing image sha256:") for s in statuses)
    logs = [entry for sr in built.traces for entry in sr.logs]
    assert logs and all(entry.vertex == built.vertices["[3/3] RUN cat /hello.txt"].digest for entry in logs)
    # The body is hashed (its key) and handed over (its result) once each, not again for the Dockerfile.
    context = built.vertices["[internal] load remote build context"].digest
    starts = {v.started for sr in built.traces for v in sr.vertexes if v.digest == context and v.started}
    assert len(starts) == 2


def test_identical_vertices_run_once(bench, tmp_path):
    df = (
        "FROM busybox:local AS one\nRUN echo same > /same.txt\n"
        "FROM busybox:local AS two\nRUN echo same > /same.txt\n"
        "FROM busybox:local\nCOPY --from=one /same.txt /1.txt\nCOPY --from=two /same.txt /2.txt\n"
    )
    built = bench.build(df)
    runs = [name for name in built.vertices if "RUN echo same" in name]
    assert len(runs) == 1  # one vertex for both stages, run once
    tree = bench.tree(built.ok(), tmp_path / "t")
    assert (tree / "1.txt").read_text() == (tree / "2.txt").read_text() == "same\n"


def test_cache_hits_and_invalidation_by_context_content(bench):
    df = (
        "FROM busybox:local\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy-a\nCOPY b.txt /b.txt\nRUN cat /b.txt\n"
    )
    files = {"a.txt": b"a\n", "b.txt": b"b\n", "other.txt": b"1"}
    first = bench.build(df, files)
    image_id = first.ok()
    again = bench.build(df, files)
    assert again.ok() == image_id  # same image, as dockerd's BuildKit answers a repeat build
    assert again.cached("[5/5] RUN cat /b.txt")
    assert not again.ran("[3/5] RUN cat /a.txt > /copy-a")  # below a cache hit: never needed
    # A file nothing copies changed: the context differs, every step is still a hit.
    unrelated = bench.build(df, {**files, "other.txt": b"2"})
    assert unrelated.ok() == image_id and unrelated.cached("[5/5] RUN cat /b.txt")
    # b.txt changed: its COPY and what follows run again, what comes before is a cache hit.
    changed = bench.build(df, {**files, "b.txt": b"B\n"})
    assert changed.ok() != image_id
    assert changed.ran("[4/5] COPY b.txt /b.txt") and changed.ran("[5/5] RUN cat /b.txt")
    assert changed.cached("[3/5] RUN cat /a.txt > /copy-a")
    assert changed.logs() == b"B\n"


def test_no_cache_runs_everything_again(bench):
    df = "FROM busybox:local\nRUN echo x > /x\n"
    bench.build(df).ok()
    again = bench.build(df, no_cache=True)
    again.ok()
    assert again.ran("[2/2] RUN echo x > /x")


def test_cache_survives_a_restart_and_prune_empties_it(bench):
    df = "FROM busybox:local\nRUN echo x > /x\n"
    image_id = bench.build(df).ok()
    restarted = bench.restart()
    again = restarted.build(df)
    assert again.ok() == image_id and again.cached("[2/2] RUN echo x > /x")
    report = asyncio.run(restarted.backend.prune_cache(BuildCachePruneOptions(all=True)))
    assert report.caches_deleted and all(re.fullmatch(r"[0-9a-z]{25}", i) for i in report.caches_deleted)
    assert report.space_reclaimed > 0
    assert report.to_dict()["CachesDeleted"] == report.caches_deleted
    empty = asyncio.run(restarted.backend.prune_cache(BuildCachePruneOptions()))
    assert empty.to_dict() == {"CachesDeleted": None, "SpaceReclaimed": 0}
    rebuilt = restarted.build(df)
    assert rebuilt.ran("[2/2] RUN echo x > /x")


def test_failure_names_the_vertex_and_cancels_its_siblings(bench):
    df = (
        "FROM busybox:local AS slow\nRUN sleep 30 && echo slow-done > /s\n"
        "FROM busybox:local AS bad\nRUN echo oops && exit 3\n"
        "FROM busybox:local\nCOPY --from=slow /s /s\nCOPY --from=bad / /bad\n"
    )
    built = bench.build(df)
    assert isinstance(built.error, SolveError)
    assert str(built.error) == "executor failed running [/bin/sh -c echo oops && exit 3]: exit code: 3"
    assert built.error.vertex.name == "[bad 2/2] RUN echo oops && exit 3"
    assert built.vertices["[bad 2/2] RUN echo oops && exit 3"].error == str(built.error)
    # The sibling was stopped when the failure came: killed (BuildKit's wrapped exit 137), or stopped
    # before its process started; its output never written.
    assert built.vertices["[slow 2/2] RUN sleep 30 && echo slow-done > /s"].error in (
        CANCELED,
        f"executor failed running [/bin/sh -c sleep 30 && echo slow-done > /s]: exit code: 137: {CANCELED}: "
        f"{CANCELED}",
    )
    assert b"oops\n" in built.logs() and b"slow-done" not in built.logs()
    assert not any(v.started for name, v in built.vertices.items() if "COPY --from" in name)


def test_cancel_by_build_id_stops_a_running_step(bench):
    async def main():
        task = asyncio.ensure_future(
            bench.build_async("FROM busybox:local\nRUN sleep 30\n", build_id="job-1")
        )
        while "job-1" not in bench.builder.jobs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        await bench.backend.cancel("job-1")
        await bench.backend.cancel("unknown")  # not an error
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return task.result()

    assert asyncio.run(main()) == "cancelled"
    assert bench.builder.jobs == {}
    assert list(bench.builder.controller.snapshotter.snapshots.iterdir()) == []  # nothing left behind


def upload_pair(bench, *, send: bool, wait: bool, upload_first: bool = False):
    """Two requests for one build: one uploads the context, the other builds with it (the build request
    first, or with `upload_first` only once the upload is waiting in the job)."""
    body = tar_of({"Dockerfile": b"FROM busybox:local\nRUN echo uploaded\n"})

    async def request(build_id: str, remote: str, data: bytes):
        path = bench.data_root / f"req-{build_id.replace(':', '-')}-{os.urandom(3).hex()}"
        path.write_bytes(data)
        sink = BufferSink()
        writer = ProgressWriter(sink, None, None, AuxFormatter(sink), JSONProgressOutput(sink))
        options = ImageBuildOptions(version="2", build_id=build_id, remote_context=remote)
        try:
            return await bench.builder.build(BuildConfig(path, options, writer)), sink
        finally:
            path.unlink()

    async def main():
        tasks = []
        if upload_first:
            tasks.append(asyncio.ensure_future(request("upload-request:pair", "", body)))
            while "pair" not in bench.builder.jobs:  # the upload has reached the builder
                await asyncio.sleep(0.01)
        if wait:
            tasks.append(asyncio.ensure_future(request("pair", "upload-request", b"")))
        if send and not upload_first:
            tasks.append(asyncio.ensure_future(request("upload-request:pair", "", body)))
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


@pytest.mark.parametrize("upload_first", [False, True], ids=["build-request-first", "upload-first"])
def test_upload_request_flow(bench, upload_first):
    results = upload_pair(bench, send=True, wait=True, upload_first=upload_first)
    (built, sink), (uploaded, upload_sink) = results[::-1] if upload_first else results
    assert uploaded is None and upload_sink.getvalue() == b""  # the upload half builds nothing
    # The waiting half built the uploaded context: its RUN ran, and the image is that Dockerfile's.
    messages = [json.loads(line) for line in sink.getvalue().split(b"\r\n") if line]
    traces = [StatusResponse.unmarshal(base64.b64decode(m["aux"])) for m in messages if m.get("id") == TRACE]
    names = [v.name for sr in traces for v in sr.vertexes]
    assert "[2/2] RUN echo uploaded" in names
    assert b"uploaded\n" in b"".join(log.data for sr in traces for log in sr.logs)
    assert {"id": IMAGE_ID, "aux": {"ID": built.image_id}} in messages
    history = bench.config(built.image_id)["history"]
    assert history[-1]["created_by"] == "RUN /bin/sh -c echo uploaded # buildkit"
    assert bench.builder.jobs == {}


def test_upload_request_waits_five_seconds_at_most(bench, monkeypatch):
    assert builder_module.UPLOAD_WAIT == 5.0  # moby's 5*time.Second; shortened below to keep the test quick
    monkeypatch.setattr(builder_module, "UPLOAD_WAIT", 0.2)
    (lonely_waiter,) = upload_pair(bench, send=False, wait=True)
    assert isinstance(lonely_waiter, errdefs.Deadline) and str(lonely_waiter) == "context deadline exceeded"
    (lonely_upload,) = upload_pair(bench, send=True, wait=False)
    assert isinstance(lonely_upload, errdefs.Deadline)
    assert bench.builder.jobs == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"network_mode": "bridge"}, 'network mode "bridge" not supported by buildkit'),
        ({"outputs": [{"Type": "moby"}, {"Type": "local"}]}, "multiple outputs not supported"),
        ({"extra_hosts": ["nocolon"]}, "invalid host nocolon"),
        ({"extra_hosts": ["h:notanip"]}, "invalid host h:notanip"),
        ({"extra_hosts": ["h:host-gateway"]}, "unable to derive the IP value for host-gateway"),
        ({"outputs": [{"Type": "tar"}]}, "exporter 'tar' could not be found"),
    ],
)
def test_refusals(bench, options, message):
    built = bench.build("FROM busybox:local\n", **options)
    assert built.error is not None and str(built.error) == message
    if "exporter" not in message:
        assert built.messages == []  # refused before anything was written: an ordinary HTTP error


def test_cacheonly_exports_nothing(bench):
    built = bench.build("FROM busybox:local\nRUN echo x\n", outputs=[{"Type": "cacheonly"}], tags=["nope:1"])
    assert built.error is None and built.image_id == ""
    assert not any(m.get("id") == IMAGE_ID for m in built.messages)


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        (
            "FROM busybox:local\nNOPE\n",
            "failed to solve with frontend dockerfile.v0: failed to create LLB "
            "definition: dockerfile parse error line 2: unknown instruction: NOPE",
        ),  # fmt: skip
        (
            "FROM busybox:local\nCOPY nope.txt /\n",
            'failed to compute cache key: "/nope.txt" not found: not found',
        ),
        # Not in the store: a pull is tried (offline here, so the message depends on the network).
        (
            "FROM nope-mbref:latest\n",
            "failed to solve with frontend dockerfile.v0: failed to create LLB definition: ",
        ),
    ],
)
def test_errors_arrive_after_the_first_traces(bench, dockerfile, message):
    built = bench.build(dockerfile)
    assert built.error is not None
    assert str(built.error).startswith(message)
    assert built.traces  # the context vertices were reported first: the error goes in the stream


def test_missing_dockerfile(bench):
    built = asyncio.run(bench.build_async("", body=tar_of({"other": b"x"})))
    assert re.fullmatch(
        r"failed to solve with frontend dockerfile.v0: failed to read dockerfile: open /\S+/Dockerfile: "
        r"no such file or directory",
        str(built.error),
    )


def test_source_date_epoch_gives_the_same_image_in_two_data_roots(tmp_path):
    df = "FROM busybox:local\nCOPY a.txt /a.txt\nRUN echo made > /made.txt\nENV X=1\n"
    ids = []
    for name in ("one", "two"):
        bench = NextBench(tmp_path / name)
        ids.append(bench.build(df, {"a.txt": b"a"}, build_args={"SOURCE_DATE_EPOCH": "1700000000"}).ok())
    assert ids[0] == ids[1]
    scratch = []
    for name in ("three", "four"):
        bench = NextBench(tmp_path / name, busybox=False)
        scratch.append(bench.build("FROM scratch\nCOPY a.txt /\n", {"a.txt": b"a"},
                                   build_args={"SOURCE_DATE_EPOCH": "0"}).ok())  # fmt: skip
    assert scratch[0] == scratch[1]
    config = NextBench(tmp_path / "three", busybox=False).config(scratch[0])
    assert config["created"] == "1970-01-01T00:00:00Z"


def test_image_config_and_history_match_the_layers(bench, tmp_path):
    df = (
        "FROM busybox:local\nENV APP=/app\nWORKDIR $APP\nCOPY hello.txt .\nRUN echo nothing-written\n"
        'RUN echo x > x.txt\nUSER 1000\nCMD ["cat", "hello.txt"]\n'
    )
    image_id = bench.build(df, {"hello.txt": b"hello\n"}, labels={"from": "query"}).ok()
    config = bench.config(image_id)
    assert config["config"]["WorkingDir"] == "/app" and config["config"]["User"] == "1000"
    assert config["config"]["Cmd"] == ["cat", "hello.txt"] and config["config"]["Labels"] == {"from": "query"}
    assert "APP=/app" in config["config"]["Env"]
    history = config["history"]
    assert sum(not h.get("empty_layer") for h in history) == len(config["rootfs"]["diff_ids"])
    run_nothing = next(h for h in history if "nothing-written" in h.get("created_by", ""))
    assert run_nothing["empty_layer"] is True  # the RUN changed no file: no layer
    tree = bench.tree(image_id, tmp_path / "t")
    assert (tree / "app" / "hello.txt").read_text() == "hello\n" and (tree / "app" / "x.txt").exists()


def test_copy_and_add_semantics(bench, tmp_path):
    archive = tar_of({"inside/one.txt": b"1", "two.txt": b"2"})
    files = {"dir/sub/f.txt": b"f", "dir/g.txt": b"g", "w1.log": b"1", "w2.log": b"2", "pkg.tar": archive}
    df = (
        "FROM busybox:local\n"
        "COPY dir /copied-dir\n"  # a directory's contents, not the directory
        "COPY dir/ /into/\n"
        "COPY w*.log /logs/\n"
        "COPY nomatch* /none/\n"  # a wildcard that matches nothing copies nothing
        "COPY --chown=1000:1001 --chmod=0600 w1.log /owned.log\n"
        "ADD pkg.tar /unpacked/\n"
        "COPY pkg.tar /kept.tar\n"
        "WORKDIR /made/by/workdir\n"
    )
    tree = bench.tree(bench.build(df, files).ok(), tmp_path / "t")
    assert (tree / "copied-dir" / "sub" / "f.txt").read_bytes() == b"f"
    assert (tree / "into" / "g.txt").exists() and not (tree / "into" / "dir").exists()
    assert sorted(p.name for p in (tree / "logs").iterdir()) == ["w1.log", "w2.log"]
    assert not (tree / "none").exists() or list((tree / "none").iterdir()) == []
    st = os.lstat(tree / "owned.log")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1001, 0o600)
    assert (tree / "unpacked" / "inside" / "one.txt").read_bytes() == b"1"
    assert (tree / "kept.tar").read_bytes() == archive
    assert (tree / "made" / "by" / "workdir").is_dir()


def test_same_result_as_a_rebuild_from_scratch_of_the_snapshot(bench, tmp_path):
    """The image's tree equals what the RUN steps saw: a RUN reading a COPY'd file writes it back."""
    df = "FROM busybox:local\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt && rm /bin/vi && mkdir -p /d/e\n"
    tree = snapshot_of_tree(bench.tree(bench.build(df, {"a.txt": b"data"}).ok(), tmp_path / "t"))
    assert tree["/b.txt"][4] == b"data" and "/bin/vi" not in tree and "/d/e" in tree


def _evil_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        b"not an archive at all",
        tar_of({"Dockerfile": b"FROM busybox:local\n"})[:700],
        b"\x1f\x8b\x08garbage",
        _evil_tar(),
    ],
    ids=["text", "truncated", "bad-gzip", "path-escape"],
)
def test_a_bad_context_fails_the_build_cleanly(bench, tmp_path, body):
    built = asyncio.run(bench.build_async("", body=body))
    assert built.error is not None and built.image_id is None
    assert not (bench.data_root / "escaped.txt").exists()
    assert not any(bench.data_root.parent.glob("escaped.txt"))
    failed = [v for v in built.vertices.values() if v.error]
    assert failed or "failed to read dockerfile" in str(built.error)


def test_run_mount_cache_persists_across_builds_and_leaves_no_trace(bench, tmp_path):
    df = (
        "FROM busybox:local\n"
        "RUN --mount=type=cache,target=/var/cache/app "
        "sh -c 'echo run >> /var/cache/app/log; wc -l < /var/cache/app/log'\n"
    )
    first = bench.build(df)
    second = bench.build(df, no_cache=True)
    assert first.logs().strip() == b"1" and second.logs().strip() == b"2"
    tree = bench.tree(second.ok(), tmp_path / "t")
    assert not (tree / "var" / "cache").exists()  # the mount point the step needed is gone again
    report = asyncio.run(
        bench.backend.prune_cache(BuildCachePruneOptions(filters={"type": "exec.cachemount"}))
    )
    assert len(report.caches_deleted) == 1
    assert bench.build(df, no_cache=True).logs().strip() == b"1"  # pruned: a fresh cache


def test_run_mount_tmpfs_and_bind(bench, tmp_path):
    files = {"src/a.txt": b"from-context\n", "other.txt": b"1"}
    df = (
        "FROM busybox:local AS builder\nRUN echo from-stage > /artifact\n"
        "FROM busybox:local\n"
        "RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/f && cat /scratch/f'\n"
        "RUN --mount=type=bind,source=src,target=/src sh -c 'cat /src/a.txt; echo changed > /src/a.txt'\n"
        "RUN --mount=from=builder,source=/artifact,target=/a cat /a\n"
        "COPY src /copied\n"
    )
    built = bench.build(df, files)
    assert built.logs() == b"t\nfrom-context\nfrom-stage\n"
    tree = bench.tree(built.ok(), tmp_path / "t")
    assert (tree / "copied" / "a.txt").read_bytes() == b"from-context\n"  # the step wrote to its own copy
    assert not (tree / "scratch").exists() and not (tree / "src").exists() and not (tree / "a").exists()
    # The bind mount's key follows the content it shows: another file changing is still a hit.
    again = bench.build(df, {**files, "other.txt": b"2"})
    assert again.cached("[stage-1 5/5] COPY src /copied")
    changed = bench.build(df, {**files, "src/a.txt": b"new\n"})
    assert b"new\n" in changed.logs()


def test_add_hosts_and_network_mode_reach_the_steps(bench):
    built = bench.build(
        "FROM busybox:local\nRUN grep myhost /etc/hosts && hostname\n",
        extra_hosts=["myhost:10.1.2.3"],
        network_mode="none",
    )
    built.ok()
    assert built.logs() == b"10.1.2.3\tmyhost\nbuildkitsandbox\n"


def test_an_uploaded_build_can_still_be_cancelled_by_its_id(bench):
    body = tar_of({"Dockerfile": b"FROM busybox:local\nRUN sleep 30\n"})

    async def request(build_id: str, remote: str, data: bytes):
        path = bench.data_root / f"req-{os.urandom(3).hex()}"
        path.write_bytes(data)
        sink = BufferSink()
        writer = ProgressWriter(sink, None, None, AuxFormatter(sink), JSONProgressOutput(sink))
        options = ImageBuildOptions(version="2", build_id=build_id, remote_context=remote)
        try:
            return await bench.builder.build(BuildConfig(path, options, writer))
        finally:
            path.unlink()

    async def main():
        waiter = asyncio.ensure_future(request("pair2", "upload-request", b""))
        assert await request("upload-request:pair2", "", body) is None  # the upload half returns first
        await asyncio.sleep(0.5)
        await bench.builder.cancel("pair2")
        try:
            await waiter
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    assert asyncio.run(main()) == "cancelled"
    assert bench.builder.jobs == {}


def test_prune_until_accepts_durations_and_times(bench):
    bench.build("FROM busybox:local\nRUN echo recent\n").ok()
    for until in ("24h", "2020-01-01T00:00:00Z", "1600000000"):
        report = asyncio.run(bench.backend.prune_cache(BuildCachePruneOptions(filters={"until": until})))
        assert report.caches_deleted is None  # everything was used after that
    with pytest.raises(errdefs.InvalidParameter, match='time: invalid duration "soon"'):
        asyncio.run(bench.backend.prune_cache(BuildCachePruneOptions(filters={"until": "soon"})))


@contextlib.contextmanager
def http_server(served: dict):
    """A local HTTP server answering every GET with served["body"] (and a fixed Last-Modified)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(served["body"])))
            self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_add_a_url(bench, tmp_path):
    served = {"body": b"first\n"}
    with http_server(served) as base:
        df = f"FROM busybox:local\nADD {base}/dir/file.txt /dl/\nRUN cat /dl/file.txt\n"
        first = bench.build(df)
        tree = bench.tree(first.ok(), tmp_path / "t")
        st = os.stat(tree / "dl" / "file.txt")
        assert (tree / "dl" / "file.txt").read_bytes() == b"first\n"
        assert (st.st_mode & 0o777, int(st.st_mtime)) == (0o600, 1700000000)
        assert bench.build(df).cached("[3/3] RUN cat /dl/file.txt")
        served["body"] = b"second\n"
        assert bench.build(df).logs() == b"second\n"


def test_a_remote_context(bench):
    served = {
        "body": tar_of(
            {"Dockerfile": b"FROM busybox:local\nCOPY a.txt /\nRUN cat /a.txt\n", "a.txt": b"far\n"}
        )
    }
    with http_server(served) as base:
        built = asyncio.run(bench.build_async("", body=b"", remote_context=f"{base}/ctx.tar"))
    built.ok()
    assert built.logs() == b"far\n"


def test_proxy_build_args_reach_run_undeclared_and_stay_out_of_the_key(bench):
    """The predefined proxy args need no ARG (BuildKit's ProxyEnv): both spellings, no cache miss."""
    df = "FROM busybox:local\nRUN echo $HTTP_PROXY $http_proxy $NO_PROXY\n"
    first = bench.build(df, build_args={"HTTP_PROXY": "http://p:1", "no_proxy": "local"})
    image_id = first.ok()
    assert first.logs() == b"http://p:1 http://p:1 local\n"
    assert not any("proxy" in e.lower() for e in bench.config(image_id)["config"]["Env"])
    again = bench.build(df, build_args={"HTTP_PROXY": "http://other:2"})
    [run] = [name for name in again.vertices if name.startswith("[2/2] RUN")]
    assert again.cached(run) and again.ok() == image_id
