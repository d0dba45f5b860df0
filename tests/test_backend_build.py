"""Backend.build (moby api/server/backend/build): tags checked first, the builder switch, squash,
`Successfully built/tagged`, reproducible IDs, cancellation, and /build/prune and /build/cancel."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from golden.harness import BuildBench, post_build, tar_of
from test_next_harness import processes_with

from minibuild.api.daemon import embedded_daemon
from minibuild.builder import source_date_epoch
from minibuild.image.busybox import create_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
REPO = Path(__file__).resolve().parent.parent
STARTED = b'{"stream":"started\\n"}'  # what `echo started` prints, as a message


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        create_busybox_image(d.daemon.image_service, "busybox:local", source_date_epoch=0)
        yield d


def image_count(daemon) -> int:
    return len(daemon.daemon.image_service.image_store.images())


def output(messages) -> str:
    return "".join(m.get("stream", "") for m in messages)


# --- tags ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["Golden-Upper"], "invalid reference format: repository name must be lowercase"),
        (["a:b:c"], "invalid reference format"),
        (["a@sha256:" + "0" * 64], "build tag cannot contain a digest"),
        (["good:v1", "-bad"], "invalid reference format"),
        (["x" * 256], "repository name must not be more than 255 characters"),
    ],
)
def test_a_bad_tag_fails_before_any_work(daemon, tags, message):
    before = image_count(daemon)
    status, messages = post_build(
        daemon.socket_path, {"t": tags}, tar_of({"Dockerfile": b"FROM busybox:local\nENV A=1\n"})
    )
    assert (status, messages) == (500, [{"message": message}])
    assert image_count(daemon) == before


def test_tags_in_order_normalised_and_deduplicated(daemon):
    query = {"t": ["golden-h1", "golden-h2:v2", "", "golden-h1:latest"]}
    status, messages = post_build(
        daemon.socket_path, query, tar_of({"Dockerfile": b"FROM busybox:local\nENV H=1\n"})
    )
    texts = [m["stream"] for m in messages if "stream" in m]
    assert status == 200
    assert texts[-3].startswith("Successfully built ")
    assert texts[-2:] == ["Successfully tagged golden-h1:latest\n", "Successfully tagged golden-h2:v2\n"]
    service = daemon.daemon.image_service
    assert service.get_image("golden-h1").id == service.get_image("golden-h2:v2").id
    assert service.get_image("golden-h1").id.startswith("sha256:" + texts[-3].split()[-1])


def test_an_empty_tag_builds_untagged(daemon):
    status, messages = post_build(
        daemon.socket_path, {"t": ""}, tar_of({"Dockerfile": b"FROM busybox:local\nENV E=1\n"})
    )
    assert status == 200 and "Successfully tagged" not in output(messages)


def test_target_not_found_and_case_insensitive(daemon):
    dockerfile = b"FROM busybox:local AS one\nENV ONE=1\nFROM busybox:local AS two\nENV TWO=1\n"
    status, messages = post_build(daemon.socket_path, {"target": "nope"}, tar_of({"Dockerfile": dockerfile}))
    assert (status, messages) == (400, [{"message": "failed to reach build target nope in Dockerfile"}])
    status, messages = post_build(daemon.socket_path, {"target": "ONE"}, tar_of({"Dockerfile": dockerfile}))
    assert status == 200 and "Step 2/2 : ENV ONE=1" in output(messages) and "TWO" not in output(messages)


def test_version_2_goes_to_the_buildkit_style_builder(daemon):
    query = {"version": "2", "t": "golden-bk:v1"}
    status, messages = post_build(
        daemon.socket_path, query, tar_of({"Dockerfile": b"FROM busybox:local\nENV BK=1\n"})
    )
    assert status == 200, messages
    image_id = daemon.daemon.image_service.get_image("golden-bk:v1").id
    assert {"id": "moby.image.id", "aux": {"ID": image_id}} in messages
    assert messages[-1] == {"stream": "Successfully tagged golden-bk:v1\n"}
    assert "Successfully built" not in output(messages)


def test_without_a_buildkit_builder_version_2_is_refused_and_prune_has_nothing(tmp_path):
    from minibuild.api.types import BuildCachePruneOptions
    from minibuild.backend import Backend
    from minibuild.builder.dockerfile.builder import BuildManager

    bench = BuildBench(tmp_path / "root")
    components = bench.backend.components
    bench.backend = Backend(BuildManager(components), components)
    built = bench.build("FROM busybox:local\n", version="2")
    assert type(built.error).__name__ == "NotImplemented" and "version=2" in str(built.error)
    assert bench.build("FROM busybox:local\nENV CLASSIC=1\n").error is None
    report = asyncio.run(bench.backend.prune_cache(BuildCachePruneOptions()))
    assert (report.caches_deleted, report.space_reclaimed) == (None, 0)
    asyncio.run(bench.backend.cancel("anything"))  # no BuildKit build to cancel: not an error


def test_prune_answers_in_dockers_shape(daemon):
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(daemon.socket_path)

    conn = Conn("localhost")
    conn.request("POST", "/v1.40/build/prune?filters=" + urllib.parse.quote('{"id":{"nope":true}}'))
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b'{"CachesDeleted":null,"SpaceReclaimed":0}\n')
    conn.close()


# --- squash ----------------------------------------------------------------------------------------------


def test_squash_merges_the_build_layers_and_keeps_the_history(tmp_path):
    bench = BuildBench(tmp_path / "root")
    dockerfile = """FROM busybox:local
