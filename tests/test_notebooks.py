"""The course in notebooks/: every chapter runs top to bottom within its budget, and what it shows can be trusted.

The notebooks assert what they claim, so a library change that breaks a law breaks its notebook. They run in a
fresh kernel started with this interpreter (a kernel spec written for the test, so no other Python installed on
the machine can be picked up by name), in the notebooks/ folder.

Conventions checked here (documented in notebooks/README.md):

* Exercises: a stub cell (tags ``exercise`` and ``raises-exception``, cell metadata ``"exercise": "<id>"``) holds
  what the learner writes; the cell right after it (tags ``check`` and ``raises-exception``) tests the learner's
  definitions. The solution is the block ``# %% <id>`` of ``notebooks/solutions/<stem>.py``, which nothing in the
  notebook runs. In one kernel, the test runs every cell in order and, at each exercise, the stub, its check (which
  must fail), the solution in the stub's place and the check again (which must pass). No cell may raise outside
  that one expected failure, and none may write to stderr.
* Outputs: notebooks are committed without outputs, so the page never shows numbers from an older library. Set
  ``TINYFN_EXECUTED_NOTEBOOKS=DIR`` to keep the executed copies (``.ci/run`` keeps them in
  ``build/executed-notebooks/``): stub cells as the learner sees them, without outputs, and every other cell with
  the outputs of the run with the solutions in place.
"""

