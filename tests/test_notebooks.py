"""Every notebook in notebooks/ runs top to bottom without an error, within its time budget.

The notebooks assert what they claim, so a library change that breaks a law breaks its notebook. They
run in a fresh kernel started with this interpreter (a kernel spec written for the test, so no other
Python installed on the machine can be picked up by name), in the notebooks/ folder.
"""

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
BUDGET_S = 120  # each notebook, top to bottom; they take seconds on two cores

KERNEL_CHECK = f"""
import sys
assert sys.prefix == {sys.prefix!r}, f"the notebook kernel runs {{sys.executable}}, not the test's interpreter"
"""


def _kernel_manager(tmp_path: Path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / "tinyfn-test"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "tinyfn test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="tinyfn-test", kernel_spec_manager=specs)


def test_the_course_is_there():
    names = {p.name for p in NOTEBOOKS}
    expected = {"01_gradients_and_laws.ipynb", "02_linear_layer.ipynb", "03_convolution_as_matrix.ipynb",
                "04_deconvolution_and_unpooling.ipynb", "05_train_a_cnn.ipynb", "06_deconvnet.ipynb",
                "07_write_your_own_layer.ipynb"}  # fmt: skip
    assert expected <= names, f"missing: {sorted(expected - names)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(KERNEL_CHECK))
    deadline = time.monotonic() + BUDGET_S
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=BUDGET_S,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),  # what is left of the budget
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell, CellTimeoutError past the budget
    assert time.monotonic() <= deadline, f"{path.name} took more than {BUDGET_S} s"
