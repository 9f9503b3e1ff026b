"""The registry of differentiable ops: one table that every cross-cutting check iterates.

Each entry, an ``OpSpec``, describes one op with a handwritten gradient: the op itself
(``fn``, a ``jax.custom_vjp`` rule inside), its independent form in ``tinyfn.reference``
(plain ``jax.numpy`` differentiated by JAX), a sampler of random valid arguments, which
arguments are differentiable, the dtypes it supports, and optionally a PyTorch oracle and
the layer that calls it. ``OPS`` holds them in registration order; the built-in ops of
``tinyfn.layers`` and ``tinyfn.losses`` are registered when this module is imported.

The property checks of ``tinyfn.testing`` (jit, vmap, VJP against the reference, float64
finite differences, forward-over-reverse, PyTorch, adversarial arguments, float16 and
bfloat16) take any ``OpSpec``; the test suite runs them over every entry of ``OPS``, and
``python -m tinyfn gradcheck`` prints the VJP check of each. Register an op of your own
to put it under all of them:

>>> import jax, numpy as np
>>> from tinyfn import registry, testing
>>> @jax.custom_vjp
... def cube(x):
...     return x**3
>>> cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))
>>> spec = registry.OpSpec(
...     "cube", cube, reference=lambda x: x**3, argnames=("x",), diff_argnums=(0,),
...     sample=lambda rng, dtype: registry.Sample((registry.normal(rng, (2, 3), dtype),)),
... )
>>> testing.check_vjp(spec, spec.sample(np.random.default_rng(0), np.float32)).passed
True

``register_op(spec)`` adds it to ``OPS`` (``register_op(spec, table=my_list)`` to another table).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "ALL_DTYPES",
    "OPS",
    "SKIPPED",
    "OpSpec",
    "Sample",
    "distinct",
    "get_op",
    "normal",
    "off_kink",
    "register_op",
    "samples",
    "unregistered",
]

ALL_DTYPES = ("float32", "float64", "float16", "bfloat16")


class Sample(NamedTuple):
    """One random, valid call of an op: ``fn(*args, **kwargs, **op_kwargs)`` and ``reference(*args, **kwargs)``.

    ``kwargs`` are static options of both (stride, padding, axis, ...); ``op_kwargs`` options of the op
    alone (``formulation``, ``chunk_bytes``); ``config`` a short description for tables and test output.
    """

    args: tuple
    kwargs: Mapping[str, Any] = {}
    op_kwargs: Mapping[str, Any] = {}
    config: str = ""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One differentiable op and everything the property checks need to test it.

    Attributes:
      name: the op's public name (its test id; the ``op`` column of ``python -m tinyfn gradcheck``).
      fn: the library op, with its handwritten ``custom_vjp`` rule.
      reference: the same function written from its definition and differentiated by JAX.
      sample: ``sample(rng, dtype) -> Sample``: random valid arguments in ``dtype`` (float32 or
        float64), built away from kinks and ties where the op has them.
      argnames: one name per positional argument.
      diff_argnums: the positions of the differentiable arguments (floating arrays or tuples of them).
      dtypes: the floating dtypes the op supports (names, from ``ALL_DTYPES``).
      torch: optional PyTorch oracle, called like ``reference`` with ``torch.Tensor`` arguments
        (float64; integer arrays as int64), returning the same output structure.
      layer: optional ``() -> Layer`` constructor of the layer that calls the op, with ``input_shape``.
      fixed: optional ``fixed(rng) -> iterable of Sample``: fixed float32 configurations (every
        kernel path, the configurations that once broke), run by ``python -m tinyfn gradcheck``.
      error_name: the op name its error messages start with (``name`` by default); ``None`` with
        ``checks_args=False`` for an op that does not validate its arguments.
      checks_args: whether the op refuses an integer array where it expects floats (with a message
        naming the op); ``False`` for ops that accept any array (``flatten``).
      float32_outputs: the (floating) outputs the op keeps in float32 at least whatever the inputs' dtype
        (statistics, such as ``batch_norm_with_stats``' mean and variance); the others keep the inputs' dtype.
      batch_argnums: the arguments whose leading axis is the batch: with that axis emptied, the op returns
        empty-batch outputs or refuses with a message naming the op (a loss: the mean over no examples).
      doc: one line: what the entry checks.
    """

    name: str
    fn: Callable
    reference: Callable
    sample: Callable[[np.random.Generator, Any], Sample]
    argnames: tuple[str, ...]
    diff_argnums: tuple[int, ...]
    dtypes: tuple[str, ...] = ALL_DTYPES
    torch: Callable | None = None
    layer: Callable | None = None
    input_shape: tuple | None = None
    fixed: Callable[[np.random.Generator], Iterable[Sample]] | None = None
    error_name: str | None = None
    checks_args: bool = True
    batch_argnums: tuple[int, ...] = ()
    float32_outputs: tuple[int, ...] = ()
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"OpSpec: name must be a non-empty str, got {self.name!r}")
        for field in ("fn", "reference", "sample"):
            if not callable(getattr(self, field)):
                raise TypeError(f"OpSpec {self.name!r}: {field} must be callable, got {getattr(self, field)!r}")
        if not self.diff_argnums or any(not 0 <= i < len(self.argnames) for i in self.diff_argnums):
            raise ValueError(
                f"OpSpec {self.name!r}: diff_argnums {self.diff_argnums!r} must be non-empty positions "
                f"into argnames {self.argnames!r}"
            )
        bad = [d for d in self.dtypes if d not in ALL_DTYPES]
        if bad:
            raise ValueError(f"OpSpec {self.name!r}: dtypes {bad!r} are not among {ALL_DTYPES}")

    def bind(self, sample: Sample) -> tuple[Callable, Callable]:
        """``(f, ref)``: the op and its reference with the sample's static options bound, of the arguments alone."""
        return partial(self.fn, **sample.kwargs, **sample.op_kwargs), partial(self.reference, **sample.kwargs)


