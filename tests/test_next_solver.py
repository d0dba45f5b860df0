"""The solver on synthetic vertices, on a virtual clock: parallelism, pruning by cache, failures."""

import asyncio

import pytest

from minibuild.builder.next.llb import marshal
from minibuild.builder.next.progress import ProgressWriter
from minibuild.builder.next.solver import CANCELED, CacheMap, MemoryCache, SolveError, Solver
from minibuild.builder.next.timeline import VirtualClockEventLoop, synthetic_vertex


class Op:
    """Sleeps `duration` virtual seconds, records that it ran, returns its name and its inputs'."""

    log: list[str]

    def __init__(self, vertex, world):
        self.vertex, self.world = vertex, world

    def cache_map(self, ctx):
        content = self.world.get("content_deps", {}).get(self.vertex.name)
        deps = [None] * len(self.vertex.inputs)
        if content is not None:

            async def by_content(result):
                return "content:" + str(result).upper()

            deps[content] = by_content
        return CacheMap(self.vertex.digest, deps)

    async def exec(self, ctx, inputs):
        self.world["ran"].append(self.vertex.name)
        ctx.stdout(f"{self.vertex.name} runs\n".encode())
        try:
            await asyncio.sleep(self.world["durations"].get(self.vertex.name, 1.0))
        except asyncio.CancelledError:
            self.world["cancelled"].append(self.vertex.name)
            raise
        if self.vertex.name in self.world.get("fail", ()):
            raise RuntimeError(f"{self.vertex.name} failed")
        return self.world.get("results", {}).get(self.vertex.name, self.vertex.name)


def world(**kw):
    return {"ran": [], "cancelled": [], "durations": {}, **kw}


def run(target, w, *, cache=None, max_parallelism=None, cancel_after=None):
    loop = VirtualClockEventLoop()

    async def main():
        progress = ProgressWriter(clock=loop.time)
        solver = Solver(
            lambda v: Op(v, w), cache or MemoryCache(), max_parallelism=max_parallelism, clock=loop.time
        )
        job = solver.new_job(progress)
        task = asyncio.ensure_future(job.build(target))
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            task.cancel()
        try:
            return await task, job, progress
        except BaseException as err:
            return err, job, progress

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def diamond():
    a = synthetic_vertex("a")
    b = synthetic_vertex("b", [a])
    c = synthetic_vertex("c", [a])
    return a, b, c, synthetic_vertex("d", [b, c])


def span(job, name):
    r = next(r for r in job.runs.values() if r.name == name)
    return r.started, r.completed


def test_independent_vertices_overlap_and_inputs_come_first():
    a, b, c, d = diamond()
    w = world(durations={"a": 1, "b": 2, "c": 3, "d": 1})
    result, job, _ = run(d, w)
    assert result == "d"
    assert span(job, "a") == (0, 1)
    assert span(job, "b") == (1, 3) and span(job, "c") == (1, 4)  # b and c at once
    assert span(job, "d") == (4, 5)
    assert sorted(w["ran"]) == ["a", "b", "c", "d"]


def test_max_parallelism_one_runs_one_at_a_time():
    a, b, c, d = diamond()
    w = world(durations={"a": 1, "b": 2, "c": 3, "d": 1})
    _, job, _ = run(d, w, max_parallelism=1)
    intervals = sorted(span(job, n) for n in "abcd")
    assert all(x[1] <= y[0] for x, y in zip(intervals, intervals[1:], strict=False))
    assert intervals[-1][1] == 7


def test_identical_vertices_run_once():
    a1 = synthetic_vertex("a")
    a2 = synthetic_vertex("a")  # another object, the same definition
    top = synthetic_vertex("top", [synthetic_vertex("x", [a1]), synthetic_vertex("y", [a2])])
    w = world()
    run(top, w)
    assert w["ran"].count("a") == 1