import ast
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest
from conftest import NOTEBOOK_XLA_FLAGS
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
SOLUTIONS_DIR = NOTEBOOKS_DIR / "solutions"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
BUDGET_S = 90  # each notebook, top to bottom, on two cores
EXECUTED_DIR_ENV = "TINYFN_EXECUTED_NOTEBOOKS"
EXERCISES_PER_CHAPTER = (3, 5)
BLOCK_HEADER = re.compile(r"^# %% (.*?)[ \t]*$", re.MULTILINE)
EXERCISE_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# a check that fails on the stub for one of these reasons does not reach the learner's code
WRONG_REASONS = {"NameError", "SyntaxError", "ImportError", "ModuleNotFoundError", "IndentationError"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# numpy 2 prints a scalar inside a container as np.float64(0.865): printed numbers are formatted instead
NUMPY_SCALAR_REPR = re.compile(r"\bnp\.(float|int|uint|bool|complex)\w*\(")

KERNEL_CHECK = f"""
import pathlib, sys
assert sys.prefix == {sys.prefix!r}, f"the notebook kernel runs {{sys.executable}}, not the test's interpreter"
import tinyfn
assert pathlib.Path(tinyfn.__file__).resolve().is_relative_to({str(ROOT)!r}), f"the kernel imports {{tinyfn.__file__}}"
"""

# The final course, in order (notebooks/README.md lists the same files with one line each).
COURSE = [
    "01_gradients_and_laws",
    "02_an_autodiff_engine",
    "03_linear_layer",
    "04_convolution_as_matrix",
    "05_deconvolution_and_unpooling",
    "06_softmax_cross_entropy",
    "07_optimizers",
    "08_train_a_cnn",
    "09_deconvnet",
    "10_write_your_own_layer",
    "11_batch_norm",
    "12_residual_networks_and_initialisation",
    "13_the_cost_of_a_convolution",
    "14_attention",
    "15_final_project",
]
# the chapters this edition revises rather than adds (02 and 12-15 arrive with the merge that precedes CI)


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def exercises(nb) -> list[tuple[int, str]]:
    """``(cell index, id)`` of every stub cell, in order."""
    return [(i, c.metadata.get("exercise", "")) for i, c in enumerate(nb.cells) if "exercise" in _tags(c)]


def read_solutions(path: Path) -> list[tuple[str, str]]:
    """The ``(id, source)`` blocks of a solutions file, in order; text before the first ``# %%`` is no block."""
    parts = BLOCK_HEADER.split(path.read_text()) if path.is_file() else [""]
    return [(ident, body.strip("\n") + "\n") for ident, body in zip(parts[1::2], parts[2::2])]


def _defined_names(source: str) -> set:
    """The names a cell binds at top level (functions, classes, assignments)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


class Step(NamedTuple):
    """One execution in the kernel: the notebook's cell ``index`` with ``source``; ``role`` says what it must do."""

    index: int
    role: str  # "cell", "stub", "check on stub" (must raise), "solution", "check"
    source: str


def execution_plan(nb, solutions: dict) -> list[Step]:
    """Every code cell in order; at each exercise the stub, its check, the solution and the check again."""
    steps, stubs = [], dict(exercises(nb))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i - 1 in stubs:
            continue
        if i in stubs:
            check = nb.cells[i + 1].source
            steps += [Step(i, "stub", cell.source), Step(i + 1, "check on stub", check)]
            steps += [Step(i, "solution", solutions[stubs[i]]), Step(i + 1, "check", check)]
        else:
            steps.append(Step(i, "cell", cell.source))
    return steps


def _notebook(path: Path):
    return nbformat.read(path, as_version=4)


def _solutions_of(path: Path) -> list[tuple[str, str]]:
    return read_solutions(SOLUTIONS_DIR / f"{path.stem}.py")


def test_the_course_is_there():
    """notebooks/README.md lists COURSE in order; every notebook is on that list and all exist."""
    readme = (NOTEBOOKS_DIR / "README.md").read_text()
    listed = re.findall(r"\]\((\d\d_\w+)\.ipynb\)", readme)
    assert listed == COURSE, f"notebooks/README.md lists {listed}"
    assert [int(n[:2]) for n in COURSE] == list(range(1, 16))
    names = [p.stem for p in NOTEBOOKS]
    assert set(names) <= set(COURSE), f"not in the course's list: {sorted(set(names) - set(COURSE))}"
    assert not set(COURSE) - set(names), f"missing: {[n for n in COURSE if n not in names]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = _notebook(path)
    stale = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not stale, f"{path.name}: cells {stale} carry saved outputs; strip them (outputs come from CI's fresh run)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chapter_has_three_to_five_exercises(path):
    ids = [ident for _, ident in exercises(_notebook(path))]
    low, high = EXERCISES_PER_CHAPTER
    assert low <= len(ids) <= high, f"{path.name} has {len(ids)} exercises ({ids}), not {low} to {high}"
    assert len(set(ids)) == len(ids), f"{path.name}: exercise ids repeat: {ids}"
    bad = [i for i in ids if not EXERCISE_ID.match(i)]
    assert not bad, f"{path.name}: exercise ids must be snake_case (cell metadata 'exercise'), got {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_stub_is_followed_by_its_check(path):
    cells = _notebook(path).cells
    stubs = [i for i, _ in exercises(_notebook(path))]
    for i in stubs:
        where = f"{path.name} cell {i}"
        assert cells[i].cell_type == "code" and {"exercise", "raises-exception"} <= _tags(cells[i]), (
            f"{where}: a stub is a code cell tagged 'exercise' and 'raises-exception'"
        )
        assert i + 1 < len(cells) and cells[i + 1].cell_type == "code", f"{where}: no code cell after the stub"
        assert {"check", "raises-exception"} <= _tags(cells[i + 1]), (
            f"{where}: the cell after a stub is its check, tagged 'check' and 'raises-exception'"
        )
        defined = _defined_names(cells[i].source)
        used = {n.id for n in ast.walk(ast.parse(cells[i + 1].source)) if isinstance(n, ast.Name)}
        assert defined & used, f"{where}: the check uses none of the stub's names {sorted(defined)}"
    checks = [i for i, c in enumerate(cells) if "check" in _tags(c)]
    assert checks == [i + 1 for i in stubs], f"{path.name}: cells {checks} tagged 'check' do not all follow a stub"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_has_one_solution_block_and_every_block_an_exercise(path):
    nb, blocks = _notebook(path), _solutions_of(path)
    ids = [ident for ident, _ in blocks]
    assert len(set(ids)) == len(ids), f"solutions/{path.stem}.py: blocks repeat: {ids}"
    stubs = {ident: nb.cells[i].source for i, ident in exercises(nb)}
    assert sorted(ids) == sorted(stubs), f"solutions/{path.stem}.py has blocks {ids}, the notebook exercises {stubs}"
    for ident, source in blocks:
        missing = _defined_names(stubs[ident]) - _defined_names(source)
        assert not missing, f"solutions/{path.stem}.py block {ident}: it replaces the stub, so defines {missing} too"
        assert "NotImplementedError" not in source, f"solutions/{path.stem}.py block {ident} raises NotImplementedError"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_solution_code_in_the_notebook(path):
    nb = _notebook(path)
    code = [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(nb.cells) if "solution" in _tags(c)]
    assert not tagged, f"{path.name}: cells {tagged} tagged 'solution' (solutions live in notebooks/solutions/)"
    importing = [i for i, src in code if "solutions" in src]
    assert not importing, f"{path.name}: cells {importing} refer to the solutions"
    stubs = {ident: nb.cells[i].source for i, ident in exercises(nb)}
    for ident, block in _solutions_of(path):
        tree = ast.parse(block)
        pieces = [ast.get_source_segment(block, n) for n in tree.body if isinstance(n, ast.FunctionDef)]
        solved = [p for p in pieces if p not in stubs.get(ident, "")]  # what the learner writes, not what is given
        for piece in [block.strip(), *solved]:
            copies = [i for i, src in code if piece and piece in src]
            assert not copies, f"{path.name}: cells {copies} hold solution {ident}'s code"


STUB_F = {"tags": ["exercise", "raises-exception"], "exercise": "f"}


def test_execution_plan_runs_the_stub_its_check_the_solution_and_the_check_again():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("def f(): raise NotImplementedError", metadata=STUB_F),
        nbformat.v4.new_code_cell("assert f() == 2", metadata={"tags": ["check"]}),
        nbformat.v4.new_code_cell("b = f()"),
    ]
    plan = execution_plan(nb, {"f": "def f(): return 2\n"})
    assert [(s.index, s.role) for s in plan] == [
        (0, "cell"),
        (2, "stub"),
        (3, "check on stub"),
        (2, "solution"),
        (3, "check"),
        (4, "cell"),
    ]
    assert plan[3].source == "def f(): return 2\n" and plan[4].source == plan[2].source == "assert f() == 2"


