"""The classic builder and the BuildKit-style one, side by side, on bench/fanout and bench/steps.

    .venv/bin/python bench/buildkit_vs_classic.py [--host unix:///path.sock] [--rounds 3]

Both builds go through the daemon's API (an embedded daemon on a temporary data root unless --host),
with --no-cache, then again fully cached. For each it prints the median of --rounds runs of:

    wall      from sending the request to the end of the answer's stream
    makespan  first step start to last step end (BuildKit: from its trace; classic: its Step messages)
    work      the sum of the steps' times: what running them one after another costs
    critpath  the longest chain of dependent steps, from BuildKit's timeline: no scheduler beats it

and the ratios wall(classic)/wall(buildkit) and makespan/critical path. Then it schedules a 10,000-vertex
random DAG on a virtual clock (SIMULATION: nothing runs) and prints how long that took for real.
Targets on a 2-core machine: fanout ≤ 1.3 s with makespan/critpath ≤ 1.3, steps ≤ 0.8 s, a fully
cached rebuild ≤ 0.15 s, the simulation < 1 s.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classic_builder import BENCH, BuildFailed, ensure_busybox  # noqa: E402

from minibuild.api.daemon import embedded_daemon  # noqa: E402
from minibuild.api.types import ImageBuildOptions  # noqa: E402
from minibuild.builder.next.progress import StatusResponse  # noqa: E402
from minibuild.builder.next.timeline import (  # noqa: E402
    critical_path,
    makespan,
    random_dag,
    simulate,
    timeline,
    total_work,
    vertices_from_trace,
)
from minibuild.client import APIClient  # noqa: E402
from minibuild.client import context as buildcontext  # noqa: E402

DOCKERFILES = ("fanout", "steps")


@dataclass
class Run:
    wall: float
    makespan: float
    work: float
    critical_path: float  # 0 when unknown (classic builds report no graph)


def build(host: str, name: str, version: str, no_cache: bool) -> Run:
    """One build of bench/<name>/; the classic builder's steps are timed by when their messages arrive."""
    client = APIClient(host)
    _, chunks = buildcontext.tar_context(BENCH / name)
    body = b"".join(chunks)
    options = ImageBuildOptions(no_cache=no_cache, version=version, tags=[f"bench-{name}:v{version}"])
    traces: list[StatusResponse] = []
    step_starts: list[float] = []
    start = time.perf_counter()
    with client.image_build(body, options) as response:
        for message in response.messages():
            if "error" in message:
                raise BuildFailed(f"{name}: {message['error']}")
            if message.get("id") == "moby.buildkit.trace":
                traces.append(StatusResponse.unmarshal(base64.b64decode(message["aux"])))
            elif str(message.get("stream", "")).startswith("Step "):
                step_starts.append(time.perf_counter())
    end = time.perf_counter()
    if version == "1":
        steps = [b - a for a, b in zip(step_starts, [*step_starts[1:], end], strict=True)]
        return Run(end - start, end - step_starts[0] if step_starts else 0.0, sum(steps), 0.0)
    # The Dockerfile's steps: what the build ran for real (not the context, metadata, export).
    entries = [
        e
        for e in timeline(vertices_from_trace(traces))
        if not e.cached and e.name.startswith("[") and "internal]" not in e.name
    ]
    return Run(end - start, makespan(entries), total_work(entries), critical_path(entries)[0])


def median_run(host: str, name: str, version: str, no_cache: bool, rounds: int) -> Run:
    runs = [build(host, name, version, no_cache) for _ in range(rounds)]
    return Run(
        *(
            statistics.median(getattr(r, f) for r in runs)
            for f in ("wall", "makespan", "work", "critical_path")
        )
    )


def simulation_seconds(n: int = 10_000) -> tuple[float, str]:
    target = random_dag(n, seed=1)
    start = time.perf_counter()
    result = simulate(target, lambda v: 1.0 + len(v.name) % 5)
    return time.perf_counter() - start, repr(result)


def run(host: str, rounds: int) -> None:
    ensure_busybox(host)
    for version in ("1", "2"):  # warm up both (runtime, snapshotter, base image import)
        build(host, "steps", version, no_cache=False)
    print(f"median of {rounds} runs; times in seconds")
    header = f"{'':<8}{'':<10}{'wall':>8}{'makespan':>10}{'work':>8}{'critpath':>10}{'mk/cp':>7}"
    print(header)
    for name in DOCKERFILES:
        rows = {}
        for version, label in (("1", "classic"), ("2", "buildkit")):
            rows[version] = median_run(host, name, version, True, rounds)
            r = rows[version]
            cp = rows["2"].critical_path if version == "2" else 0.0
            ratio = f"{r.makespan / cp:>7.2f}" if cp else f"{'':>7}"
            cp_text = f"{cp:>10.2f}" if cp else f"{'-':>10}"
            print(f"{name:<8}{label:<10}{r.wall:>8.2f}{r.makespan:>10.2f}{r.work:>8.2f}{cp_text}{ratio}")
        speedup = rows["1"].wall / rows["2"].wall
        print(f"{name:<8}{'speedup':<10}{speedup:>8.2f}x  (classic wall / buildkit wall)")
        for version, label in (("1", "classic"), ("2", "buildkit")):
            cached = median_run(host, name, version, False, rounds)
            print(f"{name:<8}{label + '*':<10}{cached.wall:>8.3f}   fully cached rebuild")
    seconds, summary = simulation_seconds()
    print(f"simulation: 10,000 vertices scheduled in {seconds:.2f}s of real time")
    print(f"  {summary}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a running daemon (unix:///path); default: an embedded one")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.host:
            run(args.host, args.rounds)
        else:
            with embedded_daemon() as daemon:
                run(daemon.host, args.rounds)
    except BuildFailed as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