OPS: list[OpSpec] = []


def register_op(spec: OpSpec, *, table: list[OpSpec] | None = None) -> OpSpec:
    """Add ``spec`` to ``table`` (``OPS`` by default); a name may be registered once."""
    table = OPS if table is None else table
    if not isinstance(spec, OpSpec):
        raise TypeError(f"register_op: spec must be an OpSpec, got {type(spec).__name__}")
    if any(s.name == spec.name for s in table):
        raise ValueError(f"register_op: an op named {spec.name!r} is already registered")
    table.append(spec)
    return spec


def get_op(name: str, table: Sequence[OpSpec] | None = None) -> OpSpec:
    """The registered spec called ``name``."""
    for spec in OPS if table is None else table:
        if spec.name == name:
            return spec
    raise KeyError(f"get_op: no op named {name!r} is registered")


def samples(spec: OpSpec, rng: np.random.Generator, repeats: int = 3) -> Iterator[Sample]:
    """``repeats`` random float32 samples of ``spec``, then its fixed configurations."""
    for _ in range(repeats):
        yield spec.sample(rng, np.float32)
    if spec.fixed is not None:
        yield from spec.fixed(rng)


# Public functions of tinyfn.layers / tinyfn.losses that are not differentiable ops with a rule of their own.
SKIPPED = {
    "conv_output_size": "shape arithmetic, no arrays",
    "deconv_output_size": "shape arithmetic, no arrays",
    "unrolled_filter_matrix": "the teaching matrix form (builds a matrix); checked against conv2d in test_conv",
    "conv2d_matrix": "the teaching matrix form of conv2d, differentiated by JAX; checked against conv2d",
    "deconv2d_matrix": "the teaching matrix form of deconv2d, differentiated by JAX; checked against deconv2d",
    "formulation": "a context manager choosing the kernels' formulation",
    "default_formulation": "the backend's formulation name",
    "serial": "a combinator of layers",
    "parameterless": "a helper that builds layers",
    "has_state": "a predicate on layers",
    "init_with_state": "initialises a layer's state",
    "apply_with_state": "applies a layer with its state",
    "branch": "a combinator of layers",
    "parallel": "a combinator of layers",
    "residual": "a combinator of layers (its sum is add_arrays)",
    "make_layer": "builds a layer around an init/apply pair",
    "make_combinator": "builds a combinator of layers",
    "multi_head_attention": (
        "linear and dot_product_attention composed (both registered); against nn.MultiheadAttention "
        "in tests/test_transformer.py"
    ),
    "attention_probabilities": "the attention weights, for looking at (JAX's autodiff, no rule of its own)",
    "summary": "prints a model's table",
    "to_spec": "architecture as data",
    "from_spec": "architecture as data",
    "register_layer": "architecture as data",
    "layer_names": "names a model's layers",
    "leaf_names": "names a model's layers",
    "named_params": "names a model's layers",
    "params_at": "names a model's layers",
    "param_mask": "names a model's layers",
}


def _public_ops(module) -> list[str]:
    """Lower-case public functions of ``module``: candidate ops (CamelCase names are layers, constants are upper).

    The public names are ``__all__`` where the module has one, else the names it binds without a leading
    underscore (a package face re-exports each name once, ``from .conv import conv2d as conv2d``).
    """
    names = []
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in public:
        obj = getattr(module, name)
        if name[:1].islower() and callable(obj) and not isinstance(obj, (type, types.ModuleType)):
            names.append(name)
    return names


def unregistered(
    table: Sequence[OpSpec] | None = None, modules=None, skipped: Mapping[str, str] | None = None
) -> list[str]:
    """Public ops of ``modules`` (``tinyfn.layers`` and ``tinyfn.losses``) neither in ``table`` nor in ``skipped``."""
    if modules is None:
        from tinyfn import layers, losses

        modules = (layers, losses)
    table = OPS if table is None else table
    skipped = SKIPPED if skipped is None else skipped
    fns = {id(s.fn) for s in table}
    names = {s.name for s in table}
    missing = []
    for module in modules:
        for name in _public_ops(module):
            if name in skipped or name in names or id(getattr(module, name)) in fns:
                continue
            missing.append(f"{module.__name__}.{name}")
    return missing


# ---- argument builders, away from kinks and ties ----


def normal(rng, shape, dtype=np.float32):
    """Standard normal values of ``shape`` in ``dtype``."""
    return jnp.asarray(rng.standard_normal(shape), dtype)


def distinct(rng, shape, gap=0.05, dtype=np.float32):
    """Values that are pairwise at least ``gap`` apart (no max-pool ties within ``eps``), shuffled."""
    size = int(np.prod(shape))
    return jnp.asarray((rng.permutation(size) - size / 2) * gap, dtype).reshape(shape)


def off_kink(rng, shape, margin=0.1, dtype=np.float32):
    """Normal values pushed at least ``margin`` away from 0 (no ReLU kink within ``eps``)."""
    z = rng.standard_normal(shape)
    return jnp.asarray(np.sign(z) * (margin + np.abs(z)), dtype)
