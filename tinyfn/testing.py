"""Property checks of a registered op (``tinyfn.registry.OpSpec``): each a plain function of ``(spec, sample)``.

Each check raises ``AssertionError`` naming the op, its configuration and the error, and returns
nothing when the property holds; the test suite runs every check over every entry of
``tinyfn.registry.OPS``, so an op registered there is under all of them:

- ``check_jit``: the op and its gradient equal the reference's, with and without ``jax.jit``;
- ``check_vmap``: ``jax.vmap`` of the op and of its VJP equals a loop over the batch;
- ``check_vjp``: the handwritten VJP equals autodiff of the reference (float32) and central
  finite differences (float64), as ``tinyfn.gradcheck.check_vjp``;
- ``check_hessian``: ``jax.hessian`` and ``jax.jacfwd(jax.grad(...))`` (forward over the
  handwritten reverse rule) equal the reference's, in float64;
- ``check_torch``: forward and VJP equal PyTorch's, in float64 (where the spec has an oracle);
- ``check_rejects_integer_input``, ``check_non_finite_input``, ``check_empty_batch``: adversarial arguments;
- ``check_dtype``: the op run in float16, bfloat16, float32 or float64, forward and VJP against the
  reference in float64 on the same (rounded) inputs, within ``DTYPE_TOLERANCE[dtype]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from tinyfn import gradcheck
from tinyfn.gradcheck import _compare
from tinyfn.registry import OpSpec, Sample

__all__ = [
    "DTYPE_TOLERANCE",
    "cast_sample",
    "check_dtype",
    "check_hessian",
    "check_jit",
    "check_non_finite_input",
    "check_empty_batch",
    "check_rejects_integer_input",
    "check_torch",
    "check_vjp",
    "check_vmap",
]

# The op in each dtype against the reference on the same inputs (rounded to the dtype), computed in float64 for a
# float64 op and in float32 otherwise (dropout's mask depends on the float width, so it is not compared across widths):
# (rtol, atol), as ``gradcheck``'s two criteria (normwise ``max|a - b| <= atol + rtol max|b|`` and
# element-wise ``|a - b| <= atol + noise + rtol |b|``, ``noise = 16 eps(dtype) max|b|``), for the
# forward values and the VJP alike. float16 keeps 11 significant bits (eps 9.8e-4), bfloat16 8 (eps 7.8e-3):
# a sum of a few dozen rounded terms is off by some eps relative to its largest term.
DTYPE_TOLERANCE = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    "float16": (1e-2, 1e-3),
    "bfloat16": (5e-2, 1e-2),
}


def _fail(spec: OpSpec, sample: Sample, what: str):
    raise AssertionError(f"{spec.name} [{sample.config}]: {what}")


def _is_float(a) -> bool:
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)


def _float_leaves(tree):
    return [leaf for leaf in jax.tree_util.tree_leaves(tree) if _is_float(leaf)]


def _split(spec, args):
    """``(diff, rebuild)``: the differentiable arguments, and ``rebuild(diff) -> args``."""
    diff = tuple(args[i] for i in spec.diff_argnums)

    def rebuild(d):
        full = list(args)
        for i, a in zip(spec.diff_argnums, d):
            full[i] = a
        return tuple(full)

    return diff, rebuild


def _close(spec, sample, what, a, b, rtol, atol):
    for i, (x, y) in enumerate(zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))):
        if not _is_float(x):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                _fail(spec, sample, f"{what}: integer output {i} differs")
            continue
        c = _compare(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol, atol)
        if not c.ok:
            _fail(spec, sample, f"{what}: leaf {i} max abs error {c.abs:.3e} (rel {c.rel:.3e}) at {c.worst}")


def _sin_loss(f, rebuild):
    """``d -> Σ sin(f(*args))`` over the float outputs: nonzero second derivatives, even of a linear op."""

    def loss(*d):
        return sum(jnp.sum(jnp.sin(o)) for o in _float_leaves(f(*rebuild(d))))

    return loss


def check_jit(spec: OpSpec, sample: Sample, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """The op and the gradient of ``Σ sin(op)`` equal the reference's, eagerly and under ``jax.jit``."""
    f, ref = spec.bind(sample)
    diff, rebuild = _split(spec, sample.args)
    argnums = tuple(range(len(diff)))

    def value_and_grad(fn):
        return lambda *d: (fn(*rebuild(d)), jax.grad(_sin_loss(fn, rebuild), argnums=argnums)(*d))

    expected = jax.jit(value_and_grad(ref))(*diff)
    for variant, got in (("eager", value_and_grad(f)(*diff)), ("jit", jax.jit(value_and_grad(f))(*diff))):
        _close(spec, sample, f"forward ({variant})", got[0], expected[0], rtol, atol)
        _close(spec, sample, f"gradient ({variant})", got[1], expected[1], rtol * 10, atol * 10)


