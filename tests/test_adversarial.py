"""Random and adversarial arguments at every public op, layer, loss and the optimizer (hypothesis).

Each call must either return a finite, correctly shaped result (for finite
input) or raise one of the documented errors, ``ValueError`` or ``TypeError``,
whose message names the offending argument. Anything else (an XLA error, an
``IndexError``, a ``ZeroDivisionError``, a hang) fails the test.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import strategies as S
from hypothesis import HealthCheck, given, settings, strategies as st

from tinyfn import layers as L, losses
from tinyfn.train import sgd

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("TINYFN_EXAMPLES", 25)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)

# A "size" is usually sensible, sometimes not.
sizes = st.one_of(st.integers(1, 5), st.sampled_from([0, -1, 2.5, None, "3", True]))
small = st.integers(0, 4)
pairs = st.one_of(sizes, st.tuples(sizes, sizes), st.tuples(small), st.tuples(small, small, small), st.just([2, 2]))
dtypes = st.sampled_from([jnp.float32, jnp.float32, jnp.float32, jnp.float16, jnp.int32, jnp.bool_, jnp.float64])
dims_0_to_6 = st.integers(0, 6)


@st.composite
def arrays(draw, ndim=None, dims=dims_0_to_6):
    """A numpy array of a random (sometimes wrong) rank, dtype and shape, sometimes not an array at all."""
    kind = draw(st.sampled_from(["array"] * 8 + ["list", "scalar", "none"]))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.sampled_from([1.0, 0, "x"]))
    rank = draw(st.one_of(st.just(ndim), st.integers(0, 5))) if ndim is not None else draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(dims, min_size=rank, max_size=rank)))
    dtype = draw(dtypes)
    a = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    if draw(st.booleans()) and a.size:
        a.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    with np.errstate(invalid="ignore", over="ignore"):
        a = a.astype(np.dtype(dtype))
    return a.tolist() if kind == "list" else a


def _finite_input(*xs):
    return all(
        isinstance(x, np.ndarray)
        and np.issubdtype(x.dtype, np.floating)
        and np.isfinite(x).all()
        and np.abs(x).max(initial=0) < 1e4
        for x in xs
    )


CALLS = {"ok": 0, "refused": 0}


def _call(f, *args, **kwargs):
    """``f``'s result, or ``None`` when it raised a documented error; any other exception propagates."""
    try:
        out = f(*args, **kwargs)
    except DOCUMENTED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        CALLS["refused"] += 1
        return None
    CALLS["ok"] += 1
    return out


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _check(out, shape, finite):
    out = np.asarray(out)
    assert out.shape == tuple(shape), (out.shape, shape)
    if finite:
        assert np.isfinite(out).all()


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


BAD_ARRAYS = ["int32", "bool", "float16", "rank-1", "rank+1", "zero-dim", "nan", "list", "none", "string"]
BAD_INTS = [0, -1, 2.5, None, "3", True, (1, 2, 3), ()]


@st.composite
def maybe_bad(draw, kind, value):
    """``value`` most of the time; otherwise one adversarial replacement of the given ``kind``."""
    if draw(st.integers(0, 9)) < 7:
        return value
    if kind == "int":
        return draw(st.sampled_from(BAD_INTS))
    how = draw(st.sampled_from(BAD_ARRAYS))
    a = np.asarray(value)
    if how in ("int32", "bool", "float16"):
        return a.astype(how)
    if how == "rank-1":
        return a[0] if a.ndim else a
    if how == "rank+1":
        return a[None]
    if how == "zero-dim":
        axis = draw(st.integers(0, max(a.ndim - 1, 0)))
        return np.take(a, [], axis=axis) if a.ndim else a
    if how == "nan":
        a = a.copy()
        if a.size:
            a.flat[0] = np.nan
        return a
    return {"list": a.tolist(), "none": None, "string": "x"}[how]


def _conv_args(data, cfg):
    """``x, w, stride, padding`` of a valid convolution ``cfg``, each possibly replaced by an adversarial value."""
    x = data.draw(maybe_bad("array", _rand(cfg["x_shape"])))
    w = data.draw(maybe_bad("array", _rand(cfg["w_shape"], 1)))
    return x, w, data.draw(maybe_bad("int", cfg["stride"])), data.draw(maybe_bad("int", cfg["padding"]))


@SETTINGS
@given(data=st.data(), n=st.integers(1, 3), i=st.integers(1, 4), o=st.integers(1, 4))
def test_linear(data, n, i, o):
    x = data.draw(maybe_bad("array", _rand((n, i))))
    w = data.draw(maybe_bad("array", _rand((i, o), 1)))
    b = data.draw(st.one_of(st.none(), maybe_bad("array", _rand((o,), 2))))
    out = _call(L.linear, x, w, b)
    if out is not None:
        _check(out, (*np.shape(x)[:-1], np.shape(w)[1]), _finite_input(x, w, *(() if b is None else (b,))))