RUN echo a > /a && echo b > /b && mkdir -p /d/e && echo f > /d/e/f
RUN rm /b && rm -r /d/e && echo c > /c
ENV SQUASHED=1
"""
    plain = bench.build(dockerfile).ok()
    built = bench.build(dockerfile, squash=True, tags=["golden-squash:v1"])
    squashed = built.ok()
    assert squashed != plain
    # backend.go: the squashed image's aux ID follows the builder's own, right before "Successfully built".
    squashed_aux = built.messages.index({"id": "moby.image.id", "aux": {"ID": squashed}})
    assert built.messages[squashed_aux + 1] == {"stream": f"Successfully built {squashed[7:19]}\n"}
    assert {"aux": {"ID": plain}} in built.messages[:squashed_aux]  # the stage's own, unsquashed
    assert built.texts[-2:] == [
        f"Successfully built {squashed[7:19]}\n",
        "Successfully tagged golden-squash:v1\n",
    ]
    config, plain_config = bench.config(squashed), bench.config(plain)
    base = bench.config(bench.busybox_id)
    assert config["rootfs"]["diff_ids"][:-1] == base["rootfs"]["diff_ids"]
    assert len(config["rootfs"]["diff_ids"]) == len(base["rootfs"]["diff_ids"]) + 1
    assert [h.get("created_by") for h in config["history"][:-1]] == [
        h.get("created_by") for h in plain_config["history"]
    ]
    assert all(h.get("empty_layer") for h in config["history"][1:-1])
    assert config["history"][-1]["comment"] == f"merge {plain} to {bench.busybox_id}"
    assert config["config"] == plain_config["config"]
    assert bench.service.image_store.get_parent(squashed) == bench.busybox_id

    def listing(root: Path) -> dict[str, bytes | None]:
        return {
            str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(root.rglob("*"))
        }

    assert listing(bench.tree(squashed, tmp_path / "squashed")) == listing(
        bench.tree(plain, tmp_path / "plain")
    )
    layer = bench.service.layer_store.get(bench.service.get_image(squashed).chain_id)
    import tarfile

    with layer.open() as f, tarfile.open(fileobj=f) as tar:
        names = sorted(tar.getnames())
    assert names == ["a", "c", "d", "d/.wh.e"] or names == ["a", "c", "d"]  # b never reached the base


def test_squash_needs_experimental_mode(daemon):
    status, messages = post_build(
        daemon.socket_path, {"squash": "1"}, tar_of({"Dockerfile": b"FROM busybox:local\n"})
    )
    assert (status, messages) == (400, [{"message": "squash is only supported with experimental mode"}])


# --- reproducible builds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM scratch\nCOPY f /f\nENV A=1\nWORKDIR /w\n",
        'FROM busybox:local\nRUN echo run > /run.txt && mkdir /made\nCOPY f /made/\nWORKDIR /w\nCMD ["sh"]\n',
    ],
)
def test_source_date_epoch_gives_the_same_ids_in_two_data_roots(tmp_path, dockerfile):
    files = {"f": b"reproducible\n"}
    args = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = BuildBench(tmp_path / "one").build(dockerfile, files, build_args=args)
    second = BuildBench(tmp_path / "two").build(dockerfile, files, build_args=args, no_cache=True)
    assert first.ok() == second.ok()
    assert "[Warning]" not in first.output  # the builder consumes SOURCE_DATE_EPOCH itself
    bench = BuildBench(tmp_path / "three")
    image_id = bench.build(dockerfile, files, build_args=args).ok()
    assert image_id == first.image_id
    c = bench.config(image_id)
    assert c["created"] == "2023-11-14T22:13:20Z"
    assert c.get("container", "") == "" and c["container_config"]["Hostname"] == ""


def test_source_date_epoch_from_the_daemon_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    one = BuildBench(tmp_path / "one").build("FROM scratch\nCOPY f /f\n", {"f": b"x"}).ok()
    two = BuildBench(tmp_path / "two").build("FROM scratch\nCOPY f /f\n", {"f": b"x"}).ok()
    assert one == two
    assert source_date_epoch({}, {"SOURCE_DATE_EPOCH": "5"}) == 5
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "7"}, {"SOURCE_DATE_EPOCH": "5"}) == 7
    assert source_date_epoch({}, {}) is None
    with pytest.raises(Exception, match="invalid SOURCE_DATE_EPOCH"):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"}, {})


# --- cancellation ----------------------------------------------------------------------------------------


def wait_until(condition, what: str, limit: float = 60.0) -> None:
    """Poll `condition`; the limit only stops a broken test from hanging, it measures nothing."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def start_streaming_build(socket_path: str, dockerfile: bytes, **query) -> tuple[socket.socket, list[bytes]]:
    """Send a build and read its stream in a thread; the caller may close the socket at any time."""
    body = tar_of({"Dockerfile": dockerfile})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    url = "/v1.40/build?" + urllib.parse.urlencode(query)
    sock.sendall(
        f"POST {url} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-tar\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received: list[bytes] = []

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                received.append(chunk)
        except OSError:
            pass

    threading.Thread(target=read, daemon=True).start()
    return sock, received


def leftovers(data_root: Path) -> list[str]:
    """Snapshots and unpacked contexts still on disk."""
    snapshots = data_root / "snapshots"
    found = [str(p) for p in snapshots.glob("*/snapshots/*")]
    found += [str(p) for p in (data_root / "builder" / "tmp").iterdir()]
    return found


def test_a_client_that_goes_away_cancels_the_running_step(daemon):
    service = daemon.daemon.image_service
    marker = "4242.5"
    dockerfile = f"FROM busybox:local\nRUN echo first-step\nRUN echo started && sleep {marker}\n".encode()
    sock, received = start_streaming_build(daemon.socket_path, dockerfile, nocache="1")
    wait_until(lambda: STARTED in b"".join(received), "the RUN to start")
    assert processes_with(marker)
    images_before = len(service.image_store.images())
    sock.shutdown(socket.SHUT_RDWR)  # close() alone would wait for the reading thread's recv()
    sock.close()
    wait_until(lambda: not processes_with(marker), "the step's processes to be killed")
    wait_until(lambda: not leftovers(daemon.data_root), "the snapshot and the context to be removed")
    assert len(service.image_store.images()) == images_before  # nothing of the cancelled step
    for image in service.image_store.images().values():
        assert not any(marker in h.get("created_by", "") for h in image.history)


def test_cancelling_between_steps_says_build_cancelled(tmp_path):
    bench = BuildBench(tmp_path / "root")

    async def scenario():
        task = asyncio.ensure_future(bench.build_async("FROM busybox:local\nRUN sleep 4343.5\nENV NEVER=1\n"))
        while not processes_with("4343.5"):
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert not processes_with("4343.5")
    assert leftovers(bench.data_root) == []
    images = bench.service.image_store.images().values()
    assert all("NEVER" not in json.dumps(i.config) for i in images)


def test_build_cancelled_message(tmp_path):
    """Cancelled by the daemon (it stops): the stream gets "Build cancelled", as in moby."""
    from minibuild.api.backend import BuildConfig, ProgressWriter
    from minibuild.api.streamformatter import (
        AuxFormatter,
        BufferSink,
        JSONProgressOutput,
        new_stderr_writer,
        new_stdout_writer,
    )
    from minibuild.api.types import ImageBuildOptions

    bench = BuildBench(tmp_path / "root")
    sink = BufferSink()
    writer = ProgressWriter(
        sink, new_stdout_writer(sink), new_stderr_writer(sink), AuxFormatter(sink), JSONProgressOutput(sink)
    )
    body = tmp_path / "body.tar"
    body.write_bytes(tar_of({"Dockerfile": b"FROM busybox:local\nRUN sleep 4444.5\n"}))

    async def scenario():
        task = asyncio.ensure_future(bench.backend.build(BuildConfig(body, ImageBuildOptions(), writer)))
        while not processes_with("4444.5"):
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert sink.getvalue().endswith(b'{"stream":"Build cancelled\\n"}\r\n')


class CancellingSink:
    """A stream sink that cancels the build's task when the `nth` message containing `when` is written:
    the request to stop lands while the build runs, as a client's disconnect does."""

    def __init__(self, when: bytes, nth: int = 1) -> None:
        self.buffer = bytearray()
        self.when, self.nth = when, nth

    def write(self, data: bytes) -> None:
        self.buffer += data
        if self.when in data:
            self.nth -= 1
            if self.nth == 0:
                asyncio.current_task().cancel()


@pytest.mark.parametrize(
    ("when", "nth"),
    # Step 2 writes " ---> Running in <id>", "Removing intermediate container <id>", " ---> <id>": the
    # third " ---> " of the build (after FROM's) is the end of step 2.
    [(b'"Step 2/3 : ENV B=2"', 1), (b" ---\\u003e ", 3)],
    ids=["while-step-2-runs", "after-step-2"],
)
def test_cancelling_between_two_metadata_steps(tmp_path, when, nth):
    """moby's loop checks clientCtx.Done() before each command: a step that was running finishes its
    commit, the next one never starts, the stream ends with "Build cancelled"."""
    from minibuild.api.backend import BuildConfig, ProgressWriter
    from minibuild.api.streamformatter import (
        AuxFormatter,
        JSONProgressOutput,
        new_stderr_writer,
        new_stdout_writer,
    )
    from minibuild.api.types import ImageBuildOptions

    bench = BuildBench(tmp_path / "root")
    body = tmp_path / "body.tar"
    body.write_bytes(tar_of({"Dockerfile": b"FROM busybox:local\nENV B=2\nENV C=3\n"}))
    sink = CancellingSink(when, nth)
    writer = ProgressWriter(
        sink, new_stdout_writer(sink), new_stderr_writer(sink), AuxFormatter(sink), JSONProgressOutput(sink)
    )
    before = image_count_of(bench)

    async def scenario():
        with pytest.raises(asyncio.CancelledError):
            await bench.backend.build(BuildConfig(body, ImageBuildOptions(), writer))

    asyncio.run(scenario())
    texts = [json.loads(line).get("stream") for line in bytes(sink.buffer).split(b"\r\n") if line]
    assert texts[-1] == "Build cancelled\n"
    assert "Step 2/3 : ENV B=2" in texts and "Step 3/3 : ENV C=3" not in texts
    assert texts[texts.index("Step 2/3 : ENV B=2") + 2].startswith(" ---> ")  # step 2 finished
    images = bench.service.image_store.images().values()
    assert image_count_of(bench) == before + 1
    assert any("B=2" in json.dumps(i.config) for i in images)
    assert not any("C=3" in json.dumps(i.config) for i in images)
    assert leftovers(bench.data_root) == []


def image_count_of(bench: BuildBench) -> int:
    return len(bench.service.image_store.images())


def test_build_cancel_does_not_stop_a_classic_build(daemon):
    """/build/cancel is for BuildKit builds; a classic build with that buildid runs on (reference §6.2)."""
    import http.client

    dockerfile = b"FROM busybox:local\nRUN echo started && sleep 1\nRUN echo after\n"
    sock, received = start_streaming_build(daemon.socket_path, dockerfile, buildid="golden-id", nocache="1")
    wait_until(lambda: STARTED in b"".join(received), "the RUN to start")

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(daemon.socket_path)

    conn = Conn("localhost")
    conn.request("POST", "/v1.40/build/cancel?id=golden-id")
    assert conn.getresponse().status == 200
    conn.close()
    wait_until(lambda: b"Successfully built" in b"".join(received), "the build to finish")
    sock.close()
    assert b"after" in b"".join(received)


def test_sigterm_stops_the_daemon_and_kills_a_running_step(tmp_path):
    """`minibuild daemon` on SIGTERM: the running RUN is killed, nothing half-written stays behind."""
    root = tmp_path / "root"
    sock_path = str(tmp_path / "d.sock")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minibuild",
            "daemon",
            "--host",
            f"unix://{sock_path}",
            "--data-root",
            str(root),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: os.path.exists(sock_path), "the daemon to listen")
        subprocess.run(
            [sys.executable, "-m", "minibuild", "--host", f"unix://{sock_path}", "busybox"],
            env=env,
            check=True,
            capture_output=True,
        )
        marker = "4545.5"
        _, received = start_streaming_build(
            sock_path, f"FROM busybox\nRUN echo started && sleep {marker}\n".encode()
        )
        wait_until(lambda: STARTED in b"".join(received), "the RUN to start")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=120) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert not processes_with(marker)
    assert leftovers(root) == []
    from minibuild.image.service import ImageService

    service = ImageService(root)
    assert [i.history[-1].get("created_by", "") for i in service.image_store.images().values()] == [""]


