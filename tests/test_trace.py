"""Walkthrough tracing (minibuild/trace.py): off by default, a tree of boundaries when recording, every
marked function described, summaries that never break a build; and a real build's path through the
daemon, both builders."""

import asyncio
import importlib
import io
import pkgutil
import tarfile

import pytest

import minibuild
from minibuild import trace
from minibuild.api.daemon import embedded_daemon
from minibuild.api.types import ImageBuildOptions


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@trace.traced
def _outer(n: int) -> int:
    return _inner(n) + _inner(n + 1)


@trace.traced
def _inner(n: int) -> int:
    return n * 2


@trace.traced
async def _fan_out(names: list[str]) -> list[str]:
    return list(await asyncio.gather(*(_leaf(n) for n in names)))


@trace.traced
async def _leaf(name: str) -> str:
    await asyncio.sleep(0)
    return name.upper()


@trace.traced
def _fails() -> None:
    raise ValueError("refused on purpose")


def test_off_by_default_records_nothing():
    assert trace.ENABLED is False
    assert _outer(1) == 6
    with trace.recording() as rec:
        pass
    assert rec.events == []


def test_nested_calls_form_a_tree_in_call_order():
    with trace.recording() as rec:
        _outer(1)
    assert [(e.function, e.depth, e.parent) for e in rec.events] == [
        ("_outer", 0, None),
        ("_inner", 1, 0),
        ("_inner", 1, 0),
    ]
    assert all(e.end is not None and e.end >= e.start for e in rec.events)
    assert trace.ENABLED is False


def test_concurrent_tasks_stay_under_their_caller():
    with trace.recording() as rec:
        assert asyncio.run(_fan_out(["a", "b", "c"])) == ["A", "B", "C"]
    root, *leaves = rec.events
    assert root.function == "_fan_out" and [e.function for e in leaves] == ["_leaf"] * 3
    assert {e.parent for e in leaves} == {root.seq}


def test_off_a_marked_coroutine_function_hands_back_the_functions_own_coroutine():
    coro = _leaf("a")  # no wrapper coroutine around it: nothing of ours runs while it does
    try:
        assert coro.cr_code is _leaf.__wrapped__.__code__
    finally:
        coro.close()
    assert asyncio.run(_leaf("b")) == "B"
    assert asyncio.iscoroutinefunction(_leaf)  # what aiohttp asks of a handler


def test_on_a_coroutine_awaited_in_another_task_stays_under_its_caller():
    @trace.traced
    async def spawner() -> str:
        return await asyncio.create_task(_leaf("t"))

    with trace.recording() as rec:
        assert asyncio.run(spawner()) == "T"
    outer, inner = rec.events
    assert outer.function.endswith("spawner") and (inner.function, inner.parent) == ("_leaf", outer.seq)
    assert inner.end is not None and outer.end is not None and inner.end <= outer.end


def test_errors_are_recorded_and_still_raised():
    with trace.recording() as rec, pytest.raises(ValueError):
        _fails()
    (event,) = rec.events
    assert event.error and event.outcome == "✗ refused on purpose"


def test_a_summary_that_fails_never_breaks_the_call(monkeypatch):
    key = f"{_inner.__module__}.{_inner.__qualname__}"
    broken = trace.Boundary("inner", "x.go", args=lambda a: a["missing"], result=lambda r, a: 1 / 0)
    monkeypatch.setitem(trace.BOUNDARIES, key, broken)
    with trace.recording() as rec:
        assert _inner(2) == 4
    (event,) = rec.events
    assert event.summary == "(no summary: KeyError)" and event.outcome == "(no summary: ZeroDivisionError)"


def test_one_recording_at_a_time():
    with trace.recording(), pytest.raises(RuntimeError), trace.recording():
        pass
    assert trace.ENABLED is False


def test_points_have_no_outcome_and_cost_nothing_when_off():
    trace.point("switch", version="1")  # off: nothing to record, nothing raised
    with trace.recording() as rec:
        trace.point("switch", version="2")
    (event,) = rec.events
    assert event.summary == 'version "2" → BuildKit-style builder' and event.outcome == ""


def test_render_indents_children_under_their_caller():
    with trace.recording() as rec:
        asyncio.run(_fan_out(["x", "y"]))
    lines = rec.render().splitlines()
    assert lines[0].startswith("_fan_out") and all(line.startswith("  _leaf") for line in lines[1:])
    assert trace.render([]).startswith("(no events")