def test_a_cached_edge_never_solves_its_inputs():
    a, b, c, d = diamond()
    cache = MemoryCache()
    run(d, world(), cache=cache)
    w = world()
    result, job, progress = run(d, w, cache=cache)
    assert result == "d" and w["ran"] == []
    assert [r.name for r in job.runs.values() if r.cached] == ["d"]
    assert progress.vertices[d.digest].cached
    assert progress.vertices[a.digest].started is None  # announced, never started


def test_a_change_reruns_exactly_what_depends_on_it():
    a, b, c, d = diamond()
    cache = MemoryCache()
    run(d, world(), cache=cache)
    b2 = synthetic_vertex("b", [a], version=2)
    d2 = synthetic_vertex("d", [b2, c])
    w = world()
    run(d2, w, cache=cache)
    assert sorted(w["ran"]) == ["b", "d"]  # a and c: cache hits (a only as b's input)


def test_content_keyed_inputs_hit_when_the_content_is_the_same():
    src = synthetic_vertex("src")
    src.ignore_cache = True  # like the request body: made anew by every build
    user = synthetic_vertex("user", [src])
    cache = MemoryCache()
    run(user, world(content_deps={"user": 0}, results={"src": "data"}), cache=cache)
    w = world(content_deps={"user": 0}, results={"src": "DATA"})  # same content for the key's function
    run(user, w, cache=cache)
    assert w["ran"] == ["src"]  # the content had to be made to be hashed; user itself was a hit
    w = world(content_deps={"user": 0}, results={"src": "other"})
    run(user, w, cache=cache)
    assert w["ran"] == ["src", "user"]


def test_ignore_cache_reruns_the_vertex_but_not_its_cached_inputs():
    a = synthetic_vertex("a")
    cache = MemoryCache()
    run(synthetic_vertex("b", [a]), world(), cache=cache)
    b = synthetic_vertex("b", [a])
    b.ignore_cache = True
    w = world()
    run(b, w, cache=cache)
    assert w["ran"] == ["b"]


def test_first_failure_cancels_siblings_and_names_the_vertex():
    slow = synthetic_vertex("slow")
    bad = synthetic_vertex("bad")
    top = synthetic_vertex("top", [slow, bad])
    w = world(durations={"slow": 10, "bad": 1}, fail={"bad"})
    error, job, progress = run(top, w)
    assert isinstance(error, SolveError)
    assert error.vertex.name == "bad" and str(error) == "bad failed"
    assert w["cancelled"] == ["slow"]
    assert progress.vertices[bad.digest].error == "bad failed"
    assert progress.vertices[slow.digest].error == CANCELED
    assert span(job, "slow")[1] == 1  # stopped when bad failed, not at 10
    assert "top" not in w["ran"]


def test_cancelling_the_build_stops_everything_at_once():
    a, b, c, d = diamond()
    w = world(durations={"a": 1, "b": 5, "c": 5, "d": 1})
    error, job, progress = run(d, w, cancel_after=2)
    assert isinstance(error, asyncio.CancelledError)
    assert sorted(w["cancelled"]) == ["b", "c"]
    assert progress.vertices[b.digest].error == CANCELED and progress.vertices[b.digest].completed == 2


def test_logs_reach_the_progress_stream():
    a = synthetic_vertex("a")
    _, _, progress = run(a, world())
    assert progress.vertices[a.digest].name == "a"
    logs = [entry for sr in progress._history for entry in sr.logs]
    assert [(entry.vertex, entry.data) for entry in logs] == [(a.digest, b"a runs\n")]


def test_announces_the_whole_definition_first():
    a, b, c, d = diamond()
    _, _, progress = run(d, world())
    first = progress._history[0]
    assert [v.digest for v in first.vertexes] == [v.digest for v in marshal(d)]
    assert all(v.started is None for v in first.vertexes)


@pytest.mark.parametrize("limit", [1, 2, None])
def test_results_do_not_depend_on_the_limit(limit):
    a, b, c, d = diamond()
    result, _job, _ = run(d, world(), max_parallelism=limit)
    assert result == "d"
