"""The DAG solver: each vertex runs as soon as its inputs are done, cached work is skipped
(buildkit solver/: jobs.go, scheduler.go, edge.go, cachekey.go, cachemanager.go; docs/dev/solver.md).

A `Job` solves one build's graph. For every vertex it needs, it first computes a cache key — the op's
own digest (`CacheMap.digest`) combined with one key per input: the input's cache key, or, where the op
asks for it, a checksum of the input's content (COPY from the context hashes only the files it copies).
Then:

* a key found in the cache is a hit: the result is loaded and the vertex's inputs are never solved,
  unless something else needs them ("an edge whose result is cached never needs its inputs");
* otherwise its inputs are solved, concurrently, and the op runs, at most `max_parallelism` at a time
  (None: unlimited, as BuildKit), and the result is saved under the key.

Identical vertices share a digest and run once per job. The first failing vertex cancels every other
running vertex of the job (an errgroup; a TaskGroup without its per-task callbacks, which cost more than
the work when a simulation schedules ten thousand vertices) and fails the solve with a `SolveError`
naming it; cancelling the task that runs `Job.build` stops everything at once.

The solver knows nothing about images or files: a worker maps each vertex to an `Op` (ops.py does it
for real, timeline.py for the simulation) and a `CacheStore` keeps results (cache.py, or a dict).
Where we simplify: BuildKit computes two keys for a copy from another stage (by definition first,
then by content once the input ran); here a content checksum is only used where the op asks for one,
which ops do for the build context alone, so a key never needs an expensive input run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minibuild import trace
from minibuild.builder.next.llb import Definition, Vertex, marshal
from minibuild.builder.next.progress import CANCELED, STDERR, STDOUT, ProgressWriter, VertexStatus
from minibuild.builder.next.progress import Vertex as ProgressVertex

ComputeDigestFunc = Callable[[Any], Awaitable[str]]


@dataclass
class CacheMap:
    """What a vertex's cache key is made of (solver.CacheMap).

    `digest` identifies the op itself; `deps[i]` is None to use input i's cache key, or a function
    that computes a digest from input i's result (content-based caching).
    """

    digest: str
    deps: Sequence[ComputeDigestFunc | None] = ()


class Op(Protocol):
    """What a vertex does (solver.Op)."""

    def cache_map(self, ctx: ExecContext) -> CacheMap | Awaitable[CacheMap]:
        """The key's parts, or a coroutine giving them: a source may do work here (resolve an image,
        hash the context)."""
        ...

    async def exec(self, ctx: ExecContext, inputs: list[Any]) -> Any:
        """Run the op on its inputs' results and return its own result."""
        ...


class CacheStore(Protocol):
    """Where results live between builds (solver.CacheManager, cut to what the scheduler needs)."""

    def load(self, key: str, vertex: Vertex) -> Any | None:
        """The result saved under `key`, or None; the store keeps it while the job uses it."""
        ...

    def save(self, key: str, vertex: Vertex, result: Any) -> None: ...


class MemoryCache:
    """A CacheStore in a dict (tests, the simulation)."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}

    def load(self, key: str, vertex: Vertex) -> Any | None:
        return self.results.get(key)

    def save(self, key: str, vertex: Vertex, result: Any) -> None:
        self.results[key] = result


class SolveError(Exception):
    """A vertex failed; str() is its error, `vertex` names it."""

    def __init__(self, vertex: Vertex, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.vertex = vertex
        self.cause = cause


@dataclass(slots=True)
class ExecContext:
    """What an op gets while it runs: its vertex, the job, and writers for its logs and sub-steps."""

    vertex: Vertex
    job: Job
    # What the op was doing when it was cancelled, if it says (a RUN: its killed process's exit).
    canceled_as: str = ""

    def log(self, stream: int, data: bytes) -> None:
        """A piece of the vertex's output (stream 1 stdout, 2 stderr)."""
        if self.job.progress is not None:
            self.job.progress.log(self.vertex.digest, stream, data)

    def stdout(self, data: bytes) -> None:
        self.log(STDOUT, data)

    def stderr(self, data: bytes) -> None:
        self.log(STDERR, data)

    def status(
        self,
        id: str,
        *,
        started: float | None = None,
        completed: float | None = None,
        current: int = 0,
        total: int = 0,
    ) -> None:
        """A named sub-step of this vertex (`exporting layers`, a layer's download with its bytes)."""
        if self.job.progress is not None:
            now = self.job.solver.clock()
            self.job.progress.status(
                VertexStatus(
                    id,
                    self.vertex.digest,
                    current=current,
                    total=total,
                    timestamp=now,
                    started=started,
                    completed=completed,
                )
            )


