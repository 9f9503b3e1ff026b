"""Verify handwritten gradients: against autodiff of a reference and against finite differences.

For ``y = f(*args)`` and a random cotangent ``v`` shaped like ``y``, the
vector-Jacobian product ``vᵀ ∂f/∂args`` is the gradient of the scalar
``φ(args) = <f(args), v>``. ``check_vjp`` computes it three ways:

1. ``jax.vjp(f)``: the rule under test (for a ``custom_vjp`` function, the handwritten one);
2. ``jax.vjp(reference)``: JAX's autodiff of an independent implementation, same dtype;
3. two-sided finite differences ``(φ(x + ε e_i) - φ(x - ε e_i)) / 2ε``, in float64.

Every comparison (forward values and gradients alike) must pass two criteria: normwise,
``max|a - b| <= atol + rtol · max|b|``, and element-wise (as ``torch.autograd.gradcheck``),
``|a - b| <= atol + rtol · |b|`` for every entry, which catches a rule wrong only on entries
much smaller than the largest.

Finite differences are only meaningful away from kinks (ReLU at 0, max-pool
ties): build inputs that keep a margin larger than ``eps`` from them.

>>> import jax.numpy as jnp
>>> from tinyfn.layers import linear
>>> from tinyfn import reference
>>> x, w, b = jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4)
>>> report = check_vjp(linear, (x, w, b), reference=reference.linear)
>>> report.passed
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinyfn._gradcheck_report import ArgReport, GradcheckReport

__all__ = ["ArgReport", "GradcheckReport", "check_vjp", "default_tolerance", "numerical_grad", "numerical_vjp"]

_TOL = {  # (rtol, atol) for comparing two gradients computed in the same dtype
    np.dtype("float64"): (1e-10, 1e-12),
    np.dtype("float32"): (1e-5, 1e-6),
    np.dtype("float16"): (1e-2, 1e-3),
}


def default_tolerance(dtype) -> tuple[float, float]:
    """``(rtol, atol)`` used for the reference comparison in ``dtype``."""
    return _TOL.get(np.dtype(dtype), (2e-2, 1e-3))


def _is_float(a) -> bool:
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)


def _to64(a):
    # numpy: a jitted call takes it as it is, no transfer kernel to compile
    return np.asarray(a, np.float64) if _is_float(a) else a


def numerical_grad(f: Callable, x, eps: float = 1e-6, *, indices=None, chunk: int = 256):
    """Two-sided finite-difference gradient of a scalar function ``f`` at ``x``, in float64.

    ``g_i = (f(x + ε e_i) - f(x - ε e_i)) / 2ε``, with truncation error
    ``O(ε²)``. All coordinates by default, or only the flat ``indices`` given
    (then the result holds those entries and NaN elsewhere). ``f`` is
    evaluated under ``vmap``, ``chunk`` perturbations at a time.
    """
    with jax.enable_x64(True):
        x64 = np.asarray(x, np.float64)
        size = x64.size
        idx = np.arange(size) if indices is None else np.asarray(indices, np.int64)

        @jax.jit
        def central(batch):
            basis = jax.nn.one_hot(batch, size, dtype=jnp.float64).reshape((-1, *x64.shape)) * eps
            fp = jax.vmap(f)(x64[None] + basis)
            fm = jax.vmap(f)(x64[None] - basis)
            return (fp - fm) / (2.0 * eps)

        out = np.full(size, np.nan)
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            padded = np.pad(part, (0, chunk - len(part)), mode="edge") if len(part) < chunk else part
            out[part] = np.asarray(central(padded))[: len(part)]
        return out.reshape(x64.shape)


def _vdot(y, v) -> jax.Array:
    leaves_y, leaves_v = jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(v)
    return sum(jnp.vdot(a, b) for a, b in zip(leaves_y, leaves_v) if _is_float(a))


def numerical_vjp(
    f: Callable, args: Sequence, cotangent, *, argnums=None, eps: float = 1e-6, max_elements: int | None = None, seed=0
):
    """Finite-difference VJP ``vᵀ ∂f/∂args[i]`` for each ``i`` in ``argnums`` (float args by default), float64.

    All checked arguments are perturbed one coordinate at a time through a
    single compiled function. With ``max_elements``, an argument larger than
    that is checked on a random subset of its coordinates (NaN elsewhere).
    """
    args = tuple(args)
    argnums = _float_argnums(args) if argnums is None else tuple(argnums)
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        args64 = tuple(_to64(a) for a in args)
        v64 = jax.tree_util.tree_map(lambda c: _to64(c) if _is_float(c) else c, cotangent)
        sizes = [args64[i].size for i in argnums]
        offsets = np.cumsum([0] + sizes)

        def phi(flat):
            full = list(args64)
            for i, lo, hi in zip(argnums, offsets[:-1], offsets[1:]):
                full[i] = flat[lo:hi].reshape(args64[i].shape)
            return _vdot(f(*full), v64)

        flat = jnp.concatenate([args64[i].reshape(-1) for i in argnums])
        picks = []
        for size, lo in zip(sizes, offsets[:-1]):
            if max_elements is not None and size > max_elements:
                picks.append(lo + np.sort(rng.choice(size, max_elements, replace=False)))
            else:
                picks.append(lo + np.arange(size))
        grad = numerical_grad(phi, flat, eps, indices=np.concatenate(picks) if picks else np.zeros(0, np.int64))
    return tuple(grad[lo:hi].reshape(args64[i].shape) for i, lo, hi in zip(argnums, offsets[:-1], offsets[1:]))


def _float_argnums(args) -> tuple[int, ...]:
    return tuple(i for i, a in enumerate(args) if _is_float(a))


@dataclasses.dataclass
class _Comparison:
    abs: float  # max |a - b|
    rel: float  # max |a - b| / max |b| (normwise)
    ok: bool  # both criteria hold
    worst: tuple | None = None  # the index where |a - b| / (atol + rtol |b|) is largest
    worst_ratio: float = 0.0  # that ratio: > 1 fails the element-wise criterion


def _compare(a, b, rtol, atol, *, noise=None) -> _Comparison:
    """Normwise ``max|a - b| <= atol + rtol·max|b|`` and element-wise ``|a - b| <= atol + noise + rtol·|b|``
    (NaNs in ``b`` skipped).

    The normwise criterion alone lets a rule be wholly wrong on entries much
    smaller than the largest; the element-wise one (as ``torch.autograd.gradcheck``)
    catches them, down to ``noise``: the rounding floor of the comparison itself
    (``16·eps(dtype)·max|b|`` by default: an entry that cancels in the sum that makes
    it keeps an absolute error of about ``eps`` times the terms summed).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = ~np.isnan(b)
    if not keep.any():
        return _Comparison(0.0, 0.0, True)
    diff = np.where(keep, np.abs(a - b), 0.0)
    diff = np.where(keep & np.isnan(a), np.inf, diff)  # a NaN where the reference is a number is an error
    err = float(np.max(diff))
    scale = float(np.max(np.abs(b[keep])))
    rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    if noise is None:
        noise = 16 * float(np.finfo(b.dtype if b.dtype.kind == "f" else np.float64).eps) * scale
    bound = atol + noise + rtol * np.abs(np.where(keep, b, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.inf))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else None
    worst_ratio = float(ratio[worst]) if worst is not None else 0.0
    normwise = bool(np.isfinite(err) and err <= atol + rtol * scale)
    worst = tuple(int(i) for i in worst) if worst is not None else None
    return _Comparison(err, rel, normwise and worst_ratio <= 1.0, worst, worst_ratio)


