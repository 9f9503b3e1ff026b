"""The progress bar: quiet runs and Jupyter kernels without ipywidgets write no warning to stderr."""

import subprocess
import sys
import types
import warnings

import tqdm.std

from tinyfn.train import progress


def test_a_quiet_run_imports_no_notebook_tqdm_and_warns_nothing():
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "from tinyfn.train import progress\n"
        "bar = progress.progress_bar(total=3, initial=0, desc='x', quiet=True)\n"
        "bar.update(3); bar.close()\n"
        "loaded = sorted(m for m in ('tqdm.auto', 'tqdm.autonotebook', 'tqdm.notebook') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


def test_a_kernel_without_ipywidgets_gets_the_console_bar_without_a_warning(monkeypatch):
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)  # no ipywidgets
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert progress._bar_class(quiet=False) is tqdm.std.tqdm
        bar = progress.progress_bar(total=2, initial=0, desc="x", quiet=False)
        bar.close()


def test_outside_a_kernel_the_bar_is_the_console_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert progress._bar_class(quiet=False) is tqdm.std.tqdm