def _other(leaf, seed):
    """``leaf``'s values in another order: the same kinks, ties and margins, a different point."""
    flat = np.asarray(leaf).reshape(-1)
    return jnp.asarray(flat[np.random.default_rng(seed).permutation(flat.size)].reshape(leaf.shape), leaf.dtype)


def check_vmap(spec: OpSpec, sample: Sample, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """``jax.vmap`` over a batch of two argument sets equals a loop, for the op and for its VJP."""
    f, _ = spec.bind(sample)
    diff, rebuild = _split(spec, sample.args)
    second = jax.tree_util.tree_map(lambda a: _other(a, 1) if _is_float(a) else a, diff)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), diff, second)
    g = lambda *d: f(*rebuild(d))
    y0 = g(*diff)
    cot = jax.tree_util.tree_map(lambda o: jnp.cos(o) if _is_float(o) else np.zeros(o.shape, jax.dtypes.float0), y0)

    def value_and_vjp(*d):
        y, pullback = jax.vjp(g, *d)
        return y, pullback(cot)

    batched = jax.jit(jax.vmap(value_and_vjp))(*stacked)
    one = jax.jit(value_and_vjp)
    looped = [one(*d) for d in (diff, second)]
    expected = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), *looped)
    _close(spec, sample, "vmap vs a loop", batched, expected, rtol, atol)


def check_vjp(spec: OpSpec, sample: Sample, *, finite_differences: bool = True, seed: int = 0, **kwargs):
    """``gradcheck.check_vjp`` of the op: the VJP against the reference's autodiff and float64 central differences.

    Returns the ``GradcheckReport``; raises (naming the op) unless ``raise_on_failure=False`` is passed.
    """
    f, ref = spec.bind(sample)
    raise_on_failure = kwargs.pop("raise_on_failure", True)
    report = gradcheck.check_vjp(
        f,
        sample.args,
        reference=ref,
        argnums=spec.diff_argnums,
        argnames=spec.argnames,
        seed=seed,
        finite_differences=finite_differences,
        raise_on_failure=False,
        **kwargs,
    )
    if raise_on_failure and not report.passed:
        _fail(spec, sample, f"VJP check failed\n{report}")
    return report


def check_hessian(spec: OpSpec, seed: int = 0, coordinates: int = 24) -> None:
    """Forward over reverse: ``jax.hessian`` and ``jax.jacfwd(jax.grad(.))`` of ``Σ sin(op)`` equal the
    reference's, in float64, w.r.t. ``coordinates`` random entries of the differentiable arguments."""
    with jax.enable_x64(True):
        sample = spec.sample(np.random.default_rng(seed), np.float64)
        f, ref = spec.bind(sample)
        diff, rebuild = _split(spec, sample.args)
        flat, unravel = ravel_pytree(diff)
        idx = np.sort(np.random.default_rng(seed).choice(flat.size, min(coordinates, flat.size), replace=False))

        def scalar(fn):
            loss = _sin_loss(fn, rebuild)
            return lambda sub: loss(*unravel(flat.at[idx].set(sub)))

        every = jax.jit(
            lambda at: (jax.hessian(scalar(f))(at), jax.jacfwd(jax.grad(scalar(f)))(at), jax.hessian(scalar(ref))(at))
        )
        hessian, jacfwd_grad, expected = every(flat[idx])  # one compilation for the three
    _close(spec, sample, "jax.hessian vs the reference's", hessian, expected, 1e-8, 1e-10)
    _close(spec, sample, "jax.jacfwd(jax.grad) vs the reference's", jacfwd_grad, expected, 1e-8, 1e-10)


def _to_torch(a, torch):
    if _is_float(a):
        return torch.tensor(np.asarray(a, np.float64), requires_grad=True)
    if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.integer):
        return torch.tensor(np.asarray(a, np.int64))
    return a


