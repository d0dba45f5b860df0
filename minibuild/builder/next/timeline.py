"""A build as a timeline, and the solver on a virtual clock, SIMULATION (buildkit client/graph.go's vertex
times, laid out as a Gantt chart; no BuildKit file simulates).

`timeline(vertices)` turns the final state of each vertex — from a `ProgressWriter`, or decoded from the
`moby.buildkit.trace` messages of any build, dockerd's included — into entries with start, end, cached
and a lane (the lowest lane free when it starts), ready to plot (`plot_timeline`). `critical_path` is the
longest chain of dependent work in it: no scheduler can finish sooner, however many cores it has.

`simulate(...)` runs the real `Solver` on a synthetic graph whose vertices only wait for a given
duration, on an event loop whose clock is virtual: waiting costs no real time, so graphs far larger
than one machine could build are scheduled in well under a second. Everything it returns is labelled
SIMULATION; nothing in it ran.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import selectors
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minibuild.builder.next import llb
from minibuild.builder.next.progress import ProgressWriter, StatusResponse, Vertex
from minibuild.builder.next.solver import CacheMap, CacheStore, ExecContext, MemoryCache, Solver, VertexRun

SIMULATION = "SIMULATION"


@dataclass
class TimelineEntry:
    """One vertex on the timeline; times in seconds since the build's first start."""

    digest: str
    name: str
    start: float
    end: float
    cached: bool
    lane: int
    inputs: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


def vertices_from_trace(responses: Iterable[StatusResponse | bytes]) -> list[Vertex]:
    """The latest state of every vertex in a stream of StatusResponses (or their protobuf bytes)."""
    latest: dict[str, Vertex] = {}
    for sr in responses:
        if isinstance(sr, bytes | bytearray):
            sr = StatusResponse.unmarshal(bytes(sr))
        for v in sr.vertexes:
            latest[v.digest] = v
    return list(latest.values())


def timeline(vertices: Iterable[Vertex | VertexRun] | ProgressWriter) -> list[TimelineEntry]:
    """Entries for the vertices that started, ordered by start, each in the lowest free lane.

    `vertices` are progress vertices (a ProgressWriter's, or decoded from traces) or a job's runs.
    """
    if isinstance(vertices, ProgressWriter):
        vertices = vertices.vertices.values()
    done = [v for v in vertices if v.started is not None and v.completed is not None]
    if not done:
        return []
    t0 = min(v.started for v in done)  # type: ignore[type-var]
    done.sort(key=lambda v: (v.started, v.completed, v.digest))
    entries: list[TimelineEntry] = []
    busy: list[tuple[float, int]] = []  # (end, lane) of the lanes in use
    free: list[int] = []
    for v in done:
        start, end = v.started - t0, max(v.completed, v.started) - t0  # type: ignore[operator]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy) + len(free)
        heapq.heappush(busy, (end, lane))
        entries.append(TimelineEntry(v.digest, v.name, start, end, v.cached, lane, list(v.inputs), v.error))
    return entries


def makespan(entries: Iterable[TimelineEntry]) -> float:
    """From the first start to the last end."""
    entries = list(entries)
    return max((e.end for e in entries), default=0.0) - min((e.start for e in entries), default=0.0)


def total_work(entries: Iterable[TimelineEntry]) -> float:
    """The sum of every vertex's duration: what a strictly sequential builder would spend."""
    return sum(e.duration for e in entries)


def critical_path(entries: Iterable[TimelineEntry]) -> tuple[float, list[TimelineEntry]]:
    """The longest chain of dependent work (durations summed along inputs) and its entries, first to last."""
    by_digest = {e.digest: e for e in entries}
    best: dict[str, tuple[float, str | None]] = {}
    for e in sorted(by_digest.values(), key=lambda e: e.start):
        # Inputs start before their users, so sorting by start visits every input first.
        prior = max(((best[i][0], i) for i in e.inputs if i in best), default=(0.0, None))
        best[e.digest] = (prior[0] + e.duration, prior[1])
    if not best:
        return 0.0, []
    last = max(best, key=lambda d: best[d][0])
    length = best[last][0]
    path: list[TimelineEntry] = []
    cursor: str | None = last
    while cursor is not None:
        path.append(by_digest[cursor])
        cursor = best[cursor][1]
    return length, path[::-1]


def plot_timeline(entries: list[TimelineEntry], ax: Any = None, *, title: str = "") -> Any:
    """A Gantt chart: one bar per vertex in its lane; cached vertices hatched. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * (1 + max((e.lane for e in entries), default=0))))
    for e in entries:
        color = "tab:red" if e.error else ("lightgray" if e.cached else "tab:blue")
        ax.barh(e.lane, max(e.duration, 0.002), left=e.start, color=color, edgecolor="black",
                hatch="//" if e.cached else None)  # fmt: skip
        ax.text(e.start, e.lane, " " + e.name[:40], va="center", ha="left", fontsize=7)
    ax.set_xlabel("seconds")
    ax.set_ylabel("lane")
    ax.invert_yaxis()
    if title:
        ax.set_title(title)
    return ax


# ---- simulation on a virtual clock ---------------------------------------------------------------------


class _VirtualSelector:
    """A selector that never sleeps: a wait for a timer moves the loop's virtual clock instead."""

    def __init__(self, loop: VirtualClockEventLoop, selector: selectors.BaseSelector) -> None:
        self._loop = loop
        self._selector = selector

    def select(self, timeout: float | None = None) -> list:
        events = self._selector.select(0)
        if events:
            return events
        if timeout is None:
            raise SimulationError("the simulated graph waits on nothing: deadlock")
        self._loop.virtual_now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualClockEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is virtual: asyncio.sleep(d) returns at once, d seconds later."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(_VirtualSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self.virtual_now


