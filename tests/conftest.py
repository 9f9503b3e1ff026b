import os
import shutil
import tempfile

# The suite compiles hundreds of small programs and runs most of them once or twice: LLVM's optimisation passes
# cost more than they save here (measured in benchmarks/README.md), so the tests and the processes they start
# compile at backend optimisation level 0. XLA's HLO passes and the numerics are the same; the notebook kernels,
# which train for longer, keep the default (tests/test_notebooks.py).
NOTEBOOK_XLA_FLAGS = "--xla_force_host_platform_device_count=1"
os.environ.setdefault("XLA_FLAGS", NOTEBOOK_XLA_FLAGS + " --xla_backend_optimization_level=0")

# Many tests compile the same programs: every command-line run of a model, every example, every notebook that trains
# LeNet-5. One persistent compilation cache for the whole run, made here in the first pytest process and inherited by
# xdist's workers and every process a test starts, compiles each of them once (about 9% off the suite's time; a
# fresh, empty folder per run, removed at its end, so no run reads an older one). JAX_COMPILATION_CACHE_DIR set
# beforehand is used as it is and kept.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinyfn-tests-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # most compilations here are short
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import numpy as np
import pytest
from hypothesis import settings

# Broadcasting must be explicit in library code: implicit rank promotion is an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Locally: 8 fixed examples per property (fast, reproducible). In CI (CI=true): more examples (10, sized so that
# .ci/run stays under 15 minutes on two cores), drawn afresh each run, so successive runs cover new ground; a
# failure prints the seed (--hypothesis-seed) and the blob (@reproduce_failure) that replay it. More at will:
# HYPOTHESIS_PROFILE=thorough (100 random examples per property).
settings.register_profile("tinyfn", max_examples=8, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("thorough", max_examples=100, deadline=None, derandomize=False, print_blob=True)
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "tinyfn"))


def pytest_unconfigure(config):
    """The process that made the run's compilation cache removes it (xdist's workers have finished by then)."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_sessionstart(session):
    """In CI the PyTorch oracle is required: without torch its comparisons would turn into silent skips."""
    if IN_CI:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            pytest.exit(
                f"CI=true but the PyTorch oracle cannot be imported ({exc}); install torch (see README)", returncode=1
            )


@pytest.fixture
def rng():
    """A reproducible numpy generator, fresh per test."""
    return np.random.default_rng(1234)


@pytest.fixture
def key():
    """A reproducible JAX key, fresh per test."""
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Run the test with float64 enabled (for finite differences)."""
    with jax.enable_x64(True):
        yield
