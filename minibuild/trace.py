"""Walkthrough tracing: the path one request takes through the daemon, boundary by boundary (no single
moby file: dockerd's debug logs and BuildKit's util/tracing spans show the same path, in pieces).

Off by default, and cheap when off: `ENABLED` is checked before anything is looked at or formatted.

    with trace.recording() as rec:
        client.image_build(...)            # or `minibuild build`, curl, docker-py ...
    print(rec)                             # an indented call trace

Every boundary the article names records one `Event`, in order: the minibuild function, the moby or
BuildKit function it mirrors, and a short summary of its arguments; when the call returns, its outcome
(an image ID, `cached`, or the error). Functions are marked with `@traced`; points inside a function
that are not calls of their own (the builder switch, the tagging) with `point(name, ...)`. What each
records is described once, in `BOUNDARIES` below, so the marked modules stay unchanged but for one
line. Each event knows the call it happened in (a context variable, so the real call path is followed
across asyncio tasks and threads); `render` prints them as that tree. Credentials are never recorded:
only which registries a header named.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENABLED = False  # the only thing a marked function looks at when tracing is off

_parent: contextvars.ContextVar[Event | None] = contextvars.ContextVar("minibuild_trace_parent", default=None)
_lock = threading.Lock()
_current: Recording | None = None


@dataclass
class Event:
    """One boundary crossed. `start`/`end` are time.monotonic() seconds: for plots, never printed."""

    seq: int
    parent: int | None  # the seq of the event this call happened in
    depth: int
    function: str  # minibuild's name: `BuildRouter.post_build`
    module: str  # `minibuild.api.router.build`
    mirrors: str  # the Go function: `(*buildRouter).postBuild`
    source: str  # the Go file: `api/server/router/build/build_routes.go`
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    error: bool = False
    start: float = 0.0
    end: float | None = None


@dataclass
class Recording:
    """The events recorded while `recording()` was active, in the order the boundaries were crossed."""

    events: list[Event] = field(default_factory=list)

    def find(self, function: str) -> list[Event]:
        """The events of one function (`dispatch`, `Job._solve`, `switch`), in order."""
        return [e for e in self.events if e.function == function]

    def render(self, *, sources: bool = False) -> str:
        return render(self.events, sources=sources)

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class Boundary:
    """How one boundary is shown. `args` gets the call's arguments by name; `result` gets the return
    value and the same arguments; `details` keeps structured data (a query, frontend attrs) for code
    that wants more than the one-line summary."""

    mirrors: str
    source: str
    args: Callable[[Mapping[str, Any]], str] | None = None
    result: Callable[[Any, Mapping[str, Any]], str] | None = None
    details: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None


# ---- recording ---------------------------------------------------------------------------------------


@contextmanager
def recording() -> Iterator[Recording]:
    """Record every boundary crossed until the block ends (one recording at a time, daemon-wide)."""
    global ENABLED, _current
    rec = Recording()
    with _lock:
        if _current is not None:
            raise RuntimeError("a trace is already being recorded")
        _current = rec
        ENABLED = True
    try:
        yield rec
    finally:
        with _lock:
            ENABLED = False
            _current = None


def _begin(key: str, name: str, module: str, arguments: Mapping[str, Any]) -> Event | None:
    boundary = BOUNDARIES.get(key)
    summary = _safe(boundary.args, arguments) if boundary and boundary.args else ""
    details = _safe(boundary.details, arguments) if boundary and boundary.details else {}
    with _lock:
        rec = _current
        if rec is None:
            return None
        parent = _parent.get()
        if parent is not None and (parent.seq >= len(rec.events) or rec.events[parent.seq] is not parent):
            parent = None  # a call that began in an earlier recording
        event = Event(
            seq=len(rec.events),
            parent=parent.seq if parent is not None else None,
            depth=parent.depth + 1 if parent is not None else 0,
            function=name,
            module=module,
            mirrors=boundary.mirrors if boundary else "?",
            source=boundary.source if boundary else "",
            summary=summary,
            details=details if isinstance(details, dict) else {},
            start=time.monotonic(),
        )
        rec.events.append(event)
    return event


def _finish(
    event: Event, key: str, arguments: Mapping[str, Any], result: Any, err: BaseException | None
) -> None:
    # Runs even after the recording block ended: the event belongs to a recording already handed out.
    event.end = time.monotonic()
    if err is not None:
        event.error = True
        message = str(err) or type(err).__name__
        event.outcome = "✗ cancelled" if type(err).__name__ == "CancelledError" else f"✗ {message}"
        return
    boundary = BOUNDARIES.get(key)
    if boundary and boundary.result:
        event.outcome = _safe(boundary.result, result, arguments)


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """A summary never breaks the call it describes."""
    try:
        return fn(*args)
    except Exception as err:  # a summary of an unexpected shape: say so instead of failing the build
        return f"(no summary: {type(err).__name__})"


def _arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> Mapping[str, Any]:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {}
    return bound.arguments


def traced(fn: F) -> F:
    """Mark `fn` as a boundary: when tracing is on, each call records an Event under its caller's."""
    key = f"{fn.__module__}.{fn.__qualname__}"
    name = fn.__qualname__.replace(".<locals>", "")
    module = fn.__module__
    signature = inspect.signature(fn)

    if inspect.iscoroutinefunction(fn):

        async def traced_call(args: tuple, kwargs: dict) -> Any:
            arguments = _arguments(signature, args, kwargs)
            event = _begin(key, name, module, arguments)
            if event is None:
                return await fn(*args, **kwargs)
            token = _parent.set(event)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as err:
                _finish(event, key, arguments, None, err)
                raise
            finally:
                _parent.reset(token)
            _finish(event, key, arguments, result, None)
            return result

        @functools.wraps(fn)
        def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not ENABLED:
                return fn(*args, **kwargs)  # fn's own coroutine: no frame of ours while it runs
            return traced_call(args, kwargs)

        async_wrapper.trace_key = key  # type: ignore[attr-defined]
        return _mark_coroutine_function(async_wrapper)  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not ENABLED:
            return fn(*args, **kwargs)
        arguments = _arguments(signature, args, kwargs)
        event = _begin(key, name, module, arguments)
        if event is None:
            return fn(*args, **kwargs)
        token = _parent.set(event)
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:
            _finish(event, key, arguments, None, err)
            raise
        finally:
            _parent.reset(token)
        _finish(event, key, arguments, result, None)
        return result

    wrapper.trace_key = key  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _mark_coroutine_function(wrapper: F) -> F:
    """Make a plain function that returns a coroutine pass for a coroutine function (aiohttp checks
    its handlers with inspect's and asyncio's iscoroutinefunction)."""
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        return mark(wrapper)
    wrapper._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]  # 3.11's marker
    return wrapper


