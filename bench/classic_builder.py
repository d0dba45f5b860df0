"""Wall time of the classic builder through the daemon's API: `fanout` and `steps`, with and without cache.

    .venv/bin/python bench/classic_builder.py [--host unix:///path.sock] [--builder 1|2] [--rounds 3]

Without --host the script starts an embedded daemon on a temporary data root. The base image is the
offline busybox (`minibuild busybox`), made once. For each Dockerfile in bench/<name>/ it prints the
wall time of a build with --no-cache, then of the same build fully cached (the median of --rounds
runs each), measured from sending the request to the end of the answer's stream.

`build_seconds(host, name, version, no_cache)` is the reusable part: the BuildKit-style builder is
measured the same way with version "2".
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from minibuild.api.daemon import embedded_daemon
from minibuild.api.types import ImageBuildOptions
from minibuild.client import APIClient, APIError
from minibuild.client import context as buildcontext
from minibuild.image.busybox import write_busybox_rootfs

BENCH = Path(__file__).resolve().parent
DOCKERFILES = ("fanout", "steps")


class BuildFailed(Exception):
    pass


def ensure_busybox(host: str) -> None:
    """Import the offline busybox as busybox:latest unless the daemon has it."""
    client = APIClient(host)
    try:
        client.image_inspect("busybox:latest")
        return
    except APIError:
        pass
    rootfs = io.BytesIO()
    write_busybox_rootfs(rootfs, source_date_epoch=0)
    client.image_import(rootfs.getvalue(), "busybox:latest", changes=['CMD ["sh"]'])


def build_seconds(host: str, name: str, version: str = "1", no_cache: bool = False) -> float:
    """One build of bench/<name>/ through POST /build; the wall time until its stream ends."""
    client = APIClient(host)
    _, chunks = buildcontext.tar_context(BENCH / name)
    body = b"".join(chunks)
    options = ImageBuildOptions(no_cache=no_cache, version=version, tags=[f"bench-{name}:latest"])
    start = time.perf_counter()
    with client.image_build(body, options) as response:
        for message in response.messages():
            if "error" in message:
                raise BuildFailed(f"{name}: {message['error']}")
    return time.perf_counter() - start


def median_seconds(host: str, name: str, version: str, no_cache: bool, rounds: int) -> float:
    return statistics.median(build_seconds(host, name, version, no_cache) for _ in range(rounds))


def run(host: str, version: str, rounds: int) -> None:
    ensure_busybox(host)
    print(f"builder version {version}, median of {rounds} runs")
    print(f"{'dockerfile':<10} {'--no-cache':>12} {'cached':>10}")
    for name in DOCKERFILES:
        cold = median_seconds(host, name, version, True, rounds)
        warm = median_seconds(host, name, version, False, rounds)
        print(f"{name:<10} {cold:>11.2f}s {warm:>9.3f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a running daemon (unix:///path); default: an embedded one")
    parser.add_argument("--builder", default="1", choices=("1", "2"), help="1: classic, 2: BuildKit-style")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.host:
            run(args.host, args.builder, args.rounds)
        else:
            with embedded_daemon() as daemon:
                run(daemon.host, args.builder, args.rounds)
    except BuildFailed as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
