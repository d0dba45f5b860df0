# %% [markdown]
# # 07 · Sequential vs parallel / The article's conclusion, measured
#
# *Mirrors the article's conclusion (总结): builder v1 runs a Dockerfile's stages one after another;
# BuildKit runs the independent ones at the same time and skips what the target does not need.*
#
# Notebook 05 showed the classic loop, notebook 06 the graph. Here both builders build one
# multi-stage Dockerfile, for real, and their schedules are drawn on the same time axis. Then a
# simulation (the real solver on a virtual clock, where waiting costs nothing) shows how the speedup
# grows with the number of independent stages, and where the parallelism limit stops it.
#
# **What you will learn**
#
# - what "parallel" means for a build: four independent stages of one second each, as Gantt charts;
# - the critical path: the longest chain of dependent steps, the floor no scheduler can go below;
# - how the speedup depends on the width of the graph and on the number of steps allowed at once.
#
# Previous: [06 · buildkit](06-buildkit.ipynb) · Next: [08 · labs](08-labs.ipynb)

# %%
import base64
import inspect
import os
from pathlib import Path

import matplotlib.pyplot as plt
from _setup import start_daemon

from minibuild import trace
from minibuild.api.types import ImageBuildOptions
from minibuild.builder.next.solver import Job
from minibuild.builder.next.timeline import (
    SIMULATION,
    TimelineEntry,
    critical_path,
    makespan,
    random_dag,
    simulate,
    synthetic_vertex,
    timeline,
    total_work,
    vertices_from_trace,
)
from minibuild.client import APIClient
from minibuild.client.context import tar_single_dockerfile

daemon = start_daemon(globals().get("daemon"))
client = APIClient(daemon.host)

# Four independent stages of one second each, one nothing needs, and a final stage gathering four.
DOCKERFILE = """\
FROM busybox:local AS a
RUN sleep 1 && echo a > /a.txt
FROM busybox:local AS b
RUN sleep 1 && echo b > /b.txt
FROM busybox:local AS c
RUN sleep 1 && echo c > /c.txt
FROM busybox:local AS d
RUN sleep 1 && echo d > /d.txt
FROM busybox:local AS unused
RUN sleep 1 && echo unused > /unused.txt
FROM busybox:local
COPY --from=a /a.txt /a.txt
COPY --from=b /b.txt /b.txt
COPY --from=c /c.txt /c.txt
COPY --from=d /d.txt /d.txt
"""
context = b"".join(tar_single_dockerfile(DOCKERFILE.encode()))
print("daemon listening on", daemon.host)

# %% [markdown]
# ## Both builders, the same Dockerfile
#
# Each build runs with `--no-cache` and tracing on. The classic builder's schedule comes from the
# trace (when each `initializeStage`/`dispatch` call began and ended); the BuildKit-style builder's
# from its own progress stream (when each vertex started and completed), decoded as in notebook 06.


# %%
def build(version: str) -> tuple[list[dict], trace.Recording]:
    options = ImageBuildOptions(version=version, no_cache=True, tags=[f"fanout:v{version}"])
    with trace.recording() as rec, client.image_build(context, options) as response:
        messages = list(response.messages())
    return messages, rec


def classic_timeline(rec: trace.Recording) -> list[TimelineEntry]:
    """builder v1's steps as timeline entries, one lane: every step waits for the one before."""
    steps = [e for e in rec.events if e.function in ("initialize_stage", "dispatch")]
    t0 = steps[0].start
    return [TimelineEntry(e.summary, e.summary, e.start - t0, e.end - t0, False, 0) for e in steps]


def buildkit_timeline(messages: list[dict]) -> list[TimelineEntry]:
    """The solver's vertices as timeline entries, from the build's moby.buildkit.trace messages."""
    progress = [base64.b64decode(m["aux"]) for m in messages if m.get("id") == "moby.buildkit.trace"]
    return timeline(vertices_from_trace(progress))


v1_messages, v1_rec = build("1")
v2_messages, v2_rec = build("2")
v1, v2 = classic_timeline(v1_rec), buildkit_timeline(v2_messages)
print("builder v1 steps:")
for entry in v1:
    print("   ", entry.name)
print("BuildKit-style vertices that ran:")
for name in sorted(e.name for e in v2 if not e.cached):  # sorted: they started in no fixed order
    print("   ", name)

# %% [markdown]
# The classic builder ran all fifteen steps, the `unused` stage included. The solver ran the four
# `RUN`s the target needs (and the `COPY`s gathering them), never the unused one. The same images?

# %%
runtime = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels")
config = {version: client.image_inspect(f"fanout:v{version}")["Config"] for version in ("1", "2")}
print("same runtime config:", all(config["1"].get(k) == config["2"].get(k) for k in runtime))
print(
    "same layers:", client.image_inspect("fanout:v1")["RootFS"] == client.image_inspect("fanout:v2")["RootFS"]
)

# %% [markdown]
# ## The two schedules, one above the other
#
# Same time axis, in seconds from each build's first step; one row per step, in the order the steps
# started. Hatched bars were cached (the base image). Outlined in red, the solver's **critical path**:
# the longest chain of dependent steps; no scheduler, however many cores, can finish sooner.


# %%
def gantt(ax, entries: list[TimelineEntry], title: str, path: list[TimelineEntry] = ()) -> None:
    """One row per step, in start order; the steps on `path` outlined in red."""
    on_path = {e.digest for e in path}
    rows = sorted(entries, key=lambda e: (e.start, e.name))
    for row, e in enumerate(rows):
        ax.barh(row, max(e.duration, 0.01), left=e.start, color="lightgray" if e.cached else "tab:blue",
                hatch="//" if e.cached else None, edgecolor="red" if e.digest in on_path else "black",
                linewidth=2 if e.digest in on_path else 0.5)  # fmt: skip
    ax.set_yticks(
        range(len(rows)), [e.name if len(e.name) < 44 else e.name[:43] + "…" for e in rows], fontsize=7
    )
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)


