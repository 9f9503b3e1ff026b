"""Argument checks shared by the ops and layers.

Every check raises at trace time (shapes and dtypes are static under ``jit``)
with a message that names the argument, the value it got and what it expected.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import jax
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


def float_array(
    name: str, x, *, ndim: int | None = None, layout: str = "", empty_batch: bool = True, op: str | None = None
):
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
        raise TypeError(
            f"{_pre(op)}{name} must have a floating dtype, got {x.dtype} (convert with .astype(jnp.float32))"
        )
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
        raise ValueError(
            f"{op}: output_padding {tuple(output_padding)} must be smaller than stride {tuple(stride)} in each "
            "dimension"
        )
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


# ----------------------------------------------------------------------------- axes


def axis(name: str, value, x, *, op: str | None = None) -> int:
    """``value`` as a non-negative axis of ``x`` whose length is not zero (``-1`` means the last)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_pre(op)}{name} must be an int, got {value!r}")
    value = int(value)
    if not -x.ndim <= value < x.ndim:
        raise ValueError(
            f"{_pre(op)}{name} must be an int in [-{x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {value!r}"
        )
    if x.shape[value] == 0:
        raise ValueError(
            f"{_pre(op)}{name} {value} of x (shape {tuple(x.shape)}) is empty: normalising over no values is undefined"
        )
    return value % x.ndim


