import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax
import numpy as np
import pytest
from hypothesis import settings

# Broadcasting must be explicit in library code: implicit rank promotion is an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("tinyfn", max_examples=8, deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tinyfn"))


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