def _random_cotangent(y, rng):
    def one(leaf):
        if _is_float(leaf):
            return rng.standard_normal(leaf.shape).astype(leaf.dtype)
        return np.zeros(leaf.shape, jax.dtypes.float0)

    return jax.tree_util.tree_map(one, y)


def _value_and_vjp(fs, args, v, argnums):
    """``[(f(*args), vᵀ ∂f/∂args[i] for i in argnums) for f in fs]`` from one compiled call: each function's
    forward and rule (the one under test and its reference, say) compiled together.

    Only the arguments in ``argnums`` are differentiated (the others, integer
    switches or labels, are passed as they are); the gradients have ``None`` elsewhere.
    """
    leaves, tree = jax.tree_util.tree_flatten(v)
    is_float = [_is_float(leaf) for leaf in leaves]
    fixed = [leaf for leaf, fl in zip(leaves, is_float) if not fl]  # float0 zeros of integer outputs: constants

    def run(diff_args, other_args, float_v):
        it_float, it_fixed = iter(float_v), iter(fixed)
        cot = tree.unflatten([next(it_float) if fl else next(it_fixed) for fl in is_float])
        results = []
        for f in fs:

            def g(*d, f=f):
                full = list(other_args)
                for i, a in zip(argnums, d):
                    full[i] = a
                return f(*full)

            y, pullback = jax.vjp(g, *diff_args)
            results.append((y, pullback(cot)))
        return results

    others = [None if i in argnums else a for i, a in enumerate(args)]
    results = jax.jit(run)([args[i] for i in argnums], others, [leaf for leaf, fl in zip(leaves, is_float) if fl])
    out = []
    for y, grads in results:
        full = [None] * len(args)
        for i, g in zip(argnums, grads):
            full[i] = g
        out.append((y, full))
    return out


