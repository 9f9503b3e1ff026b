"""The host process is the user's: importing tinyfn tunes no allocator and switches no matplotlib backend;
``tinyfn.tune_allocator()`` is an explicit call, and the command line makes it."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Records every mallopt the process looks up through ctypes (how tinyfn reaches glibc), then runs BODY.
PROBE = textwrap.dedent(
    """
    import ctypes
    looked_up = []
    _getattr = ctypes.CDLL.__getattr__
    def _recording(self, name):
        looked_up.append(name)
        return _getattr(self, name)
    ctypes.CDLL.__getattr__ = _recording
    import matplotlib
    matplotlib.use("svg")
    before = matplotlib.get_backend()
    {body}
    print("mallopt" in looked_up, before == matplotlib.get_backend(), matplotlib.get_backend())
    """
)


def _probe(body, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("TINYFN_MALLOPT", "MPLBACKEND")}
    environ.update(env, PYTHONPATH=ROOT)
    code = PROBE.format(body=textwrap.dedent(body).strip())
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=180, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()[-1].split()


def test_importing_tinyfn_and_plotting_leave_the_allocator_and_the_backend_alone(tmp_path):
    body = f"""
    import tinyfn, tinyfn.train, tinyfn.visualize, tinyfn.data
    import numpy as np
    from matplotlib.figure import Figure
    fig = tinyfn.train.plot_history(
        {{"epoch": [1], "train_loss": [1.0], "train_accuracy": [0.5]}}, {str(tmp_path / "c.png")!r}
    )
    assert isinstance(fig, Figure)
    tinyfn.visualize.plot_filters(np.ones((2, 1, 3, 3)))
    """
    mallopt, same_backend, backend = _probe(body)
    assert mallopt == "False", "import tinyfn looked up mallopt"
    assert same_backend == "True" and backend == "svg"
    assert (tmp_path / "c.png").stat().st_size > 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_allocator_is_an_explicit_call_that_the_command_line_makes():
    body = """
    import tinyfn
    from tinyfn._malloc import allocator_tuned
    assert not allocator_tuned()
    from tinyfn.cli import main
    try:
        main(["--version"])
    except SystemExit:
        pass
    assert allocator_tuned()
    """
    assert _probe(body)[0] == "True"
    body = """
    import tinyfn
    assert tinyfn.tune_allocator() is False  # opted out by the environment
    """
    assert _probe(body, TINYFN_MALLOPT="0")[0] == "False"


def test_the_allocator_tuning_has_one_name():
    import tinyfn
    import tinyfn.train

    assert tinyfn.tune_allocator is tinyfn._malloc.tune_allocator
    assert not hasattr(tinyfn.train, "keep_freed_memory")  # the name deprecated before 0.1.0 is gone


def test_the_im2col_chunk_limit_doubles_once_the_allocator_is_tuned_and_never_passes_its_mmap_threshold(
    monkeypatch,
):
    import jax
    import jax.numpy as jnp

    from tinyfn import _malloc
    from tinyfn.layers import conv2d, kernels

    # LeNet-5's first conv at batch 512: X* is 25 x 512·28·28 floats, 40 MB, between the two limits
    x = jax.ShapeDtypeStruct((512, 1, 28, 28), jnp.float32)
    w = jax.ShapeDtypeStruct((6, 1, 5, 5), jnp.float32)

    def forward_path():
        with kernels.record_paths() as paths:
            jax.make_jaxpr(lambda x, w: conv2d(x, w, padding=2, formulation="im2col"))(x, w)
        return [path for _, product, path in paths if product == "W X*"]

    limits = {}
    for threshold in (None, 256 << 20, 16 << 20):  # glibc's own; tune_allocator()'s; a threshold below 32 MiB
        monkeypatch.setitem(_malloc._state, "mmap_threshold", threshold)
        limits[threshold] = (kernels.default_chunk_bytes(), forward_path())
    assert limits[None] == (32 << 20, ["im2col-chunked"])
    assert limits[256 << 20] == (64 << 20, ["im2col"])
    assert limits[16 << 20] == (32 << 20, ["im2col-chunked"])  # never below glibc's own 32 MiB either
    monkeypatch.setitem(_malloc._state, "mmap_threshold", 256 << 20)
    with kernels.record_paths() as paths:  # an explicit chunk_bytes still wins
        jax.make_jaxpr(lambda x, w: conv2d(x, w, padding=2, formulation="im2col", chunk_bytes=32 << 20))(x, w)
    assert [path for _, product, path in paths if product == "W X*"] == ["im2col-chunked"]