v2_length, v2_path = critical_path(v2)
fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, height_ratios=[len(v1), len(v2)])
gantt(top, v1, f"builder v1: one step after another ({makespan(v1):.1f} s)")
gantt(
    bottom,
    v2,
    f"BuildKit-style solver: independent steps at once ({makespan(v2):.1f} s, "
    f"critical path {v2_length:.1f} s, ×{makespan(v1) / makespan(v2):.1f} faster)",
    v2_path,
)
bottom.set_xlabel("seconds since the build's first step (measured on this machine)")
fig.tight_layout()
if os.environ.get("MINIBUILD_WRITE_FIGURES"):  # refresh the README's figure: MINIBUILD_WRITE_FIGURES=1
    Path("figures").mkdir(exist_ok=True)
    fig.savefig("figures/07-sequential-vs-parallel.png", dpi=100)
plt.show()

# %% [markdown]
# The numbers behind the chart, on this machine:

# %%
# NBVAL_IGNORE_OUTPUT
# Wall-clock measurements: they differ on every run and every machine.
for name, entries in (("builder v1", v1), ("BuildKit-style", v2)):
    length, _ = critical_path(entries)
    print(f"{name:>15}: makespan {makespan(entries):5.2f} s, work {total_work(entries):5.2f} s", end="")
    print(f", critical path {length:5.2f} s" if name != "builder v1" else "")
print(f"speedup: ×{makespan(v1) / makespan(v2):.1f}")

# %% [markdown]
# ## Why the solver overlaps steps
#
# The classic loop `await`s one `dispatch` after another (notebook 05). The solver's core handles one
# vertex: on a cache miss it starts a task for **every** input at once and only then waits for them,
# so independent inputs run together; a limit on parallelism is a semaphore around the step itself
# (BuildKit's scheduler does the same with its edges and a `max-parallelism` semaphore):

# %%
print(inspect.getsource(Job._solve))

# %% [markdown]
# And the critical path drawn in red above: for each step in start order, the longest chain of
# durations through its inputs.

# %%
print(inspect.getsource(critical_path))

# %% [markdown]
# ## How far does it go? A simulation
#
# The question the article leaves open: how much faster, in general? It depends on the **shape** of
# the graph (how many steps are independent) and on how many steps may run at once (cores, or
# BuildKit's `max-parallelism`). The real `Solver` can run on a virtual clock: each vertex only
# "sleeps" its duration, and sleeping costs no real time. Everything below is labelled SIMULATION:
# nothing in it ran.
#
# First, the Dockerfile above grown to *n* independent stages of one second, gathered by a final step:


# %%
def fan_in(n: int):
    """SIMULATION graph: a base image, n independent one-second stages, one step gathering them."""
    base = synthetic_vertex("FROM busybox")
    stages = [synthetic_vertex(f"stage {i}: RUN sleep 1", [base]) for i in range(n)]
    return synthetic_vertex("COPY --from=each stage", stages)


def one_second_runs(vertex) -> float:
    return 1.0 if "RUN" in vertex.name else 0.05


print(simulate(fan_in(4), one_second_runs, max_parallelism=1))
print(simulate(fan_in(4), one_second_runs))

# %%
widths = range(1, 13)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for limit in (1, 2, 4, 8, None):
    speedups = []
    for n in widths:
        result = simulate(fan_in(n), one_second_runs, max_parallelism=limit)
        speedups.append(result.total_work / result.makespan)
    left.plot(list(widths), speedups, marker="o", label=f"max parallelism {limit or 'unlimited'}")
left.set_xlabel("independent stages")
left.set_ylabel("speedup over one step at a time")
left.set_title(f"{SIMULATION}: fan-in of one-second stages")
left.legend()

dag = random_dag(300, seed=1)
durations = {f"v{i}": 0.2 + (i * 7919 % 13) / 10 for i in range(300)}  # 0.2 s to 1.4 s, fixed
limits = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
results = [simulate(dag, durations, max_parallelism=limit) for limit in limits]
bound = results[0].total_work / results[0].critical_path
right.plot(limits, [r.total_work / r.makespan for r in results], marker="o", label="solver")
right.axhline(bound, color="red", linestyle="--", label="work / critical path")
right.set_xlabel("max parallelism")
right.set_ylabel("speedup over one step at a time")
right.set_title(f"{SIMULATION}: a random 300-vertex graph")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Left: with unlimited parallelism the speedup grows with the number of independent stages (a little
# less than it: the first and last steps stay sequential); a limit of *k* caps it near *k*, and widths
# that are not multiples of *k* leave the last round half empty (the dips). Right: on a
# graph with long dependent chains, more parallelism helps until the **critical path** dominates;
# past that (the red line, work ÷ critical path), extra cores wait. Both plots are deterministic: the
# simulation's clock is virtual. Its figures:

# %%
for limit, result in zip(limits, results, strict=True):
    print(f"max parallelism {limit:>2}: {result}")

# %% [markdown]
# ## Summary
#
# - builder v1 is a loop: its build time is the sum of every step, unused stages included.
# - The BuildKit-style solver runs what the target needs, independent steps at once: its build time
#   approaches the critical path, the longest chain of dependent steps.
# - The speedup grows with the graph's width, up to the parallelism limit, and never beyond
#   work ÷ critical path. A Dockerfile written as independent stages is what lets BuildKit be fast.
#
# Next: [08 · labs](08-labs.ipynb)

# %%
client.close()
daemon.stop()