def check_vjp(
    f: Callable,
    args: Sequence,
    *,
    reference: Callable | None = None,
    argnums: Sequence[int] | None = None,
    argnames: Sequence[str] | None = None,
    cotangent=None,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    finite_differences: bool = True,
    eps: float = 1e-6,
    fd_rtol: float = 1e-6,
    fd_atol: float = 1e-9,
    max_elements: int | None = 4096,
    raise_on_failure: bool = True,
) -> GradcheckReport:
    """Check ``f``'s VJP (its handwritten rule) against autodiff of ``reference`` and finite differences.

    Args:
      f: the function under test, called as ``f(*args)``; bind static options with
        ``functools.partial`` or a lambda. Its output may be a pytree; integer
        outputs get no cotangent.
      args: the arguments: arrays or pytrees of arrays (a layer's params dict, say). Floating ones
        are checked (or those in ``argnums``); others (integer labels, switches) are passed through.
      reference: an independent implementation differentiated by JAX, compared in
        the arguments' own dtype with ``rtol``/``atol`` (``default_tolerance`` of the
        dtype when ``None``): its forward values (a rule whose forward is off passes
        every gradient comparison), then the VJPs, by the two criteria of the module docstring.
      cotangent: the ``v`` of ``vᵀ J``; standard normal (seeded) by default.
      finite_differences: also compare ``f``'s VJP, recomputed in float64, with
        central differences (``eps``, ``fd_rtol``, ``fd_atol``, both criteria); arguments with more
        than ``max_elements`` entries are checked on that many random coordinates.
      raise_on_failure: raise ``AssertionError`` naming the argument and its error.

    Returns:
      A ``GradcheckReport`` with the forward comparison and, per argument, the largest absolute and
      (normwise) relative errors and the entry farthest outside the element-wise bound.
    """
    args = tuple(args)
    if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in args):
        options = dict(cotangent=cotangent, seed=seed, rtol=rtol, atol=atol, eps=eps, fd_rtol=fd_rtol, fd_atol=fd_atol)
        options.update(finite_differences=finite_differences, max_elements=max_elements)
        return _check_vjp_pytree(f, args, reference, argnums, argnames, raise_on_failure=raise_on_failure, **options)
    argnums, names = _checked_argnums(args, argnums, argnames)
    v = _cotangent(f, reference, args, cotangent, np.random.default_rng(seed))
    (y, ours), *referenced = _value_and_vjp((f,) if reference is None else (f, reference), args, v, argnums)
    reports = [ArgReport(names[i], tuple(args[i].shape)) for i in argnums]
    ref_tol, forward = None, (None,) * 4
    if reference is not None:
        ref_tol = _reference_tolerance(args, argnums, rtol, atol)
        forward = _against_reference(reports, argnums, y, ours, referenced[0], ref_tol)
    fd_tol = (fd_rtol, fd_atol) if finite_differences else None
    if finite_differences:
        _against_finite_differences(reports, f, args, v, argnums, fd_tol, eps=eps, max_elements=max_elements, seed=seed)
    report = GradcheckReport(reports, ref_tol, fd_tol, *forward)
    if raise_on_failure and not report.passed:
        _raise(report, ref_tol, fd_tol)
    return report