def check_torch(spec: OpSpec, seed: int = 0, rtol: float = 1e-10, atol: float = 1e-10, *, sample=None) -> None:
    """The op's forward values and VJP equal PyTorch's (autograd of ``spec.torch``), in float64: at a float64
    sample drawn with ``seed``, or at ``sample`` (a fixed one, say) cast to float64."""
    import torch

    with jax.enable_x64(True):
        if sample is None:
            sample = spec.sample(np.random.default_rng(seed), np.float64)
        sample = cast_sample(sample, jnp.float64)
        f, _ = spec.bind(sample)
        diff, rebuild = _split(spec, sample.args)
        y, pullback = jax.vjp(lambda *d: f(*rebuild(d)), *diff)
        rng = np.random.default_rng(seed + 1)
        cot = jax.tree_util.tree_map(
            lambda o: (
                jnp.asarray(rng.standard_normal(o.shape)) if _is_float(o) else np.zeros(o.shape, jax.dtypes.float0)
            ),
            y,
        )
        ours = pullback(cot)
    targs = jax.tree_util.tree_map(lambda a: _to_torch(a, torch), sample.args)
    ty = spec.torch(*targs, **sample.kwargs)
    _close(spec, sample, "forward vs PyTorch", y, jax.tree_util.tree_map(lambda t: t.detach().numpy(), ty), rtol, atol)
    outs = [
        (t, c) for t, c in zip(jax.tree_util.tree_leaves(ty), jax.tree_util.tree_leaves(cot)) if t.is_floating_point()
    ]
    torch.autograd.backward([t for t, _ in outs], [torch.tensor(np.asarray(c)) for _, c in outs])
    theirs = [jax.tree_util.tree_map(lambda t: t.grad.numpy(), targs[i]) for i in spec.diff_argnums]
    _close(spec, sample, "VJP vs PyTorch", ours, tuple(theirs), rtol, atol)