def point(name: str, **values: Any) -> None:
    """A boundary inside a function (the builder switch): one event under the current call, no outcome."""
    if not ENABLED:
        return
    event = _begin(name, name, "", values)
    if event is not None:
        event.end = event.start


# ---- rendering ---------------------------------------------------------------------------------------


def render(events: list[Event], *, sources: bool = False) -> str:
    """An indented call trace: minibuild's function, the Go function it mirrors, what it was given and
    (after `→`) what came of it; each call under the one it happened in, siblings in the order they
    began. `sources=True` adds the Go file of each boundary."""
    if not events:
        return "(no events: was the request made inside `with trace.recording()`?)"
    ordered = tree_order(events)
    lefts = ["  " * e.depth + e.function for e in ordered]
    mirrors = [f"{e.mirrors}  [{e.source}]" if sources and e.source else e.mirrors for e in ordered]
    left_width = max(len(x) for x in lefts)
    mirror_width = max(len(x) for x in mirrors)
    lines = []
    for event, left, mirror in zip(ordered, lefts, mirrors, strict=True):
        text = f"{left:<{left_width}}  {mirror:<{mirror_width}}  {event.summary}"
        if event.outcome:
            text += f"  → {event.outcome}"
        lines.append(text.rstrip())
    return "\n".join(lines)


def tree_order(events: list[Event]) -> list[Event]:
    """The events depth first: each one followed by the calls made inside it (a solver's concurrent
    calls interleave in time; this keeps each under its caller)."""
    known = {e.seq for e in events}
    children: dict[int | None, list[Event]] = {}
    for e in events:
        children.setdefault(e.parent if e.parent in known else None, []).append(e)
    out: list[Event] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        event = stack.pop()
        out.append(event)
        stack.extend(reversed(children.get(event.seq, [])))
    return out