def _checked_argnums(args, argnums, argnames):
    """The checked ``argnums`` (float args by default) and one name per argument."""
    argnums = _float_argnums(args) if argnums is None else tuple(argnums)
    for i in argnums:
        if not 0 <= i < len(args) or not _is_float(args[i]):
            msg = f"check_vjp: argnums entry {i} must index a floating-point argument of args (len {len(args)})"
            raise ValueError(msg)
    names = list(argnames) if argnames is not None else [f"args[{i}]" for i in range(len(args))]
    if len(names) != len(args):
        raise ValueError(f"check_vjp: argnames has {len(names)} names for {len(args)} args")
    return argnums, names


def _cotangent(f, reference, args, cotangent, rng):
    """The ``v`` of ``vᵀ J`` (random unless given), after checking that ``reference`` returns ``f``'s structure."""
    v = _random_cotangent(jax.eval_shape(f, *args), rng) if cotangent is None else cotangent
    tree = jax.tree_util.tree_structure
    if reference is not None and tree(jax.eval_shape(reference, *args)) != tree(v):
        raise ValueError("check_vjp: reference returns a different output structure than f")
    return v


def _reference_tolerance(args, argnums, rtol, atol):
    """``(rtol, atol)`` of the reference comparison; ``default_tolerance`` of the arguments' dtype where ``None``."""
    r0, a0 = default_tolerance(args[argnums[0]].dtype if argnums else jnp.float32)
    return (r0 if rtol is None else rtol, a0 if atol is None else atol)


def _against_reference(reports, argnums, y, ours, referenced, ref_tol):
    """Fill each report's comparison with the reference's VJP; return the forward comparison."""
    y_ref, theirs = referenced
    dtype = next((ours[i].dtype for i in argnums), jnp.float32)
    for rep, i in zip(reports, argnums):
        c = _compare(ours[i], theirs[i], *ref_tol, noise=_noise(theirs[i], dtype))
        rep.ref_abs, rep.ref_rel, rep.ref_ok, rep.ref_worst = c.abs, c.rel, c.ok, c.worst if not c.ok else None
    return _compare_outputs(y, y_ref, *ref_tol, dtype=dtype)


def _against_finite_differences(reports, f, args, v, argnums, fd_tol, *, eps, max_elements, seed):
    """Fill each report's comparison of ``f``'s VJP, recomputed in float64, with central differences."""
    numeric = numerical_vjp(f, args, v, argnums=argnums, eps=eps, max_elements=max_elements, seed=seed)
    with jax.enable_x64(True):
        args64 = tuple(_to64(a) for a in args)
        v64 = jax.tree_util.tree_map(lambda c: _to64(c) if _is_float(c) else c, v)
        ((y64, ours64),) = _value_and_vjp((f,), args64, v64, argnums)
        # central differences of phi = <f, v> lose about eps64 · Σ|f·v| to rounding in each evaluation, divided by 2 eps
        fd_noise = 4 * float(np.finfo(np.float64).eps) * float(_vdot_abs(y64, v64)) / eps
        for rep, i, num in zip(reports, argnums, numeric):
            c = _compare(ours64[i], num, *fd_tol, noise=fd_noise)
            rep.fd_abs, rep.fd_rel, rep.fd_ok, rep.fd_worst = c.abs, c.rel, c.ok, c.worst if not c.ok else None
            rep.fd_checked = int(np.sum(~np.isnan(num)))


