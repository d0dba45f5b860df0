"""Differential: the classic builder and the DAG solver give the same final filesystem and runtime config
for the same Dockerfile and build args — every Dockerfile in tests/ and bench/: the golden transcripts', the
classic builder's instruction tests' (test_classic_instructions.CASES), bench/'s (history may differ, as
Docker's builders' does)."""

import json
from pathlib import Path

import pytest
from test_classic_instructions import CASES as CLASSIC_CASES
from test_classic_instructions import Case
from test_next_harness import NextBench, needs_root, snapshot_of_tree

from minibuild.runtime.spec import DEFAULT_PATH_ENV

pytestmark = [pytest.mark.root, needs_root]

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
# The runtime config: what a container made from the image gets.
RUNTIME_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
                  "StopSignal", "Healthcheck", "OnBuild", "Shell")  # fmt: skip
# What the classic builder refuses and BuildKit builds, by the classic builder's message:
BUILDKIT_ALLOWS = (
    "requires BuildKit",  # RUN --mount, heredocs: BuildKit's own syntax
    # A stage name used twice: the classic builder refuses it when it reaches the second stage, while
    # BuildKit's convert lets the later stage take the name.
    "stage name already used",
    # BuildKit's COPY has no such checks: a wildcard may match nothing (AllowEmptyWildcard), and several
    # sources may go to one file (each copy replaces the last).
    "COPY failed: no source files were specified",
    "When using COPY with more than one source file",
)
# Paths where the images differ on purpose, as Docker's builders do, by case.
DIFFERENT_PATHS = {
    # The classic daemon drops a Dockerfile that .dockerignore names from the context (remotecontext);
    # BuildKit copies the context it was sent.
    "classic-instructions/dockerignore-not-applied": {"/ctx/Dockerfile"},
    # fsutil's copy makes a directory copy's missing destination first (0755, the --chown owner): its
    # --chmod reaches only what is copied into it; the classic builder's chmod covers the new directory too.
    "classic-instructions/copy-chown-chmod": {"/d"},
}
# Named after what they show; each is also a Dockerfile of this test suite.
EXTRA = {
    "fanout-with-unused-stage": (
        "FROM busybox:local AS a\nRUN echo a > /a.txt\nFROM busybox:local AS b\nRUN echo b > /b.txt\n"
        "FROM busybox:local AS unused\nRUN echo never > /marker\n"
        "FROM busybox:local\nCOPY --from=a /a.txt /a.txt\nCOPY --from=b /b.txt /b.txt\n"
        "RUN cat /a.txt /b.txt\n",
        {},
    ),
    "copy-semantics": (
        "FROM busybox:local\nCOPY dir /copied-dir\nCOPY dir/ /into/\nCOPY w*.log /logs/\n"
        "COPY --chown=1000:1001 w1.log /owned.log\nWORKDIR /made/by/workdir\nCOPY w2.log .\n"
        "RUN ln -s /copied-dir /link && echo changed > /copied-dir/g.txt && rm /bin/vi\n",
        {"dir/sub/f.txt": b"f", "dir/g.txt": b"g", "w1.log": b"1", "w2.log": b"2"},
    ),
    "scratch-and-metadata": (
        'FROM scratch\nCOPY a.txt /\nENV A=1 B="two words"\nLABEL l=v\nENTRYPOINT ["/a.txt"]\n',
        {"a.txt": b"a"},
    ),
}


def query_to_options(query: dict) -> dict:
    """The golden cases' query parameters, as build options (only what changes the image)."""
    options: dict = {}
    if "target" in query:
        options["target"] = query["target"]
    if "buildargs" in query:
        options["build_args"] = json.loads(query["buildargs"])
    if "labels" in query:
        options["labels"] = json.loads(query["labels"])
    return options


def from_files(files: dict[str, bytes], options: dict) -> Case:
    rest = {name: data for name, data in files.items() if name != "Dockerfile"}
    return Case(files["Dockerfile"].decode(), rest, options)