@SETTINGS
@given(data=st.data(), cfg=S.conv_configs())
def test_conv2d(data, cfg):
    x, w, stride, padding = _conv_args(data, cfg)
    out = _call(L.conv2d, x, w, stride=stride, padding=padding)
    if out is not None:
        (sh, sw), (ph, pw) = _as_pair(stride), _as_pair(padding)
        xs, ws = np.shape(x), np.shape(w)
        ho, wo = (xs[2] + 2 * ph - ws[2]) // sh + 1, (xs[3] + 2 * pw - ws[3]) // sw + 1
        _check(out, (xs[0], ws[0], ho, wo), _finite_input(x, w))


@SETTINGS
@given(data=st.data(), cfg=S.deconv_configs())
def test_deconv2d(data, cfg):
    x, w, stride, padding = _conv_args(data, cfg)
    output_padding = data.draw(maybe_bad("int", cfg["output_padding"]))
    out = _call(L.deconv2d, x, w, stride=stride, padding=padding, output_padding=output_padding)
    if out is not None:
        (sh, sw), (ph, pw), (oh, ow) = _as_pair(stride), _as_pair(padding), _as_pair(output_padding)
        xs, ws = np.shape(x), np.shape(w)
        ho, wo = (xs[2] - 1) * sh - 2 * ph + ws[2] + oh, (xs[3] - 1) * sw - 2 * pw + ws[3] + ow
        _check(out, (xs[0], ws[1], ho, wo), _finite_input(x, w))


@SETTINGS
@given(data=st.data(), cfg=S.pool_configs())
def test_max_pool2d_and_unpool(data, cfg):
    x = data.draw(maybe_bad("array", _rand(cfg["x_shape"])))
    window, padding = data.draw(maybe_bad("int", cfg["window"])), data.draw(maybe_bad("int", cfg["padding"]))
    stride = data.draw(st.one_of(st.none(), maybe_bad("int", cfg["stride"])))
    out = _call(L.max_pool2d_with_switches, x, window, stride=stride, padding=padding)
    if out is None:
        return
    y, switches = out
    (kh, kw), (ph, pw) = _as_pair(window), _as_pair(padding)
    sh, sw = _as_pair(window if stride is None else stride)
    xs = np.shape(x)
    shape = (xs[0], xs[1], (xs[2] + 2 * ph - kh) // sh + 1, (xs[3] + 2 * pw - kw) // sw + 1)
    _check(y, shape, _finite_input(x))
    assert np.asarray(switches).shape == shape
    back = _call(L.max_unpool2d, y, switches, xs[2:])
    assert back is not None, "unpooling a max-pool's own output must work"
    _check(back, xs, _finite_input(x))


@SETTINGS
@given(data=st.data(), cfg=S.conv_configs(max_channels=2, max_kernel=3))
def test_matrix_forms(data, cfg):
    x, w, stride, padding = _conv_args(data, cfg)
    out = _call(L.conv2d_matrix, x, w, stride=stride, padding=padding)
    if out is not None:
        ref = L.conv2d(np.asarray(x), np.asarray(w), stride=stride, padding=padding)
        _check(out, ref.shape, _finite_input(x, w))
    m = _call(
        L.unrolled_filter_matrix, w, np.shape(x)[2:] if np.ndim(x) == 4 else (3, 3), stride=stride, padding=padding
    )
    if m is not None:
        assert np.asarray(m).ndim == 2


@SETTINGS
@given(y=arrays(ndim=4), switches=arrays(ndim=4), output_size=st.one_of(pairs, st.tuples(small, small, small, small)))
def test_max_unpool2d(y, switches, output_size):
    if isinstance(switches, np.ndarray) and np.issubdtype(switches.dtype, np.floating):
        switches = np.nan_to_num(switches).astype(np.int32) if np.random.default_rng(0).random() < 0.5 else switches
    out = _call(L.max_unpool2d, y, switches, output_size)
    if out is not None:
        hw = tuple(output_size)[-2:] if not isinstance(output_size, int) else (output_size, output_size)
        _check(out, (*y.shape[:2], *hw), _finite_input(y))


@SETTINGS
@given(
    x=arrays(),
    axis=st.one_of(st.integers(-6, 6), st.sampled_from([None, 1.5, "0"])),
    op=st.sampled_from(["relu", "softmax", "log_softmax", "flatten"]),
)
def test_elementwise_and_reshape(x, axis, op):
    if op in ("relu", "flatten"):
        out = _call(getattr(L, op), x)
    else:
        out = _call(getattr(L, op), x, axis=axis)
    if out is not None:
        xs = np.shape(x)
        shape = (xs[0], int(np.prod(xs[1:]))) if op == "flatten" else xs
        _check(out, shape, _finite_input(x))


@SETTINGS
@given(
    x=arrays(),
    rate=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.sampled_from([0.5, 1, "0.5", None])),
    train=st.sampled_from([True, False, 1, None]),
)
def test_dropout(x, rate, train):
    out = _call(L.dropout, jax.random.key(0), x, rate, train=train)
    if out is not None:
        _check(out, np.shape(x), _finite_input(x))