def _raise(report, ref_tol, fd_tol):
    """``AssertionError`` naming the forward value or the first argument whose gradient is wrong, and by how much."""
    if report.forward_ok is False:
        raise AssertionError(
            f"forward value differs from the reference: max abs error {report.forward_abs:.3e}, "
            f"rel {report.forward_rel:.3e}, "
            f"worst at {report.forward_worst} (rtol {ref_tol[0]:g}, atol {ref_tol[1]:g})\n{report}"
        )
    bad = next(a for a in report.args if not a.passed)
    parts = []
    if bad.ref_ok is False:
        parts.append(
            f"vs autodiff of the reference: max abs error {bad.ref_abs:.3e}, rel {bad.ref_rel:.3e}, "
            f"worst entry {bad.ref_worst} (rtol {ref_tol[0]:g}, atol {ref_tol[1]:g})"
        )
    if bad.fd_ok is False:
        parts.append(
            f"vs finite differences: max abs error {bad.fd_abs:.3e}, rel {bad.fd_rel:.3e}, "
            f"worst entry {bad.fd_worst} (rtol {fd_tol[0]:g}, atol {fd_tol[1]:g})"
        )
    raise AssertionError(f"gradient of {bad.name} {bad.shape} is wrong: " + "; ".join(parts) + f"\n{report}")


def _noise(b, dtype) -> float:
    return 16 * float(np.finfo(np.dtype(dtype)).eps) * float(np.nanmax(np.abs(np.asarray(b, np.float64)), initial=0.0))


def _vdot_abs(y, v):
    leaves = zip(jax.tree_util.tree_leaves(y), jax.tree_util.tree_leaves(v))
    pairs = ((np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in leaves if _is_float(a))
    return sum(float(np.abs(a * b).sum()) for a, b in pairs)


def _compare_outputs(y, y_ref, rtol, atol, *, dtype):
    """``(abs, rel, ok, worst)`` over the float leaves of two outputs (integer leaves, as switches, must be equal)."""
    worst_abs, worst_rel, ok, where = 0.0, 0.0, True, None
    paths = jax.tree_util.tree_flatten_with_path(y)[0]
    for (path, a), b in zip(paths, jax.tree_util.tree_leaves(y_ref)):
        name = "y" + jax.tree_util.keystr(path)
        if not _is_float(a):
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                bad = tuple(int(i) for i in np.argwhere(np.asarray(a) != np.asarray(b))[0])
                return math.inf, math.inf, False, f"{name}{list(bad)} (integer outputs differ)"
            continue
        c = _compare(a, b, rtol, atol, noise=_noise(b, dtype))
        worst_abs, worst_rel = max(worst_abs, c.abs), max(worst_rel, c.rel)
        if not c.ok and ok:
            ok, where = False, f"{name}{list(c.worst) if c.worst is not None else ''}"
    return worst_abs, worst_rel, ok, where


def _check_vjp_pytree(f, args, reference, argnums, argnames, **kwargs):
    """``check_vjp`` for pytree arguments: check every leaf, named by its path (``params['w']``)."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(args)
    leaves = [leaf for _, leaf in leaves_with_paths]
    top = list(argnames) if argnames is not None else [f"args[{i}]" for i in range(len(args))]
    names = [top[p[0].idx] + jax.tree_util.keystr(p[1:]) for p, _ in leaves_with_paths]
    chosen = None
    if argnums is not None:
        chosen = [i for i, (p, leaf) in enumerate(leaves_with_paths) if p[0].idx in set(argnums) and _is_float(leaf)]
    unflat = lambda fn: lambda *ls: fn(*jax.tree_util.tree_unflatten(treedef, ls))
    reference = None if reference is None else unflat(reference)
    return check_vjp(unflat(f), leaves, reference=reference, argnums=chosen, argnames=names, **kwargs)
