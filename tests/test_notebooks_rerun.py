"""Re-running any cell of a notebook does not break the next ones: each notebook is run top to bottom
with every code cell executed twice in a row (the second time on the state the first left), in a kernel
of this environment started in notebooks/, as JupyterLab and nbval start theirs. No cell may fail."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the notebooks' RUN steps need root (or user namespaces)"),
]
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")), ids=lambda p: p.stem)
def test_every_cell_can_run_twice(path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)  # raises CellExecutionError with the cell's traceback
                client.execute_cell(cell, index)
