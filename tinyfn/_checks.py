"""Argument checks shared by the ops and layers.

Every check raises at trace time (shapes and dtypes are static under ``jit``)
with a message that names the argument, the value it got and what it expected.
"""

from __future__ import annotations

import operator

import jax.numpy as jnp
import numpy as np


def _pre(op: str | None) -> str:
    """The message prefix: ``"conv2d: "`` for ``op="conv2d"``, nothing without an op."""
    return f"{op}: " if op else ""


def int_pair(name: str, value, *, minimum: int = 0, op: str | None = None) -> tuple[int, int]:
    """``value`` as a pair of ints ``>= minimum``; an int ``k`` means ``(k, k)``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_pre(op)}{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{_pre(op)}{name} must be an int or a pair of ints, got {value!r} (length {len(value)})")
        items = tuple(value)
    else:
        items = (value, value)
    try:
        pair = tuple(operator.index(v) for v in items)
    except TypeError:
        raise TypeError(f"{_pre(op)}{name} must be an int or a pair of ints, got {value!r}") from None
    if min(pair) < minimum:
        raise ValueError(f"{_pre(op)}{name} must be >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


def positive_int(name: str, value, *, op: str | None = None) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_pre(op)}{name} must be a positive int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{_pre(op)}{name} must be a positive int, got {value!r}") from None
    if v < 1:
        raise ValueError(f"{_pre(op)}{name} must be a positive int, got {value!r}")
    return v


def float_array(name: str, x, *, ndim: int | None = None, layout: str = "", empty_batch: bool = True, op: str | None = None):
    """``x`` as a jax array of a floating dtype, optionally of rank ``ndim``.

    No dimension may be zero, except the first (the batch) when ``empty_batch``.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{_pre(op)}{name} must be an array, got {x!r}")
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{_pre(op)}{name} must be an array, got {type(x).__name__} ({exc})") from None
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{_pre(op)}{name} must have a floating dtype, got {x.dtype} (convert with .astype(jnp.float32))")
    if ndim is not None and x.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{_pre(op)}{name} must have rank {ndim}{hint}, got shape {tuple(x.shape)}")
    if 0 in x.shape[1 if empty_batch else 0 :]:
        which = "only the first (batch) dimension may be 0" if empty_batch else "every dimension must be at least 1"
        raise ValueError(f"{_pre(op)}{name} has shape {tuple(x.shape)}: {which}")
    return jnp.asarray(x)


def same_dtype(op: str, **arrays) -> None:
    """All given arrays (``None`` skipped) share one dtype, as PyTorch requires."""
    named = [(k, a) for k, a in arrays.items() if a is not None]
    first_name, first = named[0]
    for name, a in named[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; "
                "expected one floating dtype for all arrays"
            )


def rate(name: str, value, *, op: str | None = None) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{_pre(op)}{name} must be a float in [0, 1], got {value!r}") from None
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"{_pre(op)}{name} must be a float in [0, 1] (the probability of dropping), got {value!r}")
    return r


def window_geometry(op: str, in_hw, window, stride, padding, output_padding=None, *, name: str = "kernel_size") -> None:
    """A sliding window's geometry is valid, for convolution and pooling and (with ``output_padding``) for
    transposed convolution. ``in_hw`` may be ``None`` to check only what does not depend on the input.

    Convolution/pooling: ``window <= size + 2*padding`` on each axis. Transposed convolution:
    ``output_padding < stride`` and the output ``(size - 1) stride - 2 padding + window + output_padding >= 1``.
    """
    if output_padding is not None and any(o >= s for o, s in zip(output_padding, stride)):
        raise ValueError(f"{op}: output_padding {tuple(output_padding)} must be smaller than stride {tuple(stride)} in each dimension")
    if in_hw is None:
        return
    if output_padding is None:
        for n, k, p, axis in zip(in_hw, window, padding, ("height", "width")):
            if k > n + 2 * p:
                raise ValueError(
                    f"{op}: {name} {tuple(window)} is larger than the padded input "
                    f"({axis} {n} + 2*{p} = {n + 2 * p}); expected {name} <= input + 2*padding"
                )
        return
    out_hw = tuple((n - 1) * s - 2 * p + k + o for n, k, s, p, o in zip(in_hw, window, stride, padding, output_padding))
    if min(out_hw) < 1:
        raise ValueError(
            f"{op}: output size {out_hw} is not positive for input {tuple(in_hw)}, {name} {tuple(window)}, "
            f"stride {tuple(stride)}, padding {tuple(padding)}; expected a smaller padding"
        )