def test_read_solutions_splits_the_file_into_blocks(tmp_path):
    path = tmp_path / "x.py"
    path.write_text('"""Doc."""\n\n# %% first\ndef f():\n    return 1\n\n\n# %% second_one\nb = 2\n')
    assert read_solutions(path) == [("first", "def f():\n    return 1\n"), ("second_one", "b = 2\n")]
    assert read_solutions(tmp_path / "absent.py") == []


def test_numpy_scalar_reprs_are_recognised_and_formatted_numbers_are_not():
    assert NUMPY_SCALAR_REPR.findall("per class: {'cat': np.float64(0.865), 'dog': np.int64(3)}")
    assert not NUMPY_SCALAR_REPR.findall("per class: {'cat': 0.865, 'dog': 3}  (np.float64 arrays, numpy.float32)")


def test_the_executed_copy_shows_stubs_without_outputs_and_the_rest_with_the_solution_run():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("def f(): raise NotImplementedError", metadata=STUB_F),
        nbformat.v4.new_code_cell("assert f() == 2", metadata={"tags": ["check", "raises-exception"]}),
    ]
    ran = {}
    for i, text in ((0, "1"), (1, "solution ran"), (2, "f works")):
        ran[i] = nbformat.v4.new_code_cell(nb.cells[i].source, execution_count=i + 1)
        ran[i].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    copy = executed_copy(nb, ran)
    assert [c.source for c in copy.cells] == [c.source for c in nb.cells]  # the stub's own source, not the solution
    assert copy.cells[1].outputs == [] and copy.cells[1].execution_count is None
    assert [o.text for o in copy.cells[2].outputs] == ["f works"] and copy.cells[0].outputs[0].text == "1"
    assert nb.cells[0].outputs == []  # the committed notebook is untouched


