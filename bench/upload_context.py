"""What compressing the build context costs and saves: a 200 MB context sent to POST /build.

    .venv/bin/python bench/upload_context.py [--size-mb 200] [--compressions identity,gzip,bzip2,xz]
                                             [--repeat N]

The context is half random bytes (incompressible, like binaries) and half repetitive text (like
sources and logs), with a two-line Dockerfile: `FROM scratch` + `COPY . /ctx/`. For each compression
the client packs the context exactly as `minibuild build --compression X` does (tar, .dockerignore,
compression, chunked upload) and the script prints:

    bytes sent        the request body's size
    client CPU        CPU seconds of the client (tar + compression + HTTP); the daemon runs in
                      another process, so its work is not counted; "compress" is that minus identity's
    receive           wall time from the first byte sent until the daemon has the whole body on disk
                      (the build router spools the body to <data root>/tmp before it calls a builder)
    build             wall time until the built image exists, through the public API (the median
                      of --repeat builds, none using the cache) — only when the daemon has a
                      builder; otherwise the daemon's answer is printed instead

The receive figure comes from a daemon whose build backend is a probe: it notes that the body has
arrived and refuses the build (501), so nothing is faked as built.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from minibuild import errdefs
from minibuild.api.types import ImageBuildOptions
from minibuild.client import APIClient, APIError
from minibuild.client import context as buildcontext

DOCKERFILE = b"FROM scratch\nCOPY . /ctx/\n"


class ReceiveProbe:
    """A build backend that only observes: the body is on disk when build() is called."""

    def __init__(self, marks: multiprocessing.Queue) -> None:
        self.marks = marks

    async def build(self, config):  # noqa: ANN001, ANN201 - the Backend protocol's build
        self.marks.put((time.time(), config.source.stat().st_size))
        raise errdefs.NotImplemented("bench probe: the context was received; this daemon has no builder")

    async def prune_cache(self, options):  # noqa: ANN001, ANN201
        raise errdefs.NotImplemented("bench probe")

    async def cancel(self, build_id: str) -> None:
        raise errdefs.NotImplemented("bench probe")


def serve(data_root: str, probe: bool, marks: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The daemon, in its own process so that its CPU time is not the client's."""
    from minibuild.api.daemon import EmbeddedDaemon

    daemon = EmbeddedDaemon(data_root, build_backend=ReceiveProbe(marks) if probe else None)
    daemon.start()
    marks.put(daemon.host)
    stop.wait()
    daemon.stop()


def make_context(root: Path, size_mb: int) -> None:
    """Half random, half repetitive text, in 2 MB files."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_bytes(DOCKERFILE)
    line = b"2024-01-01T00:00:00Z INFO building layer sha256:0123456789abcdef step=COPY status=ok\n"
    per_file = 2 << 20
    for i in range(max(1, size_mb // 2)):
        data = os.urandom(per_file) if i % 2 == 0 else (line * (per_file // len(line) + 1))[:per_file]
        (root / f"file{i:04d}.bin").write_bytes(data)


def upload(host: str, root: Path, compression: str) -> tuple[int, float, float, str]:
    """(bytes sent, client CPU s, wall start, the daemon's answer)."""
    sent = 0

    def counted(chunks):  # noqa: ANN001, ANN202
        nonlocal sent
        for chunk in chunks:
            sent += len(chunk)
            yield chunk

    cpu0, start = time.process_time(), time.time()
    name, chunks = buildcontext.tar_context(root, "Dockerfile", buildcontext.read_dockerignore(root))
    body = counted(buildcontext.compress(chunks, compression))
    # no_cache: each compression's build does the COPY again instead of finding the previous one's step
    options = ImageBuildOptions(
        dockerfile=name, tags=[f"bench-upload:{compression}"], suppress_output=True, no_cache=True
    )
    with APIClient(host) as client:
        try:
            with client.image_build(body, options) as resp:
                answer = "".join(m.get("stream", "") or m.get("error", "") for m in resp.messages()).strip()
        except APIError as err:
            answer = str(err)
    return sent, time.process_time() - cpu0, start, answer


class DaemonProcess:
    """A daemon (with the probe, or with whatever builder the daemon has) in a child process."""

    def __init__(self, data_root: Path, probe: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.marks, self.stop = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=serve, args=(str(data_root), probe, self.marks, self.stop))

    def __enter__(self) -> DaemonProcess:
        self.proc.start()
        self.host = self.marks.get(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(timeout=120)


def builder_available(host: str, work: Path) -> str:
    """ "" when the daemon can build; else its answer to a one-file build.

    The probe copies a file: `FROM scratch` alone makes no image ("No image was generated").
    """
    tiny = work / "tiny"
    tiny.mkdir(exist_ok=True)
    (tiny / "Dockerfile").write_bytes(b"FROM scratch\nCOPY Dockerfile /\n")
    answer = upload(host, tiny, "identity")[3]
    return "" if answer.startswith("sha256:") else answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--compressions", default=",".join(buildcontext.COMPRESSIONS))
    parser.add_argument("--repeat", type=int, default=1, help="builds per compression; the median is shown")
    args = parser.parse_args()
    compressions = args.compressions.split(",")
    work = Path(tempfile.mkdtemp(prefix="minibuild-bench-"))
    try:
        make_context(work / "ctx", args.size_mb)
        tar_size = sum(len(c) for c in buildcontext.tar_context(work / "ctx", "Dockerfile", [])[1])
        print(f"context: {tar_size / 1e6:.1f} MB as a tar (half random bytes, half text)")
        rows = {}
        with DaemonProcess(work / "root-probe", probe=True) as daemon:
            for compression in compressions:
                sent, cpu, start, _ = upload(daemon.host, work / "ctx", compression)
                received_at, size = daemon.marks.get(timeout=60)
                if size != sent:
                    raise SystemExit(f"{compression}: the daemon stored {size} bytes, {sent} were sent")
                rows[compression] = (sent, cpu, received_at - start)
        builds: dict[str, str] = {}
        spread: dict[str, str] = {}
        with DaemonProcess(work / "root-build", probe=False) as daemon:
            missing = builder_available(daemon.host, work)
            for compression in compressions if not missing else []:
                times = []
                for _ in range(args.repeat):
                    _, _, start, answer = upload(daemon.host, work / "ctx", compression)
                    if not answer.startswith("sha256:"):
                        builds[compression] = answer
                        break
                    times.append(time.time() - start)
                else:
                    builds[compression] = f"{statistics.median(times):.2f}"
                    if args.repeat > 1:
                        spread[compression] = f"{min(times):.2f}-{max(times):.2f}"
        base_cpu = rows["identity"][1] if "identity" in rows else 0.0
        print(f"{'compression':<12}{'bytes sent':>14}{'client CPU s':>14}{'compress s':>12}"
              f"{'receive s':>11}{'ctx MB/s':>10}{'build s':>9}")  # fmt: skip
        for compression, (sent, cpu, receive) in rows.items():
            compress_cpu = max(cpu - base_cpu, 0.0) if compression != "identity" else 0.0
            build = builds.get(compression, "-")
            print(
                f"{compression:<12}{sent:>14,}{cpu:>14.2f}{compress_cpu:>12.2f}{receive:>11.2f}"
                f"{tar_size / 1e6 / receive:>10.1f}{build if len(build) < 10 else 'failed':>9}"
            )
        for compression, span in spread.items():
            print(f"{compression}: {args.repeat} builds took {span} s")
        if missing:
            print(f"build not measured: the daemon answered: {missing}")
        for compression, build in builds.items():
            if len(build) >= 10:
                print(f"{compression}: build failed: {build}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
