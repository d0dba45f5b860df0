"""Run the notebooks from their py:percent scripts and store them with their outputs (jupytext, nbclient).

    .venv/bin/python notebooks/_execute.py            # every notebook
    .venv/bin/python notebooks/_execute.py 02 05      # some of them

Each `NN-topic.py` is read (the script is the source of truth for the code and the text), run top to
bottom in a fresh kernel of this environment from the notebooks directory, and written to
`NN-topic.ipynb` with its outputs; the script is then rewritten from the notebook, so both carry the
same cells and metadata. The kernelspec is normalized (python3, "Python 3") and per-run metadata
(execution times, the interpreter's exact version) is dropped, so a re-run changes only what the code
printed. `make nbval` then checks that a fresh run prints the same.
"""

import hashlib
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def normalize(nb: nbformat.NotebookNode, name: str) -> None:
    """Metadata that does not depend on the machine or the run; consecutive prints as one output.
    Cell ids are derived from the notebook's name and the cell's position (jupytext would make new
    random ones on every read), so a re-run leaves them alone."""
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    for i, cell in enumerate(nb.cells):
        cell.id = hashlib.sha256(f"{name}:{i}".encode()).hexdigest()[:8]
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)


def coalesce_streams(outputs: list) -> list:
    """Join consecutive stdout (or stderr) pieces: how they were flushed is not part of the result."""
    merged: list = []
    for output in outputs:
        last = merged[-1] if merged else None
        follows = last is not None and last.output_type == "stream" and last.get("name") == output.get("name")
        if output.output_type == "stream" and follows:
            last.text += output.text
            continue
        merged.append(output)
    return merged


def execute(script: Path) -> float:
    nb = jupytext.read(script)
    normalize(nb, script.stem)
    started = time.monotonic()
    resources = {"metadata": {"path": str(HERE)}}  # run from notebooks/, as JupyterLab and nbval do
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources)
    client.execute()
    elapsed = time.monotonic() - started
    normalize(nb, script.stem)
    jupytext.write(nb, script.with_suffix(".ipynb"), fmt="ipynb")
    jupytext.write(nb, script, fmt="py:percent")
    return elapsed


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("[0-9][0-9]-*.py"))
    if argv:
        scripts = [s for s in scripts if any(s.name.startswith(prefix) for prefix in argv)]
    for script in scripts:
        print(f"{script.name}: {execute(script):.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