class SimulationError(Exception):
    """The simulated graph cannot be scheduled (it waits on something that never happens)."""


class _SimulatedOp:
    """A vertex that only takes time: `duration` seconds of the virtual clock."""

    def __init__(self, vertex: llb.Vertex, duration: float) -> None:
        self.vertex, self.duration = vertex, duration

    def cache_map(self, ctx: ExecContext) -> CacheMap:
        return CacheMap(self.vertex.digest)

    def exec(self, ctx: ExecContext, inputs: list[Any]) -> Any:
        return asyncio.sleep(self.duration, self.vertex.digest)  # an awaitable, like an async def


def synthetic_vertex(name: str, inputs: Iterable[llb.Vertex] = (), **attrs: Any) -> llb.Vertex:
    """A vertex of a synthetic graph: only its name (and any attrs) and inputs define it."""
    return llb.Vertex({"type": "sim", "name": name, **attrs}, tuple(inputs), name=name)


def random_dag(n: int, *, max_inputs: int = 3, seed: int = 0, window: int = 50) -> llb.Vertex:
    """A random DAG of `n` vertices and one sink depending on every vertex no one else uses.

    Vertex i draws up to `max_inputs` inputs among the `window` vertices before it, so the graph has
    long chains and wide layers, like real multi-stage builds.
    """
    rng = random.Random(seed)
    vertices: list[llb.Vertex] = []
    used: set[int] = set()
    for i in range(n):
        lo = max(0, i - window)
        count = rng.randint(0, min(max_inputs, i - lo))
        picks = sorted(rng.sample(range(lo, i), count))
        used.update(picks)
        vertices.append(synthetic_vertex(f"v{i}", [vertices[p] for p in picks]))
    sinks = [v for i, v in enumerate(vertices) if i not in used]
    return synthetic_vertex("sink", sinks)


class SimulationResult:
    """What a simulation scheduled; `label` is always SIMULATION. The timeline (`entries`, with lanes)
    is made when first asked for: the figures need only the runs."""

    label = SIMULATION

    def __init__(self, runs: list[VertexRun], max_parallelism: int | None) -> None:
        self.runs = [r for r in runs if r.started is not None and r.completed is not None]
        self.max_parallelism = max_parallelism
        self.makespan = max((r.completed for r in self.runs), default=0.0) - min(
            (r.started for r in self.runs), default=0.0
        )
        self.total_work = sum(r.completed - r.started for r in self.runs)
        self.critical_path = _longest_chain(self.runs)
        self._entries: list[TimelineEntry] | None = None

    @property
    def entries(self) -> list[TimelineEntry]:
        if self._entries is None:
            self._entries = timeline(self.runs)
        return self._entries

    def __repr__(self) -> str:
        return (
            f"{self.label}: {len(self.runs)} vertices, makespan {self.makespan:.3f}s (virtual), "
            f"work {self.total_work:.3f}s, critical path {self.critical_path:.3f}s, "
            f"max parallelism {self.max_parallelism or 'unlimited'}"
        )


def _longest_chain(runs: list[VertexRun]) -> float:
    """critical_path's length, straight from a job's runs (inputs are always solved first)."""
    best: dict[str, float] = {}
    for r in sorted(runs, key=lambda r: r.started):  # type: ignore[arg-type, return-value]
        prior = max((best.get(i.digest, 0.0) for i in r.vertex.inputs), default=0.0)
        best[r.vertex.digest] = prior + r.completed - r.started  # type: ignore[operator]
    return max(best.values(), default=0.0)


def simulate(
    target: llb.Vertex,
    durations: Mapping[str, float] | Callable[[llb.Vertex], float],
    *,
    max_parallelism: int | None = None,
    cache: CacheStore | None = None,
) -> SimulationResult:
    """SIMULATION: schedule `target`'s graph with the real solver; vertex v takes durations(v) seconds.

    `durations` maps a vertex name to seconds, or is a function of the vertex. A `cache` (a MemoryCache
    kept between calls) makes a second simulation hit it, as a rebuild does.
    """

    def duration_of(vertex: llb.Vertex) -> float:
        if callable(durations):
            return float(durations(vertex))
        return float(durations.get(vertex.name, 0.0))

    async def run(loop: VirtualClockEventLoop) -> list[VertexRun]:
        solver = Solver(
            lambda v: _SimulatedOp(v, duration_of(v)),
            cache if cache is not None else MemoryCache(),
            max_parallelism=max_parallelism,
            clock=loop.time,
        )
        job = solver.new_job()
        await job.build(target)
        return list(job.runs.values())

    return SimulationResult(_run_on_virtual_loop(run), max_parallelism)


def _run_on_virtual_loop(fn: Callable[[VirtualClockEventLoop], Any]) -> Any:
    """Run `fn(loop)` to completion on a fresh virtual loop, in a thread if this one runs a loop."""

    def main() -> Any:
        loop = VirtualClockEventLoop()
        try:
            return loop.run_until_complete(fn(loop))
        finally:
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return main()
    box: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            box["value"] = main()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=in_thread, name="minibuild-simulation")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
