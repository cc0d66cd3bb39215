"""Runs every notebook top to bottom (nbclient), in fast mode, all at once (a kernel each).

`KS_NOTEBOOK_FAST=1` only shrinks sizes and iterations; every cell runs.
The kernel is this interpreter: a `python3` kernelspec written to a temporary
folder that is put first on `JUPYTER_PATH`, so the notebooks import the
`keras_segmenter` this test imports, whatever kernels the machine has.
"""

import asyncio
import copy
import json
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.testing import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_quickstart", "02_train", "03_attention", "04_class_embeddings"]


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (keras_segmenter tests)",
                "language": "python",
            }
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(root))
        patch.setenv("KS_NOTEBOOK_FAST", "1")
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        patch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        yield


def client(nb, timeout=600):
    return NotebookClient(
        nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )


def images(nb):
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.fixture(scope="module")
def executed(kernel_env):  # noqa: ARG001  (requested for its set-up: the kernel environment)
    """{name: (committed notebook, the same run now)}: every notebook runs at once, each
    in its own kernel; a run that raised is its exception."""
    committed = {name: nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4) for name in NAMES}
    runs = {name: copy.deepcopy(nb) for name, nb in committed.items()}

    async def run_all():
        jobs = [client(nb).async_execute() for nb in runs.values()]
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcomes = asyncio.run(run_all())
    return {name: (committed[name], outcome) for name, outcome in zip(NAMES, outcomes)}


@pytest.mark.usefixtures("kernel_env")
def test_kernel_is_this_interpreter():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\nprint(os.getcwd())"),
        ]
    )
    client(nb, timeout=120).execute()
    lines = nb.cells[0].outputs[0]["text"].splitlines()
    assert lines == [sys.executable, str(NOTEBOOKS)]


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(executed, name):
    committed, nb = executed[name]
    if isinstance(nb, BaseException):
        raise nb
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    errors = [out for c in code_cells for out in c.outputs if out.output_type == "error"]
    assert not errors
    assert images(nb) >= 1
    # The committed copy shows the same figures (it was run with outputs saved).
    assert images(committed) == images(nb)