def test_every_traced_function_of_the_package_is_described():
    """A marked function without an entry in BOUNDARIES would show `?` as the Go function it mirrors."""
    marked = []
    for info in pkgutil.walk_packages(minibuild.__path__, "minibuild."):
        if info.name.endswith("__main__"):
            continue  # `python -m minibuild` runs the CLI on import
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            candidates = [value, *vars(value).values()] if isinstance(value, type) else [value]
            marked += [fn.trace_key for fn in candidates if isinstance(getattr(fn, "trace_key", None), str)]
    assert len(marked) >= 15
    assert sorted(set(marked) - set(trace.BOUNDARIES)) == []


# --- a real build's path ------------------------------------------------------------------------------

DOCKERFILE = b"FROM scratch AS a\nCOPY a.txt /a.txt\nFROM scratch\nCOPY --from=a /a.txt /copied.txt\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        yield d


def build(daemon, **options) -> tuple[trace.Recording, list[dict]]:
    client = daemon.client()
    with (
        trace.recording() as rec,
        client.image_build(
            tar_of({"Dockerfile": DOCKERFILE, "a.txt": b"a\n"}), ImageBuildOptions(**options)
        ) as r,
    ):
        messages = list(r.messages())
    client.close()
    return rec, messages


def test_classic_build_path(daemon):
    rec, messages = build(daemon, tags=["traced:v1"], build_args={"SOURCE_DATE_EPOCH": "0"})
    assert [e.function for e in trace.tree_order(rec.events)] == [
        "BuildRouter.post_build",
        "new_image_build_options",
        "get_auth_configs",
        "Backend.build",
        "switch",
        "BuildManager.build",
        "Builder.dispatch_dockerfile_with_cancellation",
        "initialize_stage",
        "dispatch",
        "commit_stage",
        "initialize_stage",
        "dispatch",
        "commit_stage",
        "tag_images",
    ]
    (switch,) = rec.find("switch")
    assert (
        switch.summary == 'version "1" → classic builder' and switch.mirrors == "if useBuildKit {…} else {…}"
    )
    (backend,) = rec.find("Backend.build")
    built = next(m["stream"] for m in messages if m.get("stream", "").startswith("Successfully built"))
    assert backend.outcome == built.split()[-1]
    assert [e.summary for e in rec.find("dispatch")] == [
        "COPY a.txt /a.txt",
        "COPY --from=a /a.txt /copied.txt",
    ]
    (post,) = rec.find("BuildRouter.post_build")
    assert ("t", "traced:v1") in post.details["query"] and post.mirrors == "(*buildRouter).postBuild"


def test_buildkit_build_path_and_a_cached_rebuild(daemon):
    rec, _ = build(daemon, version="2", build_args={"SOURCE_DATE_EPOCH": "0"})
    functions = [e.function for e in rec.events]
    assert functions[:5] == [
        "BuildRouter.post_build",
        "new_image_build_options",
        "get_auth_configs",
        "Backend.build",
        "switch",
    ]
    for name in ("Builder.build", "Controller.solve", "dockerfile_to_llb", "MobyExporter.export"):
        assert functions.count(name) == 1, name
    assert "dispatch" not in functions
    (solve,) = rec.find("Controller.solve")
    assert solve.details["frontend_attrs"]["build-arg:SOURCE_DATE_EPOCH"] == "0"
    ran = {e.summary: e.outcome for e in rec.find("Job._solve")}
    assert ran["[stage-1 1/1] COPY --from=a /a.txt /copied.txt"] == "ran"

    again, _ = build(daemon, version="2", build_args={"SOURCE_DATE_EPOCH": "0"})
    vertices = {e.summary: e.outcome for e in again.find("Job._solve")}
    # A cached target never needs its inputs: the stage `a` is not even looked at.
    assert vertices["[stage-1 1/1] COPY --from=a /a.txt /copied.txt"] == "cached"
    assert "[a 1/1] COPY a.txt /a.txt" not in vertices


def test_a_bad_tag_stops_the_path_before_the_switch(daemon):
    client = daemon.client()
    with trace.recording() as rec, pytest.raises(Exception, match="repository name must be lowercase"):
        client.image_build(
            tar_of({"Dockerfile": DOCKERFILE, "a.txt": b"a\n"}), ImageBuildOptions(tags=["Bad"])
        )
    client.close()
    (backend,) = rec.find("Backend.build")
    assert backend.error and not rec.find("switch")
