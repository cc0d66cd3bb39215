"""Runs every notebook top to bottom (nbclient), in fast mode.

`KS_NOTEBOOK_FAST=1` only shrinks sizes and iterations; every cell runs.
The kernel is this interpreter: a `python3` kernelspec written to a temporary
folder that is put first on `JUPYTER_PATH`, so the notebooks import the
`keras_segmenter` this test imports, whatever kernels the machine has.
"""

import json
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
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


def execute(nb, timeout=600):
    client = NotebookClient(
        nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return nb


@pytest.mark.usefixtures("kernel_env")
def test_kernel_is_this_interpreter():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\nprint(os.getcwd())"),
        ]
    )
    lines = execute(nb, timeout=120).cells[0].outputs[0]["text"].splitlines()
    assert lines == [sys.executable, str(NOTEBOOKS)]


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.usefixtures("kernel_env")
def test_notebook_runs_top_to_bottom(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    committed_images = sum(
        "image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", [])
    )
    execute(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    errors = [out for c in code_cells for out in c.outputs if out.output_type == "error"]
    assert not errors
    images = sum("image/png" in out.get("data", {}) for c in code_cells for out in c.outputs)
    assert images >= 1
    # The committed copy shows the same figures (it was run with outputs saved).
    assert committed_images == images