def _kernel_manager(tmp_path: Path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / "tinyfn-test"
    spec_dir.mkdir(parents=True)
    # the kernel compiles with XLA's default optimisation (the notebooks train; conftest.py lowers it for the tests)
    # and imports this checkout's tinyfn: it runs in notebooks/, where a relative PYTHONPATH entry would miss it
    env = {
        "XLA_FLAGS": NOTEBOOK_XLA_FLAGS,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinyfn test",
        "language": "python",
        "env": env,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="tinyfn-test", kernel_spec_manager=specs)


def _failure(name: str, step: Step, why: str, cell) -> str:
    outputs = "\n".join(
        ANSI.sub("", "\n".join(o.get("traceback", [])) if o.output_type == "error" else o.get("text", ""))
        for o in cell.outputs
        if o.output_type in ("error", "stream")
    )
    return f"{name} cell {step.index} ({step.role}): {why}\n--- source\n{step.source}\n--- outputs\n{outputs[-3000:]}"


def run_step(client: NotebookClient, name: str, step: Step):
    """Execute one step in the kernel and check what its role demands; returns the executed cell."""
    cell = nbformat.v4.new_code_cell(step.source, metadata={"tags": ["raises-exception"]})  # errors judged here
    client.execute_cell(cell, step.index)
    errors = [o for o in cell.outputs if o.output_type == "error"]
    stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    assert not stderr, _failure(name, step, f"wrote to stderr: {stderr[:500]!r}", cell)
    shown = "".join(
        o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for o in cell.outputs
        if o.output_type in ("stream", "execute_result", "display_data")
    )
    reprs = NUMPY_SCALAR_REPR.findall(shown)
    assert not reprs, _failure(name, step, "prints numpy scalar reprs (np.float64(...)): format the numbers", cell)
    if step.role == "check on stub":
        assert errors, _failure(name, step, "stub check fails: the check passed on the stub", cell)
        assert errors[0].ename not in WRONG_REASONS, _failure(
            name, step, f"the check fails on the stub with {errors[0].ename}, before it reaches the stub's code", cell
        )
    else:
        assert not errors, _failure(name, step, "raised", cell)
    return cell


def executed_copy(nb, ran: dict):
    """The notebook for the docs: stubs as the learner sees them, every other code cell with its last run's outputs."""
    copy = nbformat.from_dict(json.loads(json.dumps(nb)))
    for i, cell in ran.items():
        if "exercise" not in _tags(copy.cells[i]):
            copy.cells[i].outputs, copy.cells[i].execution_count = cell.outputs, cell.execution_count
    return copy


def _write_atomically(nb, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    nbformat.write(nb, tmp)
    tmp.replace(target)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean_and_every_stub_check_fails(path, tmp_path):
    nb = _notebook(path)
    plan = execution_plan(nb, dict(_solutions_of(path)))
    deadline = time.monotonic() + BUDGET_S
    scratch = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell() for _ in range(len(nb.cells) + 1)])
    client = NotebookClient(
        scratch,  # nbclient files each executed cell here by index; the kernel check takes the last slot
        km=_kernel_manager(tmp_path),
        timeout=BUDGET_S,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),  # what is left of the budget
        allow_errors=True,  # run_step judges every error and every write to stderr
    )
    started, ran = time.monotonic(), {}
    with client.setup_kernel(cwd=str(NOTEBOOKS_DIR)):
        run_step(client, path.name, Step(len(nb.cells), "cell", KERNEL_CHECK))
        for step in plan:
            ran[step.index] = run_step(client, path.name, step)
    took = time.monotonic() - started
    if os.environ.get(EXECUTED_DIR_ENV):
        _write_atomically(executed_copy(nb, ran), Path(os.environ[EXECUTED_DIR_ENV]) / path.name)
    print(f"{path.name}: {took:.1f} s")
    assert time.monotonic() <= deadline, f"{path.name} took more than {BUDGET_S} s"