@dataclass(slots=True)
class VertexRun:
    """How one vertex went in a job: the timeline is made of these."""

    vertex: Vertex
    key: str = ""
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""

    @property
    def digest(self) -> str:
        return self.vertex.digest

    @property
    def name(self) -> str:
        return self.vertex.name

    @property
    def inputs(self) -> list[str]:
        return [i.digest for i in self.vertex.inputs]


class Solver:
    """Runs graphs; one per daemon (or per simulation). `worker(vertex)` gives the vertex's Op."""

    def __init__(
        self,
        worker: Callable[[Vertex], Op],
        cache: CacheStore | None = None,
        *,
        max_parallelism: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.worker = worker
        self.cache: CacheStore = cache if cache is not None else MemoryCache()
        self.max_parallelism = max_parallelism
        self.clock = clock

    def new_job(self, progress: ProgressWriter | None = None) -> Job:
        return Job(self, progress)


class Job:
    """One solve (solver.Job): vertices memoized by digest, every task in one TaskGroup."""

    def __init__(self, solver: Solver, progress: ProgressWriter | None) -> None:
        self.solver = solver
        self.progress = progress
        self.runs: dict[str, VertexRun] = {}
        self._keys: dict[str, str] = {}
        self._results: dict[str, asyncio.Future[Any]] = {}
        self._ops: dict[str, Op] = {}
        self._limit = asyncio.Semaphore(solver.max_parallelism) if solver.max_parallelism else None
        self._first_error: SolveError | None = None

    async def build(self, target: Vertex | Definition) -> Any:
        """Solve `target` and return its result. Raises SolveError for the first vertex that failed."""
        definition = target if isinstance(target, Definition) else marshal(target)
        vertex = definition.target
        if vertex is None:
            return None
        if self.progress is not None:
            self.progress.announce(
                [ProgressVertex(v.digest, [i.digest for i in v.inputs], v.name) for v in definition]
            )
        try:
            # Keys first, inputs before users (the definition's order): no input runs for them,
            # except a content-addressed one (the context), which is solved here on demand.
            for v in definition:
                if v.digest in self._keys:  # an earlier build of this job keyed it (the context)
                    continue
                key = self._plain_key(v)
                self._keys[v.digest] = key if key is not None else await self._compute_key(v)
            result = await self._result(vertex)
        except BaseException:
            await self._abort()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside: stop, whatever failed meanwhile
            if self._first_error is not None:
                raise self._first_error from None
            raise
        return result

    def result(self, vertex: Vertex) -> Any | None:
        """The result of `vertex` if this job solved it (None if it never needed to)."""
        future = self._results.get(vertex.digest)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def cache_key(self, vertex: Vertex) -> str | None:
        """The key computed for `vertex` in this job, if it got one."""
        return self._keys.get(vertex.digest)

    # -- the scheduler --

    def _op(self, vertex: Vertex) -> Op:
        op = self._ops.get(vertex.digest)
        if op is None:
            op = self._ops[vertex.digest] = self.solver.worker(vertex)
        return op

    def _result(self, vertex: Vertex) -> asyncio.Future[Any]:
        """The task solving `vertex`, started on first demand: each digest runs once per job."""
        future = self._results.get(vertex.digest)
        if future is None:
            future = self._results[vertex.digest] = asyncio.get_running_loop().create_task(
                self._solve(vertex)
            )
        return future

    def _cancel_others(self) -> None:
        """The first failure stops every other vertex of the job (errgroup: cancel the context)."""
        current = asyncio.current_task()
        for task in self._results.values():
            if task is not current and not task.done():
                task.cancel()

    async def _abort(self) -> None:
        """Cancel whatever still runs and wait until all of it has stopped (even if cancelled meanwhile)."""
        self._cancel_others()
        pending = [t for t in self._results.values() if not t.done()]
        while pending:
            try:
                await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))
            except asyncio.CancelledError:
                pass  # keep waiting: the steps must be gone before the job returns
            pending = [t for t in pending if not t.done()]
        for task in self._results.values():  # every outcome is retrieved: no "never retrieved" noise
            if not task.cancelled():
                task.exception()

    def _plain_key(self, vertex: Vertex) -> str | None:
        """The key without awaiting anything, when the op's cache map is plain (most vertices)."""
        if vertex.kind == "source":
            return None
        cache_map = self._op(vertex).cache_map(ExecContext(vertex, self))
        if not isinstance(cache_map, CacheMap):
            cache_map.close()  # an async cache map: _compute_key runs it with its error handling
            return None
        if any(cache_map.deps):
            return None
        keys = self._keys
        return self._store_key(vertex, [cache_map.digest, *(keys[i.digest] for i in vertex.inputs)])

    def _store_key(self, vertex: Vertex, parts: list[str]) -> str:
        key = "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
        self._run(vertex).key = key
        return key

    async def _compute_key(self, vertex: Vertex) -> str:
        """The cache key: the op's digest and, per input, its key or its content digest."""
        op = self._op(vertex)
        ctx = ExecContext(vertex, self)
        if vertex.kind == "source":
            # A source's key takes work (loading the context, resolving an image): it shows as running.
            cache_map = op.cache_map(ctx)
            if not isinstance(cache_map, CacheMap):
                cache_map = await self._step(vertex, cache_map)
        else:
            try:
                cache_map = op.cache_map(ctx)
                if not isinstance(cache_map, CacheMap):
                    cache_map = await cache_map
            except Exception as err:
                raise self._failed(vertex, err) from err
        parts = [cache_map.digest]
        keys = self._keys
        for i, input_vertex in enumerate(vertex.inputs):
            func = cache_map.deps[i] if cache_map.deps else None
            if func is None:
                parts.append(keys[input_vertex.digest])
                continue
            content = await self._result(input_vertex)
            try:
                parts.append(await func(content))
            except Exception as err:  # e.g. a COPY of a file the context does not have
                raise self._failed(vertex, err) from err
        return self._store_key(vertex, parts)

    @trace.traced
    async def _solve(self, vertex: Vertex) -> Any:
        key = self._keys[vertex.digest]
        if not vertex.ignore_cache:
            cached = self.solver.cache.load(key, vertex)
            if cached is not None:
                run = self._run(vertex)
                now = self.solver.clock()
                run.started = run.started if run.started is not None else now
                run.completed, run.cached = now, True
                if self.progress is not None:
                    self.progress.complete(vertex.digest, cached=True)
                return cached
        inputs = []
        pending = [self._result(i) for i in vertex.inputs]  # all of them start now
        for p in pending:
            inputs.append(await p)
        limit = self._limit
        if limit is not None:
            await limit.acquire()
        try:
            # _step, inline: one coroutine less per vertex counts when ten thousand are scheduled.
            self._begin(vertex)
            ctx = ExecContext(vertex, self)
            try:
                result = await self._op(vertex).exec(ctx, inputs)
            except asyncio.CancelledError:
                # BuildKit wraps the op's own error with the context's: `<what happened>: context canceled`.
                self._finish(vertex, f"{ctx.canceled_as}: {CANCELED}" if ctx.canceled_as else CANCELED)
                raise
            except SolveError:
                raise
            except Exception as err:
                raise self._failed(vertex, err) from err
            self._finish(vertex, "")
        finally:
            if limit is not None:
                limit.release()
        self.solver.cache.save(key, vertex, result)
        return result

    async def _step(self, vertex: Vertex, step: Awaitable[Any]) -> Any:
        """Run one step of a vertex with its progress: started, then completed or failed."""
        self._begin(vertex)
        try:
            result = await step
        except asyncio.CancelledError:
            self._finish(vertex, CANCELED)
            raise
        except SolveError:
            raise
        except Exception as err:
            raise self._failed(vertex, err) from err
        self._finish(vertex, "")
        return result

    def _begin(self, vertex: Vertex) -> None:
        run = self._run(vertex)
        run.started, run.completed, run.error = self.solver.clock(), None, ""
        if self.progress is not None:
            self.progress.start(vertex.digest)

    def _failed(self, vertex: Vertex, err: Exception) -> SolveError:
        """Mark `vertex` failed; the job's first failure is the one the build reports."""
        if isinstance(err, SolveError):
            return err
        error = SolveError(vertex, err)
        if self._first_error is None:
            self._first_error = error
            self._cancel_others()
        self._finish(vertex, str(err))
        return error

    def _finish(self, vertex: Vertex, error: str) -> None:
        run = self._run(vertex)
        run.completed, run.error = self.solver.clock(), error
        if run.started is None:
            run.started = run.completed
        if self.progress is not None:
            self.progress.complete(vertex.digest, error=error)

    def _run(self, vertex: Vertex) -> VertexRun:
        run = self.runs.get(vertex.digest)
        if run is None:
            run = self.runs[vertex.digest] = VertexRun(vertex)
        return run
