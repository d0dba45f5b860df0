"""The notebook suite as files: every notebook paired with its py:percent script and in sync with it,
kernelspec normalized, executed top to bottom with its outputs committed, the conventions of each
notebook kept (what you will learn, the article's section, a link onwards, the daemon stopped at the
end), and no path of the machine that ran it in any output. nbval (`make nbval`) re-runs them."""

import json
import re
from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
SCRIPTS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.py"))
EXPECTED = [
    "01-architecture",
    "02-build-api",
    "03-cli-image-build",
    "04-dockerd-router-and-backend",
    "05-builder-v1",
    "06-buildkit",
    "07-sequential-vs-parallel",
    "08-labs",
]
# The article's sections, one per notebook (08 is the classroom's).
SECTIONS = {
    "01": "Docker 架构概览",
    "02": "镜像构建 API",
    "03": "Docker CLI 构建镜像",
    "04": "构建的核心：Dockerd",
    "05": "builder v1",
    "06": "buildkit",
    "07": "总结",
    "08": "labs",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def test_the_suite_is_complete_and_paired():
    assert [p.stem for p in IPYNBS] == EXPECTED
    assert [p.stem for p in SCRIPTS] == EXPECTED


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_script_and_notebook_do_not_drift(ipynb):
    """The script is what jupytext writes from the notebook, byte for byte (and so the same cells)."""
    script = ipynb.with_suffix(".py")
    notebook = jupytext.read(ipynb)
    assert jupytext.writes(notebook, fmt="py:percent") == script.read_text(), (
        f"{script.name} and {ipynb.name} differ: re-run notebooks/_execute.py {ipynb.stem[:2]}"
    )
    from_script = jupytext.read(script)
    assert [(c.cell_type, c.source) for c in from_script.cells] == [
        (c.cell_type, c.source) for c in notebook.cells
    ]


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_kernelspec_is_normalized(ipynb):
    metadata = load(ipynb)["metadata"]
    assert metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert metadata.get("language_info", {}) == {"name": "python"}  # no interpreter version of one machine


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_executed_top_to_bottom_with_outputs(ipynb):
    cells = code_cells(load(ipynb))
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    with_output = [c for c in cells if c["outputs"]]
    assert len(with_output) >= len(cells) // 2, "most cells show something"
    for cell in cells:
        for output in cell["outputs"]:
            assert output["output_type"] != "error", f"a cell failed: {text(cell['source'])[:80]}"


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_conventions(ipynb):
    nb = load(ipynb)
    first, last = nb["cells"][0], nb["cells"][-1]
    intro = text(first["source"])
    assert first["cell_type"] == "markdown" and intro.startswith(f"# {ipynb.stem[:2]} · ")
    assert "What you will learn" in intro and SECTIONS[ipynb.stem[:2]] in intro
    index = EXPECTED.index(ipynb.stem)
    if index + 1 < len(EXPECTED):
        summary = text(nb["cells"][-2]["source"])
        assert "## Summary" in summary and f"({EXPECTED[index + 1]}.ipynb)" in summary
    if index > 0:
        assert f"({EXPECTED[index - 1]}.ipynb)" in intro
    assert last["cell_type"] == "code" and "daemon.stop()" in text(last["source"])
    assert "inspect.getsource" in "".join(text(c["source"]) for c in code_cells(nb))


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_ignore_markers_say_why(ipynb):
    for cell in code_cells(load(ipynb)):
        lines = text(cell["source"]).splitlines()
        if lines and lines[0].startswith("# NBVAL_"):
            assert lines[0] == "# NBVAL_IGNORE_OUTPUT"
            assert len(lines) > 1 and lines[1].startswith("# ") and len(lines[1]) > 20, "say why"


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_outputs_name_no_path_of_this_machine(ipynb):
    outputs = json.dumps([c["outputs"] for c in code_cells(load(ipynb))])
    assert str(REPO) not in outputs
    assert not re.search(r"/home/\w+/", outputs)
