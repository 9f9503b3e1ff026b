"""The configurations ``python -m tinyfn gradcheck`` checks: every op of ``tinyfn.registry.OPS``.

For each registered op, ``repeats`` random float32 configurations from its sampler, then its fixed
ones (``OpSpec.fixed``): the conv, deconv and pooling samplers draw a formulation, and the fixed
cases reach every kernel path (see ``tinyfn._builtin_ops``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from tinyfn import registry


class Case(NamedTuple):
    op: str
    config: str
    f: Callable
    args: tuple
    reference: Callable
    argnames: tuple
    argnums: tuple


def cases(seed: int = 0, repeats: int = 3, table: Sequence[registry.OpSpec] | None = None) -> Iterator[Case]:
    """``repeats`` random configurations of each registered op, then its fixed ones (float32, away from kinks)."""
    rng = np.random.default_rng(seed)
    for spec in registry.OPS if table is None else table:
        for sample in registry.samples(spec, rng, repeats):
            f, reference = spec.bind(sample)
            yield Case(spec.name, sample.config, f, sample.args, reference, spec.argnames, spec.diff_argnums)
