"""The classic build cache (moby image/cache, builder/dockerfile/imageprobe.go): a step is reused when
an image with the same parent was committed with the same step config; once a step misses, the rest of
the stage runs again."""

import io
import os
import re

import pytest
from golden.harness import BuildBench

from minibuild.builder.dockerfile.imageprobe import compare

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]
DOCKERFILE = """FROM busybox:local
ENV STAGE=one
COPY a.txt /a.txt
RUN cat /a.txt > /copy-a.txt
COPY b.txt /b.txt
RUN cat /b.txt > /copy-b.txt
"""


@pytest.fixture
def bench(tmp_path):
    return BuildBench(tmp_path / "root")


def cached_steps(built) -> list[int]:
    """The numbers of the steps served from the cache."""
    steps, step = [], 0
    for text in built.texts:
        if m := re.match(r"Step (\d+)/", text):
            step = int(m.group(1))
        elif text == " ---> Using cache\n":
            steps.append(step)
    return steps


def step_ids(built) -> list[str]:
    return [m.group(1) for t in built.texts if (m := re.fullmatch(r" ---> ([0-9a-f]{12})\n", t))]


def test_a_second_build_is_fully_cached_with_the_same_ids(bench):
    files = {"a.txt": b"a", "b.txt": b"b"}
    first = bench.build(DOCKERFILE, files)
    second = bench.build(DOCKERFILE, files)
    assert first.ok() == second.ok()
    assert cached_steps(first) == []
    assert cached_steps(second) == [2, 3, 4, 5, 6]
    assert step_ids(first) == step_ids(second)


def test_a_changed_file_invalidates_exactly_from_its_copy_on(bench):
    bench.build(DOCKERFILE, {"a.txt": b"a", "b.txt": b"b"}).ok()
    changed = bench.build(DOCKERFILE, {"a.txt": b"a", "b.txt": b"B"})
    assert cached_steps(changed) == [2, 3, 4]
    t = bench.tree(changed.ok(), bench.data_root / "tree")
    assert (t / "copy-b.txt").read_bytes() == b"B"
    changed = bench.build(DOCKERFILE, {"a.txt": b"A", "b.txt": b"B"})
    assert cached_steps(changed) == [2]


def test_a_changed_mode_invalidates_the_copy(bench):
    import tarfile

    from golden.harness import tar_of

    files = {"Dockerfile": DOCKERFILE.encode(), "a.txt": b"a", "b.txt": b"b"}
    bench.build(DOCKERFILE, files).ok()
    raw = io.BytesIO(tar_of(files))
    out = io.BytesIO()
    with tarfile.open(fileobj=raw) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            if member.name == "b.txt":
                member.mode = 0o755
            dst.addfile(member, src.extractfile(member))
    assert cached_steps(bench.build("", body=out.getvalue())) == [2, 3, 4]


def test_file_times_do_not_matter(bench):
    from golden.harness import tar_of

    files = {"Dockerfile": DOCKERFILE.encode(), "a.txt": b"a", "b.txt": b"b"}
    bench.build("", body=tar_of(files, mtime=1)).ok()
    assert cached_steps(bench.build("", body=tar_of(files, mtime=2))) == [2, 3, 4, 5, 6]


def test_a_changed_instruction_invalidates_the_rest_of_its_stage_only(bench):
    dockerfile = (
        "FROM busybox:local AS a\nRUN echo {x} > /x\nRUN echo more\nFROM busybox:local\nRUN echo other\n"
    )
    bench.build(dockerfile.format(x=1)).ok()
    changed = bench.build(dockerfile.format(x=2))
    assert cached_steps(changed) == [5]  # the next stage starts with a fresh cache


