"""Timelines of builds, the critical path, and the SIMULATION on a virtual clock."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild.builder.next.progress import StatusResponse, Vertex
from minibuild.builder.next.solver import MemoryCache
from minibuild.builder.next.timeline import (
    SIMULATION,
    critical_path,
    makespan,
    plot_timeline,
    random_dag,
    simulate,
    synthetic_vertex,
    timeline,
    total_work,
    vertices_from_trace,
)


def test_lanes_reuse_the_lowest_free_lane():
    vs = [
        Vertex("a", [], "a", started=10.0, completed=11.0),
        Vertex("b", ["a"], "b", started=11.0, completed=13.0),
        Vertex("c", ["a"], "c", started=11.0, completed=12.0),
        Vertex("d", ["c"], "d", started=12.0, completed=13.0),
        Vertex("never", [], "announced only"),
    ]
    entries = timeline(vs)
    assert [(e.name, e.start, e.end, e.lane) for e in entries] == [
        ("a", 0.0, 1.0, 0),
        ("c", 1.0, 2.0, 0),
        ("b", 1.0, 3.0, 1),
        ("d", 2.0, 3.0, 0),
    ]
    assert makespan(entries) == 3.0 and total_work(entries) == 5.0
    length, path = critical_path(entries)
    assert length == 3.0 and [e.name for e in path] in (["a", "b"], ["a", "c", "d"])


def test_timeline_from_decoded_traces_keeps_the_latest_state():
    first = StatusResponse([Vertex("a", [], "a", started=1.0)]).marshal()
    second = StatusResponse([Vertex("a", [], "a", started=1.0, completed=2.5, cached=True)])
    entries = timeline(vertices_from_trace([first, second]))
    assert len(entries) == 1 and entries[0].cached and entries[0].duration == 1.5


def test_simulation_schedules_on_a_virtual_clock():
    a = synthetic_vertex("a")
    b, c = synthetic_vertex("b", [a]), synthetic_vertex("c", [a])
    d = synthetic_vertex("d", [b, c])
    result = simulate(d, {"a": 100, "b": 200, "c": 300, "d": 100})
    assert result.label == SIMULATION and repr(result).startswith("SIMULATION:")
    assert result.makespan == 500 and result.total_work == 700 and result.critical_path == 500
    serial = simulate(d, {"a": 100, "b": 200, "c": 300, "d": 100}, max_parallelism=1)
    assert serial.makespan == 700


def test_simulation_with_a_cache_models_a_rebuild():
    target = random_dag(200, seed=7)
    cache = MemoryCache()
    first = simulate(target, lambda v: 1.0, cache=cache)
    again = simulate(target, lambda v: 1.0, cache=cache)
    assert first.makespan > 0 and again.makespan == 0
    assert [e.cached for e in again.entries] == [True]  # only the sink is looked up


def test_simulation_runs_inside_a_running_loop():
    async def main():
        return simulate(synthetic_vertex("x"), {"x": 5})

    assert asyncio.run(main()).makespan == 5


def test_ten_thousand_vertices():
    result = simulate(random_dag(10_000, seed=1), lambda v: 1.0 + len(v.name) % 7)
    assert len(result.entries) == 10_001
    assert result.critical_path <= result.makespan <= result.total_work
    assert result.makespan == pytest.approx(result.critical_path)  # unlimited parallelism: optimal


@settings(deadline=None, max_examples=25)
@given(st.integers(2, 60), st.integers(0, 10_000), st.integers(1, 4))
def test_makespan_bounds(n, seed, limit):
    """Property: critical path <= makespan <= total work, and unlimited parallelism meets the bound."""
    target = random_dag(n, seed=seed)
    durations = {f"v{i}": 1 + (i * 7919 % 5) for i in range(n)}
    limited = simulate(target, durations, max_parallelism=limit)
    free = simulate(target, durations)
    assert limited.critical_path - 1e-9 <= limited.makespan <= limited.total_work + 1e-9
    assert free.makespan == pytest.approx(free.critical_path)
    assert free.makespan <= limited.makespan + 1e-9


def test_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    entries = simulate(random_dag(20, seed=3), lambda v: 1.0).entries
    ax = plot_timeline(entries, title=f"{SIMULATION}: 20 vertices")
    assert ax.get_title().startswith(SIMULATION)
    ax.figure.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
