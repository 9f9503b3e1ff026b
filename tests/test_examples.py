"""Every script in examples/ runs as it is, to the end, and prints the line that says what it showed."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXPECTED = {  # script: the start of the line it prints last
    "custom_cnn_batchnorm.py": "custom_cnn_batchnorm: test loss",
    "layer_with_parameters.py": "layer_with_parameters: check_vjp passed",
    "finetune_from_checkpoint.py": "finetune_from_checkpoint: test accuracy",
    "optax_optimizer.py": "optax_optimizer: train loss",
    "data_parallel.py": "data_parallel: 4 devices",
    "causal_copy.py": "causal_copy: held-out loss",
}


def test_every_example_is_run_here_and_says_what_it_shows():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(EXPECTED), f"examples/ and this test's list differ: {sorted(set(scripts) ^ set(EXPECTED))}"
    for name in scripts:
        doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
        assert doc and "python examples/" + name in doc, f"{name}: its docstring says what it shows and how to run it"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, tmp_path):
    env = {
        **os.environ,
        "TINYFN_EXAMPLE_QUICK": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["XLA_FLAGS"] = (
        "--xla_backend_optimization_level=0"  # quicker compiles (as conftest.py's); data_parallel.py adds its devices
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, (
        f"{name} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(EXPECTED[name]), f"{name} ended with {last!r}"