def test_cancelled_while_a_snapshot_is_prepared_leaves_nothing(tmp_path, monkeypatch):
    """The snapshot a cancelled step was still making is thrown away once it is made."""
    from minibuild.builder.dockerfile.imagecontext import RWLayer

    bench = BuildBench(tmp_path / "root")
    entered, gate = threading.Event(), threading.Event()
    prepare = RWLayer.__init__

    def slow_prepare(self, *args, **kwargs):
        entered.set()
        gate.wait(60)
        prepare(self, *args, **kwargs)

    monkeypatch.setattr(RWLayer, "__init__", slow_prepare)

    async def scenario():
        task = asyncio.ensure_future(bench.build_async("FROM busybox:local\nRUN true\n", no_cache=True))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert leftovers(bench.data_root) == []


def test_a_restart_sweeps_snapshots_and_unpacked_layers_of_deleted_images(tmp_path):
    from minibuild.backend import new_build_components

    bench = BuildBench(tmp_path / "root")
    dockerfile = (
        "FROM busybox:local\nRUN echo gone > /gone\nRUN true\n"  # the 2nd RUN unpacks the 1st's layer
    )
    image_id = bench.build(dockerfile, tags=["golden-gone:v1"]).ok()
    snapshotter = bench.backend.components.snapshotter
    unpacked = Path(getattr(snapshotter, "layers", None) or snapshotter.chains)
    top = bench.service.get_image(image_id).chain_id.removeprefix("sha256:")
    base = bench.service.get_image(bench.busybox_id).chain_id.removeprefix("sha256:")
    assert {top, base} <= {p.name for p in unpacked.iterdir()}
    stale = snapshotter.snapshots / ("f" * 64)
    stale.mkdir()  # a snapshot a killed daemon left behind
    bench.service.remove("golden-gone:v1")
    new_build_components(tmp_path / "root", image_service=bench.service)
    assert not stale.exists()
    names = {p.name for p in unpacked.iterdir()}
    assert base in names and top not in names


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_first_experiment_with_curl(daemon):
    """`curl -X POST --unix-socket SOCK localhost/v1.40/build`: no body, so no Dockerfile."""
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "--unix-socket", daemon.socket_path,
         "localhost/v1.40/build"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.stdout == '{"message":"Cannot locate specified Dockerfile: Dockerfile"}\n\n500'