def cases() -> list:
    out = []
    seen = set()
    for case in sorted(p for p in GOLDEN.iterdir() if (p / "case.json").is_file()):
        spec = json.loads((case / "case.json").read_text())
        context_dir = GOLDEN / spec.get("context", case.name)
        files = {
            str(f.relative_to(context_dir)): f.read_bytes()
            for f in sorted(context_dir.rglob("*"))
            if f.is_file() and f.name not in ("case.json", "stream.jsonl")
        }
        options = query_to_options(spec.get("query", {}))
        key = (
            json.dumps(sorted((k, v.hex()) for k, v in files.items())),
            json.dumps(options, sort_keys=True),
        )
        if key in seen:  # a case that only repeats another's build (cached, quiet)
            continue
        seen.add(key)
        name = f"golden/{case.name}"
        out.append(pytest.param(name, from_files(files, options), id=name))
    for dockerfile in sorted((REPO / "bench").glob("*/Dockerfile")):
        files = {
            str(f.relative_to(dockerfile.parent)): f.read_bytes()
            for f in dockerfile.parent.rglob("*")
            if f.is_file()
        }
        name = f"bench/{dockerfile.parent.name}"
        out.append(pytest.param(name, from_files(files, {}), id=name))
    for case_name, case in CLASSIC_CASES.items():
        name = f"classic-instructions/{case_name}"
        out.append(pytest.param(name, case, id=name))
    for name, (dockerfile, files) in EXTRA.items():
        out.append(pytest.param(name, Case(dockerfile, files), id=name))
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return NextBench(tmp_path_factory.mktemp("differential"))


def runtime_config(config: dict) -> dict:
    container = config.get("config") or {}
    out = {field: container.get(field) for field in RUNTIME_FIELDS}
    out["WorkingDir"] = out["WorkingDir"] or "/"  # "" and "/" both mean the root
    # BuildKit writes the default PATH into the config; the classic builder leaves it to the runtime,
    # which adds the same PATH to a container whose image sets none.
    env = list(out["Env"] or [])
    if not any(entry.startswith("PATH=") for entry in env):
        env.insert(0, "PATH=" + DEFAULT_PATH_ENV)
    out["Env"] = env
    for field in ("Labels", "ExposedPorts", "Volumes"):
        out[field] = out[field] or None
    return out


@pytest.mark.parametrize(("name", "case"), cases())
def test_both_builders_give_the_same_image(bench, tmp_path, name, case):
    for first in case.before:  # a base image the case builds on, made (and tagged) by the classic builder
        before = CLASSIC_CASES[first]
        bench.build(before.dockerfile, before.files, body=before.body, version="1", **before.options).ok()
    classic = bench.build(case.dockerfile, case.files, body=case.body, version="1", **case.options)
    buildkit = bench.build(case.dockerfile, case.files, body=case.body, version="2", **case.options)
    if classic.error is not None:
        # What the classic builder refuses (a failing RUN, a missing file, a bad EXPOSE, RUN on scratch,
        # an unreachable base) fails here too, except what BuildKit allows on purpose:
        if any(reason in str(classic.error) for reason in BUILDKIT_ALLOWS):
            assert buildkit.error is None, buildkit.error
            return
        assert buildkit.error is not None, (
            f"the classic builder failed ({classic.error}) but BuildKit did not"
        )
        return
    assert buildkit.error is None, f"BuildKit-style builder failed: {buildkit.error}"
    assert runtime_config(bench.config(buildkit.image_id)) == runtime_config(bench.config(classic.image_id))
    v1 = snapshot_of_tree(bench.tree(classic.image_id, tmp_path / "classic"))
    v2 = snapshot_of_tree(bench.tree(buildkit.image_id, tmp_path / "buildkit"))
    differing = set(v1) ^ set(v2) | {p for p in set(v1) & set(v2) if v1[p] != v2[p]}
    assert differing == DIFFERENT_PATHS.get(name, set()), {p: (v1.get(p), v2.get(p)) for p in differing}
