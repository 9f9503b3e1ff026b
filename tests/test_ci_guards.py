"""In CI the PyTorch oracle cannot silently vanish, and hypothesis draws fresh, more numerous examples."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_pytest(tmp_path, env_extra, body="def test_nothing():\n    pass\n"):
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_probe.py").write_text(body)
    # torch hidden: a module named torch that fails to import, first on the path
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "torch.py").write_text("raise ImportError('torch is hidden for this test')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    env.update(env_extra, PYTHONPATH=os.pathsep.join([str(tmp_path / "hide"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def test_a_missing_torch_fails_the_run_in_ci(tmp_path):
    result = _run_pytest(tmp_path, {"CI": "true"})
    assert result.returncode != 0
    assert "PyTorch oracle cannot be imported" in result.stdout + result.stderr


def test_a_missing_torch_is_allowed_outside_ci(tmp_path):
    result = _run_pytest(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_selects_the_randomised_profile_with_more_examples(tmp_path):
    body = textwrap.dedent(
        """
        from hypothesis import settings

        def test_profile():
            s, local = settings.default, settings.get_profile("tinyfn")
            assert s.max_examples > local.max_examples and local.derandomize
            assert (s.derandomize, s.print_blob) == (False, True)
        """
    )
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "torch.py").write_text("")  # an importable stand-in: only the profile is under test here
    env_tmp = tmp_path / "ci"
    env_tmp.mkdir()
    (env_tmp / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (env_tmp / "test_probe.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE",)}
    env.update(CI="true", PYTHONPATH=os.pathsep.join([str(tmp_path / "hide"), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", "-o", "addopts=", str(env_tmp)],
        capture_output=True,
        text=True,
        env=env,
        cwd=env_tmp,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