def _first_float(args, argnums):
    """``(i, path)`` of the first floating leaf among ``args[argnums]``, and a setter replacing it."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    offsets = np.cumsum([0] + [len(jax.tree_util.tree_leaves(a)) for a in args])
    k = next(k for i in argnums for k in range(offsets[i], offsets[i + 1]) if _is_float(leaves[k]))

    def replace(new):
        return tree.unflatten(leaves[:k] + [new] + leaves[k + 1 :])

    return leaves[k], replace


def check_rejects_integer_input(spec: OpSpec, sample: Sample) -> None:
    """An integer array where the op expects floats raises ``TypeError``/``ValueError`` naming the op and the dtype,
    eagerly and while tracing under ``jax.jit``."""
    if not spec.checks_args:
        return
    f, _ = spec.bind(sample)
    leaf, replace = _first_float(sample.args, spec.diff_argnums)
    bad = replace(jnp.asarray(np.asarray(leaf) * 3, jnp.int32))
    prefix = f"{spec.error_name or spec.name}: "
    for variant, call in (("eagerly", lambda: f(*bad)), ("under jit", lambda: jax.jit(f).lower(*bad))):
        try:
            call()
        except (TypeError, ValueError) as exc:
            if not str(exc).startswith(prefix) or "int32" not in str(exc):
                _fail(
                    spec,
                    sample,
                    f"an int32 argument was refused {variant}, but the message does not start with "
                    f"{prefix!r} and name the dtype: {exc}",
                )
            continue
        _fail(spec, sample, f"an int32 array where a float array was expected was accepted {variant}")


def check_non_finite_input(spec: OpSpec, sample: Sample) -> None:
    """NaN and inf in an input: the op and its VJP run (no crash) and give outputs of the clean shapes and dtypes."""
    f, _ = spec.bind(sample)
    diff, rebuild = _split(spec, sample.args)
    leaf, replace = _first_float(diff, range(len(diff)))
    flat = np.array(leaf, np.float64).reshape(-1)
    flat[0], flat[-1] = np.nan, (np.inf if flat.size > 1 else np.nan)
    bad = replace(jnp.asarray(flat.reshape(leaf.shape), leaf.dtype))
    g = lambda *d: f(*rebuild(d))
    clean = jax.eval_shape(g, *diff)
    y, pullback = jax.vjp(g, *bad)
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, y, clean)
    if not all(jax.tree_util.tree_leaves(same)):
        _fail(spec, sample, "non-finite input changed the output's shape or dtype")
    cot = jax.tree_util.tree_map(
        lambda o: jnp.ones_like(o) if _is_float(o) else np.zeros(o.shape, jax.dtypes.float0), y
    )
    grads = pullback(cot)
    if jax.tree_util.tree_structure(grads) != jax.tree_util.tree_structure(bad):
        _fail(spec, sample, "the VJP at non-finite input has another structure than the arguments")


def check_empty_batch(spec: OpSpec, sample: Sample) -> None:
    """With the batch axis of ``spec.batch_argnums`` emptied, the op returns outputs with an empty batch axis, or
    refuses with ``ValueError``/``TypeError`` naming the op; nothing else (an XLA error, an ``IndexError``)."""
    if not spec.batch_argnums:
        return
    f, _ = spec.bind(sample)
    args = list(sample.args)
    for i in spec.batch_argnums:
        args[i] = jax.tree_util.tree_map(lambda a: a[:0], args[i])
    prefix = f"{spec.error_name or spec.name}: "
    try:
        out = f(*args)
    except (TypeError, ValueError) as exc:
        if not str(exc).startswith(prefix):
            _fail(spec, sample, f"an empty batch was refused, but the message does not start with {prefix!r}: {exc}")
        return
    shapes = [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(out)]
    if not all(s and s[0] == 0 for s in shapes):
        _fail(spec, sample, f"an empty batch gave outputs of shapes {shapes}, expected an empty leading axis")


def cast_sample(sample: Sample, dtype) -> Sample:
    """``sample`` with every floating array argument cast to ``dtype``."""
    args = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype) if _is_float(a) else a, sample.args)
    return sample._replace(args=args)


def _value_and_vjp(fn, rebuild, cotangent_of):
    """``d -> (fn(*rebuild(d)), its VJP at cotangent_of(y))``, jitted."""

    def run(*d):
        y, pullback = jax.vjp(lambda *d: fn(*rebuild(d)), *d)
        return y, pullback(cotangent_of(y))

    return jax.jit(run)


def check_dtype(spec: OpSpec, sample: Sample, dtype: str, seed: int = 0) -> None:
    """The op in ``dtype`` (forward and VJP) against the reference on the same rounded inputs and cotangent,
    computed in float64 for a float64 op and in float32 otherwise, within ``DTYPE_TOLERANCE[dtype]``; the outputs
    and gradients keep ``dtype``."""
    rtol, atol = DTYPE_TOLERANCE[dtype]
    wide_dtype = jnp.float64 if dtype == "float64" else jnp.float32
    with jax.enable_x64(dtype == "float64"):
        low = cast_sample(sample, jnp.dtype(dtype))
        f, _ = spec.bind(low)
        diff, rebuild = _split(spec, low.args)
        rng = np.random.default_rng(seed)
        y0 = jax.eval_shape(lambda *d: f(*rebuild(d)), *diff)
        cot = jax.tree_util.tree_map(
            lambda o: (
                jnp.asarray(rng.standard_normal(o.shape), o.dtype)
                if _is_float(o)
                else np.zeros(o.shape, jax.dtypes.float0)
            ),
            y0,
        )
        y, ours = _value_and_vjp(f, rebuild, lambda y: cot)(*diff)
        wide_out = jnp.promote_types(dtype, jnp.float32)  # statistics an op keeps in float32 at least
        expected = [wide_out if i in spec.float32_outputs else jnp.dtype(dtype) for i in range(len(_float_leaves(y)))]
        expected += [jnp.dtype(dtype)] * len(_float_leaves(ours))
        if [leaf.dtype for leaf in _float_leaves((y, ours))] != expected:
            _fail(spec, sample, f"outputs or gradients in {dtype} came back as another dtype")
        wide = cast_sample(low, wide_dtype)
        _, ref = spec.bind(wide)
        diff_w, rebuild_w = _split(spec, wide.args)
        wide_cot = jax.tree_util.tree_map(lambda c: jnp.asarray(c, wide_dtype) if _is_float(c) else c, cot)
        y_ref, theirs = _value_and_vjp(ref, rebuild_w, lambda y: wide_cot)(*diff_w)
    for what, a, b in (("forward", y, y_ref), ("VJP", ours, theirs)):
        for i, (x, z) in enumerate(zip(_float_leaves(a), _float_leaves(b))):
            x64, z64 = np.asarray(x, np.float64), np.asarray(z, np.float64)
            c = _compare(
                x64, z64, rtol, atol, noise=16 * float(jnp.finfo(dtype).eps) * float(np.max(np.abs(z64), initial=0))
            )
            if not c.ok:
                error = f"leaf {i} max abs error {c.abs:.3e} (rel {c.rel:.3e}) at {c.worst}"
                _fail(spec, sample, f"{what} in {dtype}: {error}, tolerance {DTYPE_TOLERANCE[dtype]}")
