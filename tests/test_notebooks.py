"""The course in notebooks/: every chapter runs top to bottom within its budget, and what it shows can be trusted.

The notebooks assert what they claim, so a library change that breaks a law breaks its notebook. They run in a
fresh kernel started with this interpreter (a kernel spec written for the test, so no other Python installed on
the machine can be picked up by name), in the notebooks/ folder.

Conventions checked here (documented in notebooks/README.md):

* Exercises: a code cell tagged ``exercise`` is left for the learner and raises ``NotImplementedError``; the cell
  right after it is tagged ``solution``. The run drops every exercise cell and executes its solution in its place,
  so the asserts that follow check a working answer.
* Outputs: notebooks are committed without outputs, so the page never shows numbers from an older library. Set
  ``TINYFN_EXECUTED_NOTEBOOKS=DIR`` to keep the freshly executed copies (``.ci/run`` keeps them in
  ``build/executed-notebooks/``).
"""

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK_XLA_FLAGS
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
BUDGET_S = 90  # each notebook, top to bottom, on two cores
EXECUTED_DIR_ENV = "TINYFN_EXECUTED_NOTEBOOKS"

KERNEL_CHECK = f"""
import sys
assert sys.prefix == {sys.prefix!r}, f"the notebook kernel runs {{sys.executable}}, not the test's interpreter"
"""


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def _kernel_manager(tmp_path: Path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / "tinyfn-test"
    spec_dir.mkdir(parents=True)
    # the kernel compiles with XLA's default optimisation (the notebooks train; conftest.py lowers it for the tests)
    env = {"XLA_FLAGS": NOTEBOOK_XLA_FLAGS}
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinyfn test",
        "language": "python",
        "env": env,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="tinyfn-test", kernel_spec_manager=specs)


def with_solutions(nb):
    """The notebook as CI runs it: each ``exercise`` cell dropped, so the ``solution`` after it runs instead."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    nb.cells = [c for c in nb.cells if "exercise" not in _tags(c)]
    return nb


def test_the_course_is_there():
    names = {p.name for p in NOTEBOOKS}
    expected = {
        "01_gradients_and_laws.ipynb",
        "03_linear_layer.ipynb",
        "04_convolution_as_matrix.ipynb",
        "05_deconvolution_and_unpooling.ipynb",
        "08_train_a_cnn.ipynb",
        "09_deconvnet.ipynb",
        "10_write_your_own_layer.ipynb",
        "06_softmax_cross_entropy.ipynb",
        "07_optimizers.ipynb",
        "11_batch_norm.ipynb",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    stale = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not stale, f"{path.name}: cells {stale} carry saved outputs; strip them (outputs come from CI's fresh run)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chapter_has_an_exercise_with_a_solution_after_it(path):
    cells = nbformat.read(path, as_version=4).cells
    exercises = [i for i, c in enumerate(cells) if "exercise" in _tags(c)]
    assert exercises, f"{path.name} has no cell tagged 'exercise'"
    for i in exercises:
        assert cells[i].cell_type == "code" and "raise NotImplementedError" in cells[i].source, (
            f"{path.name} cell {i}: an exercise raises NotImplementedError"
        )
        assert i + 1 < len(cells) and "solution" in _tags(cells[i + 1]), (
            f"{path.name} cell {i}: the next cell must be tagged 'solution'"
        )
        assert "NotImplementedError" not in cells[i + 1].source, f"{path.name} cell {i + 1}: a solution must not raise"
    solutions = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    assert len(solutions) == len(exercises), f"{path.name}: a 'solution' cell without an exercise before it"


def test_with_solutions_drops_exactly_the_exercise_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("raise NotImplementedError", metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell("b = 2", metadata={"tags": ["solution"]}),
    ]
    assert [c.source for c in with_solutions(nb).cells] == ["a = 1", "b = 2"]
    assert len(nb.cells) == 3  # the original is untouched


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path):
    nb = with_solutions(nbformat.read(path, as_version=4))
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
    started = time.monotonic()
    client.execute()  # raises CellExecutionError on the first failing cell, CellTimeoutError past the budget
    took = time.monotonic() - started
    if os.environ.get(EXECUTED_DIR_ENV):
        out = Path(os.environ[EXECUTED_DIR_ENV])
        out.mkdir(parents=True, exist_ok=True)
        nb.cells.pop(0)  # the kernel check is the test's, not the chapter's
        tmp = out / f".{path.name}.tmp"
        nbformat.write(nb, tmp)
        tmp.replace(out / path.name)
    print(f"{path.name}: {took:.1f} s")
    assert time.monotonic() <= deadline, f"{path.name} took more than {BUDGET_S} s"