# ---- what each boundary records ------------------------------------------------------------------------


def _short_id(image_id: Any) -> str:
    text = str(image_id or "")
    digest = text.removeprefix("sha256:")
    return digest[:12] if digest else "(none)"


def _options(options: Any) -> str:
    """The build options a reader cares about, only those that differ from the defaults."""
    parts = [f"version={options.version}"]
    if options.tags:
        parts.append(f"tags={options.tags}")
    for name in ("target", "dockerfile", "platform", "network_mode", "remote_context"):
        if getattr(options, name):
            parts.append(f"{name}={getattr(options, name)!r}")
    for name in ("no_cache", "pull_parent", "squash", "suppress_output"):
        if getattr(options, name):
            parts.append(name)
    if options.build_args:
        parts.append(f"build_args={sorted(options.build_args)}")
    if options.labels:
        parts.append(f"labels={sorted(options.labels)}")
    return " ".join(parts)


def _query(request: Any) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query.items()]


def _request_line(request: Any) -> str:
    sent = [k for k, v in request.query.items() if v not in ("", "0", "null", "{}", "[]")]
    shown = ", ".join(sorted(set(sent)))
    return f"{request.method} {request.path}" + (f"  (non-empty: {shown})" if shown else "")


def _registry_header(headers: Any) -> str:
    value = headers.get("X-Registry-Config")
    return "no X-Registry-Config" if value is None else f"X-Registry-Config: {len(value)} bytes"


def _stage_or_command(cmd: Any) -> str:
    return str(cmd)


def _stages(parse_result: list[Any], meta_args: list[Any]) -> str:
    commands = len(meta_args) + sum(1 + len(stage.commands) for stage in parse_result)
    return f"{len(parse_result)} stage(s), {commands} steps"


def _vertex_outcome(job: Any, vertex: Any) -> str:
    run = job.runs.get(vertex.digest)
    return "cached" if run is not None and run.cached else "ran"


def _attrs(attrs: Mapping[str, str]) -> str:
    shown = {k: v for k, v in attrs.items() if k != "context" and v}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))


def _vertex_count(converted: Any) -> str:
    from minibuild.builder.next import llb  # the BuildKit-style builder is only loaded when it runs

    if converted.state.output is None:
        return "no vertices (nothing to build)"
    return f"{len(list(llb.marshal(converted.state)))} vertices"


_ROUTER = "api/server/router/build/build_routes.go"
_BACKEND = "api/server/backend/build/backend.go"
_CLASSIC = "builder/dockerfile/"
_NEXT = "builder/builder-next/"