def test_no_cache_gives_new_ids(bench):
    first = bench.build(DOCKERFILE, {"a.txt": b"a", "b.txt": b"b"})
    again = bench.build(DOCKERFILE, {"a.txt": b"a", "b.txt": b"b"}, no_cache=True)
    assert cached_steps(again) == []
    assert set(step_ids(first)[1:]).isdisjoint(step_ids(again)[1:])  # created times differ
    # both are children of the same images now; the cache takes the newest
    assert bench.build(DOCKERFILE, {"a.txt": b"a", "b.txt": b"b"}).ok() == again.ok()


def test_build_args_are_part_of_a_run_cache_key(bench):
    dockerfile = "FROM busybox:local\nARG V\nRUN echo $V > /v\n"
    bench.build(dockerfile, build_args={"V": "1"}).ok()
    assert cached_steps(bench.build(dockerfile, build_args={"V": "1"})) == [2, 3]
    assert cached_steps(bench.build(dockerfile, build_args={"V": "2"})) == [2]
    # an undeclared proxy arg does not change the key
    assert cached_steps(bench.build(dockerfile, build_args={"V": "1", "HTTP_PROXY": "http://p"})) == [2, 3]


def test_copy_from_content_is_part_of_the_key(bench):
    dockerfile = (
        "FROM busybox:local AS src\nCOPY a.txt /a.txt\nFROM busybox:local\nCOPY --from=src /a.txt /b.txt\n"
    )
    bench.build(dockerfile, {"a.txt": b"1"}).ok()
    assert cached_steps(bench.build(dockerfile, {"a.txt": b"1"})) == [2, 4]
    assert cached_steps(bench.build(dockerfile, {"a.txt": b"2"})) == []


def test_cache_from_an_image_without_local_parents(tmp_path):
    """An image saved in one data root and loaded in another has no parent chain: `cachefrom` matches
    its history instead, step by step, and re-creates the intermediate images."""
    files = {"a.txt": b"a", "b.txt": b"b"}
    one = BuildBench(tmp_path / "one")
    image_id = one.build(DOCKERFILE, files, tags=["golden-cache:v1"]).ok()
    archive = io.BytesIO()
    one.service.save(["golden-cache:v1"], archive)
    two = BuildBench(tmp_path / "two")
    archive.seek(0)
    two.service.load(archive, on_stream=lambda _: None)
    assert cached_steps(two.build(DOCKERFILE, files, no_cache=False)) == []  # without cachefrom: no parents
    three = BuildBench(tmp_path / "three")
    archive.seek(0)
    three.service.load(archive, on_stream=lambda _: None)
    built = three.build(DOCKERFILE, files, cache_from=["golden-cache:v1"])
    assert cached_steps(built) == [2, 3, 4, 5, 6]
    assert built.ok() == image_id


def test_cache_from_limits_local_hits_to_its_images(bench):
    files = {"a.txt": b"a", "b.txt": b"b"}
    bench.build(DOCKERFILE, files, tags=["one:v1"]).ok()
    bench.build("FROM busybox:local\nENV OTHER=1\n", tags=["other:v1"]).ok()
    assert cached_steps(bench.build(DOCKERFILE, files, cache_from=["other:v1"])) == []
    assert cached_steps(bench.build(DOCKERFILE, files, cache_from=["one:v1", "missing:v9"])) == [
        2,
        3,
        4,
        5,
        6,
    ]


def test_compare_ignores_image_and_hostname_but_not_the_command():
    base = {"Cmd": ["/bin/sh", "-c", "x"], "Env": ["A=1"], "Image": "sha256:1", "Hostname": "a"}
    assert compare(base, {**base, "Image": "sha256:2", "Hostname": "b"})
    assert not compare(base, {**base, "Cmd": ["/bin/sh", "-c", "y"]})
    assert not compare(base, {**base, "Env": ["A=2"]})
    assert not compare(base, {**base, "Labels": {"x": "1"}})
    assert not compare(base, {**base, "ExposedPorts": {"80/tcp": {}}})
    assert not compare(base, {**base, "OpenStdin": True})
    assert not compare(None, base)