@SETTINGS
@given(
    logits=arrays(ndim=2),
    labels=st.one_of(arrays(ndim=1), st.lists(st.integers(-2, 12), max_size=4)),
    pred=arrays(),
    target=arrays(),
)
def test_losses(logits, labels, pred, target):
    if isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all():
        labels = labels.astype(np.int32) % max(
            1, getattr(logits, "shape", (0, 1))[-1] if getattr(logits, "ndim", 0) == 2 else 1
        )
    out = _call(losses.softmax_cross_entropy, logits, labels)
    if out is not None:
        ok_labels = np.all((np.asarray(labels) >= 0) & (np.asarray(labels) < logits.shape[1]))
        _check(out, (), _finite_input(logits) and ok_labels and logits.shape[0] > 0)
    out = _call(losses.mse, pred, target)
    if out is not None:
        _check(out, (), _finite_input(pred, target) and pred.size > 0)


LAYERS = {
    "Linear": lambda a: L.Linear(a),
    "Conv2D": lambda a: L.Conv2D(a, 3, padding=1),
    "Conv2D_pair": lambda a: L.Conv2D(2, a, stride=a),
    "Deconv2D": lambda a: L.Deconv2D(a, 2, stride=2),
    "MaxPool2D": lambda a: L.MaxPool2D(a),
    "Dropout": lambda a: L.Dropout(a),
    "Softmax": lambda a: L.Softmax(a),
    "LogSoftmax": lambda a: L.LogSoftmax(a),
    "ReLU": lambda a: L.ReLU(),
    "Flatten": lambda a: L.Flatten(),
    "Reshape": lambda a: L.Reshape((a, -1)),
    "Conv1D": lambda a: L.Conv1D(2, a, padding=1, dilation=2),
    "GroupNorm": lambda a: L.GroupNorm(a),
    "Upsample": lambda a: L.Upsample(a),
    "serial": lambda a: L.serial(L.Conv2D(2, a), L.ReLU(), L.Flatten(), L.Linear(3)),
}


@SETTINGS
@given(
    name=st.sampled_from(sorted(LAYERS)),
    arg=st.one_of(sizes, pairs, st.floats(-1, 2)),
    shape=st.lists(st.one_of(st.none(), st.integers(-1, 6)), min_size=0, max_size=5),
)
def test_layers_init_and_apply(name, arg, shape):
    layer = _call(LAYERS[name], arg)
    if layer is None:
        return
    shape = tuple(shape)
    got = _call(layer.init, jax.random.key(0), shape)
    if got is None:
        return
    out_shape, params = got
    n = 2 if shape and shape[0] is None else (shape[0] if shape else 2)
    x = np.random.default_rng(0).standard_normal((n, *shape[1:])).astype(np.float32)
    out = layer.apply(params, x, key=jax.random.key(1), train=True)  # init accepted the shape: apply must work
    assert out.shape == (n, *out_shape[1:]) and np.isfinite(np.asarray(out)).all()


@SETTINGS
@given(
    lr=st.one_of(st.floats(-1, 1), st.sampled_from([float("nan"), float("inf")]), st.sampled_from(["0.1", None])),
    momentum=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.just(0.9)),
    nesterov=st.sampled_from([False, True, 1]),
    weight_decay=st.one_of(st.floats(-1, 1), st.just(float("nan")), st.just(0.0)),
    grads_shape=st.sampled_from(["same", "missing", "reshaped"]),
)
def test_sgd(lr, momentum, nesterov, weight_decay, grads_shape):
    opt = _call(sgd, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if opt is None:
        return
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    grads = {"same": params, "missing": {"w": params["w"]}, "reshaped": {"w": jnp.ones((3, 2)), "b": params["b"]}}[
        grads_shape
    ]
    state = opt.init(params)
    out = _call(opt.update, grads, state, params)
    if grads_shape != "same":
        assert out is None, "mismatched grads must be refused"
        return
    new, _ = out
    chex.assert_trees_all_equal_shapes(new, params)
    chex.assert_tree_all_finite(new)


# Empty batches at every op (empty outputs or a clear error): tests/test_op_properties.py, over tinyfn.registry.OPS.


def test_zz_the_suite_reaches_both_outcomes():
    """Runs last in this module: the random arguments exercised both accepted and refused calls."""
    if CALLS["ok"] + CALLS["refused"] < 100:
        pytest.skip("run together with the property tests above")
    print(CALLS)
    assert CALLS["ok"] >= 50 and CALLS["refused"] >= 50, CALLS