def layer_axis(name: str, value, *, op: str | None = None) -> int:
    """An axis given to a layer constructor: an int (its range is checked against ``input_shape`` by
    ``axis_of_shape``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_pre(op)}{name} must be an int, got {value!r}")
    return int(value)


def axis_of_shape(name: str, value: int, shape: tuple, *, op: str | None = None) -> tuple:
    """``shape`` unchanged if ``value`` indexes a non-empty entry of it."""
    if not -len(shape) <= value < len(shape):
        raise ValueError(f"{_pre(op)}{name} {value} is out of range for input_shape {shape}")
    if shape[value] == 0:
        raise ValueError(f"{_pre(op)}{name} {value} of input_shape {shape} is empty")
    return shape


# ----------------------------------------------------------------------------- input shapes of layers


def _is_int(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_))


def input_shape(value, *, ndim: int | None = None, layout: str = "", op: str | None = None) -> tuple:
    """A layer's ``input_shape``: a batch entry (``None`` or an int >= 0), then positive ints; ``ndim`` entries if
    given."""
    try:
        shape = tuple(value)
    except TypeError:
        raise TypeError(f"{_pre(op)}input_shape must be a tuple of ints, got {value!r}") from None
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{_pre(op)}input_shape must have {ndim} entries {layout}, got {shape}".replace("  ", " "))
    if not shape:
        raise ValueError(f"{_pre(op)}input_shape must have a batch entry, got {shape}")
    batch, rest = shape[0], shape[1:]
    if not (batch is None or (_is_int(batch) and batch >= 0)):
        raise ValueError(f"{_pre(op)}the batch entry of input_shape must be None or an int >= 0, got {shape}")
    if not all(_is_int(d) and d >= 1 for d in rest):
        raise ValueError(f"{_pre(op)}input_shape must hold positive ints after the batch entry, got {shape}")
    return (batch if batch is None else int(batch), *(int(d) for d in rest))


def input_shapes(
    value, *, n: int | None = None, each: str = "one per branch", flat: bool = True, op: str | None = None
) -> tuple:
    """The ``input_shape`` of a layer that takes a tuple of arrays: a tuple of shapes (``n`` of them if given).

    With ``flat`` every entry is checked as ``input_shape``; without, an entry may itself be a tuple of
    shapes (a child that takes a tuple), which that child checks.
    """
    count = f"{n} shapes" if n is not None else "shapes"
    ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(isinstance(s, (tuple, list)) for s in value)
    if not ok or (n is not None and len(value) != n):
        raise ValueError(f"{_pre(op)}input_shape must be a tuple of {count}, {each}, got {value!r}")
    return tuple(input_shape(s, op=op) if flat else tuple(s) for s in value)


_IMAGE_CHANNELS = (1, 2, 3, 4)  # grey, grey + alpha, RGB, RGBA


def looks_channels_last(shape: tuple, window: tuple[int, int]) -> bool:
    """Whether an ``(N, C, H, W)`` shape read with a ``window`` is more plausibly ``(N, H, W, C)``.

    True when the last entry is a typical image channel count (1 to 4) smaller
    than both other entries, and either those two are equal (a square image: the
    common case) or the window is wider than that last entry (only the padding
    would let the window fit, which is no sensible reading of a real width).
    A genuine ``(N, C, C, w)`` input with ``w <= 4`` is refused too: a rare shape,
    and the message says what was assumed.
    """
    _, c, h, w = shape
    return w in _IMAGE_CHANNELS and w < c and w < h and (c == h or w < window[1])


def not_channels_last(shape: tuple, window, *, op: str | None = None) -> tuple:
    """``shape`` unchanged, unless it looks channels-last (see ``looks_channels_last``): then a ``ValueError``."""
    if looks_channels_last(shape, window):
        n, c, h, w = shape
        raise ValueError(
            f"{_pre(op)}input_shape {shape} looks channels-last (N, H, W, C); tinyfn expects (N, C, H, W): "
            f"move the channels first (x.transpose(0, 3, 1, 2)) and pass input_shape {(n, w, c, h)}"
        )
    return shape


# ----------------------------------------------------------------------------- params trees


def _leaf_spec(leaf):
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        try:
            a = np.asarray(leaf)
        except Exception:  # noqa: BLE001 - any unconvertible leaf is reported as such
            return None, None
        shape, dtype = a.shape, a.dtype
    return tuple(shape), dtype


def _kind(dtype) -> str:
    if jnp.issubdtype(dtype, jnp.floating):
        return "floating"
    if jnp.issubdtype(dtype, jnp.integer):
        return "integer"
    return str(dtype)


def _describe(tree) -> str:
    if isinstance(tree, dict):
        return f"a dict with keys {sorted(map(str, tree))}" if tree else "an empty dict"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of length {len(tree)}"
    if hasattr(tree, "shape"):
        return f"an array of shape {tuple(tree.shape)}"
    return f"{type(tree).__name__} {tree!r}"


def params_match(params, expected, *, path: str = "params", op: str | None = None, where=None) -> None:
    """Check a params tree against ``expected`` (what ``init`` makes: arrays or ``ShapeDtypeStruct``s).

    Dicts must have exactly the expected keys, tuples/lists the expected length,
    and each leaf the expected shape and the same kind of dtype (a floating entry
    may be of any floating precision: a whole model cast to float64 is fine, and
    the ops check that x and the params agree). A part that is expected empty
    accepts any empty tree (``{}``, ``()``, ``None``). ``where(path)`` may return
    a note naming the layer that owns ``path``. Raises naming the first wrong entry.
    """
    note = lambda p: f" ({where(p)})" if where is not None and where(p) else ""  # noqa: E731

    if not jax.tree_util.tree_leaves(expected):
        if jax.tree_util.tree_leaves(params):
            none = f"the layer has no {path.split('[')[0]}"
            raise ValueError(f"{_pre(op)}{path}{note(path)} must be empty ({none}), got {_describe(params)}")
        return
    if isinstance(expected, dict):
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{_pre(op)}{path}{note(path)} must be a dict with keys {sorted(expected)} (as init makes), got "
                f"{_describe(params)}"
            )
        missing = [k for k in sorted(expected) if k not in params]
        extra = [k for k in params if k not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {', '.join(repr(k) for k in missing)}")
            if extra:
                parts.append(f"has unexpected {', '.join(repr(k) for k in extra)}")
            raise ValueError(
                f"{_pre(op)}{path}{note(path)} {' and '.join(parts)}; expected keys {sorted(expected)} (as init makes)"
            )
        for k in expected:
            params_match(params[k], expected[k], path=f"{path}[{k!r}]", op=op, where=where)
        return
    if isinstance(expected, (tuple, list)):
        if not isinstance(params, (tuple, list)) or len(params) != len(expected):
            raise ValueError(
                f"{_pre(op)}{path}{note(path)} must be a tuple of length {len(expected)} (as init makes), got "
                f"{_describe(params)}"
            )
        for i, (p, e) in enumerate(zip(params, expected)):
            params_match(p, e, path=f"{path}[{i}]", op=op, where=where)
        return
    shape, dtype = _leaf_spec(params)
    want_shape, want_dtype = tuple(expected.shape), expected.dtype
    if shape is None:
        raise TypeError(f"{_pre(op)}{path}{note(path)} must be an array of shape {want_shape}, got {_describe(params)}")
    if shape != want_shape:
        raise ValueError(
            f"{_pre(op)}{path}{note(path)} has shape {shape}, expected {want_shape} (as init makes for this input)"
        )
    if _kind(dtype) != _kind(want_dtype):
        raise TypeError(
            f"{_pre(op)}{path}{note(path)} has dtype {dtype}, expected a {_kind(want_dtype)} dtype (init makes "
            f"{want_dtype})"
        )


def shape_tree(x) -> tuple:
    """The shape of an array as a tuple of ints; of a tuple or list of arrays, the tuple of their shapes (nested).

    It is the ``input_shape`` a layer's ``init`` takes for the input ``x``. Raises ``TypeError`` or
    ``ValueError`` for anything that is no array.
    """
    if isinstance(x, (tuple, list)):
        return tuple(shape_tree(v) for v in x)
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"not an array: {x!r}")
    shape = getattr(x, "shape", None)
    return tuple(int(d) for d in (np.shape(x) if shape is None else shape))