BOUNDARIES: dict[str, Boundary] = {
    # The router: the request becomes build options.
    "minibuild.api.router.build.BuildRouter.post_build": Boundary(
        "(*buildRouter).postBuild",
        _ROUTER,
        args=lambda a: _request_line(a["request"]),
        details=lambda a: {"query": _query(a["request"])},
    ),
    "minibuild.api.router.build.new_image_build_options": Boundary(
        "newImageBuildOptions",
        _ROUTER,
        args=lambda a: f"{len(a['request'].query)} query parameters",
        result=lambda r, a: _options(r),
    ),
    "minibuild.api.router.build.get_auth_configs": Boundary(
        "getAuthConfigs",
        _ROUTER,
        args=lambda a: _registry_header(a["headers"]),
        result=lambda r, a: f"credentials for {sorted(r)}" if r else "no credentials",
        details=lambda a: {"header": a["headers"].get("X-Registry-Config")},
    ),
    # The backend: tags, the switch, squash, tagging.
    "minibuild.backend.build.Backend.build": Boundary(
        "(*Backend).Build",
        _BACKEND,
        args=lambda a: _options(a["config"].options),
        result=lambda r, a: _short_id(r),
    ),
    "switch": Boundary(
        "if useBuildKit {…} else {…}",
        _BACKEND,
        args=lambda a: (
            'version "2" → BuildKit-style builder' if a["version"] == "2" else 'version "1" → classic builder'
        ),
    ),
    "minibuild.backend.build.Backend.squash_build": Boundary(
        "squashBuild",
        _BACKEND,
        args=lambda a: f"image {_short_id(a['build'].image_id)}",
        result=lambda r, a: _short_id(r),
    ),
    "tag_images": Boundary(
        "tagger.TagImages",
        "api/server/backend/build/tag.go",
        args=lambda a: f"{_short_id(a['image_id'])} as {a['tags']}" if a["tags"] else "no tags",
    ),
    # The classic builder.
    "minibuild.builder.dockerfile.builder.BuildManager.build": Boundary(
        "(*BuildManager).Build",
        _CLASSIC + "builder.go",
        args=lambda a: "detect the context, parse the Dockerfile, newBuilder",
        result=lambda r, a: _short_id(r.image_id),
    ),
    "minibuild.builder.dockerfile.builder.Builder.dispatch_dockerfile_with_cancellation": Boundary(
        "(*Builder).dispatchDockerfileWithCancellation",
        _CLASSIC + "builder.go",
        args=lambda a: _stages(a["parse_result"], a["meta_args"]),
        result=lambda r, a: _short_id(r.image_id) if r is not None else "(no stage)",
    ),
    "minibuild.builder.dockerfile.dispatchers.initialize_stage": Boundary(
        "initializeStage",
        _CLASSIC + "dispatchers.go",
        args=lambda a: _stage_or_command(a["cmd"]),
        result=lambda r, a: f"---> {_short_id(a['d'].state.image_id)}",
    ),
    "minibuild.builder.dockerfile.evaluator.dispatch": Boundary(
        "dispatch",
        _CLASSIC + "evaluator.go",
        args=lambda a: _stage_or_command(a["cmd"]),
        result=lambda r, a: f"---> {_short_id(a['d'].state.image_id)}",
    ),
    "minibuild.builder.dockerfile.evaluator.commit_stage": Boundary(
        "commitStage",
        _CLASSIC + "evaluator.go",
        args=lambda a: f"stage {a['state'].stage_name or len(a['stages'].flat)!r}",
        result=lambda r, a: f"{len(a['stages'].flat)} stage(s) done",
    ),
    # The BuildKit-style builder.
    "minibuild.builder.next.builder.Builder.build": Boundary(
        "(*Builder).Build",
        _NEXT + "builder.go",
        args=lambda a: _options(a["config"].options),
        result=lambda r, a: _short_id(r.image_id) if r is not None else "(upload only)",
    ),
    "minibuild.builder.next.controller.Controller.solve": Boundary(
        "(*Controller).Solve",
        "buildkit control/control.go",
        args=lambda a: (
            f"frontend {a['req'].frontend}, exporter {a['req'].exporter or '(none)'}: "
            + _attrs(a["req"].frontend_attrs)
        ),
        result=lambda r, a: _short_id(r.exporter_response.get("containerimage.digest")),
        details=lambda a: {
            "frontend_attrs": dict(a["req"].frontend_attrs),
            "exporter": a["req"].exporter,
            "exporter_attrs": dict(a["req"].exporter_attrs),
        },
    ),
    "minibuild.builder.next.dockerfile2llb.dockerfile_to_llb": Boundary(
        "dockerfile2llb.Dockerfile2LLB",
        "buildkit frontend/dockerfile/dockerfile2llb/convert.go",
        args=lambda a: f"target={a['opt'].target!r}" if a["opt"].target else "last stage",
        result=lambda r, a: _vertex_count(r),
    ),
    "minibuild.builder.next.solver.Job._solve": Boundary(
        "(*scheduler).dispatch",
        "buildkit solver/scheduler.go",
        args=lambda a: a["vertex"].name or a["vertex"].digest[:19],
        result=lambda r, a: _vertex_outcome(a["self"], a["vertex"]),
        details=lambda a: {"digest": a["vertex"].digest},
    ),
    "minibuild.builder.next.exporter.MobyExporter.export": Boundary(
        "(*imageExporterInstance).Export",
        _NEXT + "exporter/export.go",
        args=lambda a: f"names {a['req'].names}" if a["req"].names else "no names",
        result=lambda r, a: _short_id(r),
    ),
}
