"""The same network and SGD step in each peer implementation, built from a tinyfn model.

Every peer reads the architecture from the children of a tinyfn ``serial`` model
(``Conv2D``, ``ReLU``, ``MaxPool2D``, ``Flatten``, ``Linear``) and starts from
the same parameters, so all of them compute the same step:

* ``jax_autodiff``: XLA's own convolution (``lax.conv_general_dilated``, NCHW),
  ``reduce_window`` max-pooling and ``jax.grad``, jitted;
* ``torch_eager``: ``nn.Conv2d``/``nn.MaxPool2d``/``nn.Linear`` with ``optim.SGD``, NCHW;
* ``torch_channels_last``: the same net, weights and SGD step with the net and the batch in
  ``torch.channels_last`` memory format (NHWC in memory, NCHW to the code);
* ``numpy_im2col``: the from-scratch style, im2col + one GEMM per conv with the
  backward written by hand (col2im by shifted adds, a max mask for pooling);
* ``tinyfn_matrix``: tinyfn with each convolution computed as ``Y* = W* X*``
  through the dense unrolled-filter matrix (``tinyfn.layers.conv2d_matrix``).

A peer is a function ``make(model, params, x, y, lr, device) -> run`` where
``run()`` performs one step, waits for it to finish and returns the loss.
"""

from __future__ import annotations

import inspect
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tinyfn import losses, models, train
from tinyfn.layers import Conv2D, Flatten, Layer, Linear, MaxPool2D, ReLU, conv2d_matrix, serial
from tinyfn.layers.conv_matrix import MAX_ENTRIES
from tinyfn.train import parallel

# ----------------------------------------------------------------------------- models


def supports_compute_dtype() -> bool:
    """Whether this tinyfn's ``Conv2D`` and ``Linear`` take ``compute_dtype=`` (mixed precision)."""
    return all("compute_dtype" in inspect.signature(layer).parameters for layer in (Conv2D, Linear))


def _precision(compute_dtype):
    if compute_dtype is None:
        return {}
    if not supports_compute_dtype():
        raise NotImplementedError("this tinyfn's Conv2D/Linear take no compute_dtype")
    return {"compute_dtype": compute_dtype}


def lenet5(num_classes: int = 10, compute_dtype=None):
    """``tinyfn.models.lenet5``; with ``compute_dtype``, the same layers with their products in that dtype."""
    if compute_dtype is None:
        return models.lenet5(num_classes)
    if "compute_dtype" in inspect.signature(models.lenet5).parameters:
        return models.lenet5(num_classes, compute_dtype=compute_dtype)
    kw = _precision(compute_dtype)
    return serial(
        Conv2D(6, 5, padding=2, **kw),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 5, **kw),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Linear(120, **kw),
        ReLU(),
        Linear(84, **kw),
        ReLU(),
        Linear(num_classes, **kw),
    )


def wide_cnn(num_classes: int = 10, compute_dtype=None):
    """``tinyfn.models.wide_cnn`` without its dropout (which the peers do not implement):
    conv(32, 3×3, pad 1) - relu - pool 2 - conv(64, 3×3, pad 1) - relu - pool 2 - linear(128) - relu - linear(10),
    where the matrix products dominate the cost; with ``compute_dtype``, the products run in that dtype."""
    kw = _precision(compute_dtype)
    return serial(
        Conv2D(32, 3, padding=1, **kw),
        ReLU(),
        MaxPool2D(2),
        Conv2D(64, 3, padding=1, **kw),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Linear(128, **kw),
        ReLU(),
        Linear(num_classes, **kw),
    )


MODELS = {"lenet5": lenet5, "wide": wide_cnn}

# ----------------------------------------------------------------------------- architecture


def layer_specs(model, params, in_shape):
    """``[(name, config, params, input_shape, output_shape)]`` for each child of a ``serial`` model."""
    specs, shape = [], tuple(in_shape)
    for layer, p in zip(model.children, params):
        if layer.name == "Dropout":
            raise NotImplementedError("peers do not implement Dropout")
        out, _ = layer.init(jax.random.key(0), shape)
        specs.append((layer.name, dict(layer.config), p, shape, tuple(out)))
        shape = tuple(out)
    return specs


def step_flops(specs, batch):
    """Analytic FLOPs of one training step: 2 per multiply-add of every conv and linear, forward,
    weight gradient, and input gradient for all but a first layer that sits on the data."""
    macs, first = 0, True
    for name, _cfg, p, _shape, out in specs:
        if name == "Conv2D":
            k, c, kh, kw = p["w"].shape
            m = k * c * kh * kw * out[2] * out[3]
        elif name == "Linear":
            m = p["w"].shape[0] * p["w"].shape[1]
        else:
            continue
        macs += m * (2 if first else 3)
        first = False
    return 2 * macs * batch


def _weights(specs):
    return [(np.asarray(p["w"]), np.asarray(p["b"])) for name, _, p, _, _ in specs if name in ("Conv2D", "Linear")]


def _check_supported(specs):
    for name, cfg, p, _, _ in specs:
        if name == "MaxPool2D" and (cfg["stride"] != cfg["window"] or any(cfg["padding"])):
            raise NotImplementedError("peers support non-overlapping, unpadded max-pooling only")
        if name in ("Conv2D", "Linear") and "b" not in p:
            raise NotImplementedError("peers expect layers with a bias")
        if name not in ("Conv2D", "Linear", "ReLU", "MaxPool2D", "Flatten"):
            raise NotImplementedError(f"peers do not implement {name}")


# ----------------------------------------------------------------------------- tinyfn


def _jax_run(step, params, x, y, device):
    state = {"params": jax.tree.map(lambda a: jnp.array(a, copy=True), jax.device_put(params, device))}  # donated
    x, y = jax.device_put(x, device), jax.device_put(y, device)

    def run():
        state["params"], loss = step(state["params"], x, y)
        return float(loss)  # waits for the step

    return run


def tinyfn(model, params, x, y, lr, device, mesh=None):
    """The library's own step: ``tinyfn.train.make_train_step`` with ``sgd`` (donated buffers, the
    finite-loss guard and the batch accuracy included), exactly what ``fit`` runs; with a ``mesh``,
    data-parallel over its devices (the batch split, params replicated)."""
    optimizer = train.sgd(lr)
    step = train.make_train_step(model, losses.softmax_cross_entropy, optimizer, mesh=mesh)
    params = jax.tree.map(lambda a: jnp.array(a, copy=True), jax.device_put(params, device))
    state = {"params": params, "opt": optimizer.init(params)}
    x, y, key = jax.device_put(x, device), jax.device_put(y, device), jax.random.key(0)
    if mesh is not None:
        state = parallel.replicate(state, mesh)
        x, y = parallel.put_batch(mesh, np.asarray(x), np.asarray(y))
        key = jax.device_put(key, parallel.replicated(mesh))

    def run():
        state["params"], state["opt"], metrics = step(state["params"], state["opt"], x, y, key)
        return float(metrics["loss"])  # waits for the step

    return run


def matrix_model(model):
    """``model`` with every ``Conv2D`` computed through the dense ``W*`` (``conv2d_matrix``), autodiff backward."""

    def swap(layer):
        if layer.name != "Conv2D":
            return layer
        s, p = layer.config["stride"], layer.config["padding"]
        apply = lambda params, x, *, key=None, train=False: conv2d_matrix(
            x, params["w"], params.get("b"), stride=s, padding=p
        )  # noqa: E731
        return Layer(layer.init, apply, "Conv2DMatrix", layer.config)

    return serial(*map(swap, model.children))


def matrix_infeasible(specs):
    """Why the matrix form cannot run this model (``W*`` too large), or ``None``."""
    for name, _cfg, _p, shape, out in specs:
        if name == "Conv2D":
            entries = out[1] * out[2] * out[3] * shape[1] * shape[2] * shape[3]
            if entries > MAX_ENTRIES:
                return (
                    f"W* of {out[1:]} <- {shape[1:]} has {entries / 1e6:.0f}M entries (limit {MAX_ENTRIES / 1e6:.0f}M)"
                )
    return None


def tinyfn_matrix(model, params, x, y, lr, device):
    return tinyfn(matrix_model(model), params, x, y, lr, device)


# ----------------------------------------------------------------------------- JAX autodiff on lax


def _lax_forward(specs, weights, x):
    it = iter(weights)
    for name, cfg, *_ in specs:
        if name == "Conv2D":
            w, b = next(it)
            (ph, pw) = cfg["padding"]
            x = lax.conv_general_dilated(
                x, w, cfg["stride"], [(ph, ph), (pw, pw)], dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
            x = x + b[None, :, None, None]
        elif name == "ReLU":
            x = jnp.maximum(x, 0.0)
        elif name == "MaxPool2D":
            (kh, kw) = cfg["window"]
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, kh, kw), "VALID")
        elif name == "Flatten":
            x = x.reshape(x.shape[0], -1)
        elif name == "Linear":
            w, b = next(it)
            x = x @ w + b[None, :]
    return x


def jax_autodiff(model, params, x, y, lr, device, specs):
    _check_supported(specs)

    def loss_fn(weights, x, y):
        logits = _lax_forward(specs, weights, x)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()

    @partial(jax.jit, donate_argnums=0)
    def step(weights, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(weights, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, weights, grads), loss

    return _jax_run(step, [tuple(map(jnp.asarray, wb)) for wb in _weights(specs)], x, y, device)


# ----------------------------------------------------------------------------- PyTorch eager


def torch_eager(model, params, x, y, lr, device, specs, channels_last=False):
    """``nn.Sequential`` of the same layers, weights and ``optim.SGD``; ``channels_last``: net and batch in NHWC."""
    import torch
    from torch import nn

    _check_supported(specs)
    dev = torch.device("cuda" if device.platform == "gpu" else "cpu")
    mods, it = [], iter(_weights(specs))
    for name, cfg, _p, _shape, _out in specs:
        if name == "Conv2D":
            w, b = next(it)
            m = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=cfg["stride"], padding=cfg["padding"])
            m.weight.data, m.bias.data = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
        elif name == "Linear":
            w, b = next(it)
            m = nn.Linear(*w.shape)
            m.weight.data, m.bias.data = torch.from_numpy(w.T.copy()), torch.from_numpy(b.copy())
        else:
            m = {"ReLU": nn.ReLU, "Flatten": nn.Flatten}.get(name) or partial(nn.MaxPool2d, cfg.get("window"))
            m = m()
        mods.append(m)
    net = nn.Sequential(*mods).to(dev)
    xt, yt = torch.from_numpy(np.array(x)).to(dev), torch.from_numpy(np.array(y)).long().to(dev)
    if channels_last:
        net, xt = net.to(memory_format=torch.channels_last), xt.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=lr)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the step (and for CUDA)

    return run


# the same net, weights and step with the net and the batch in torch.channels_last memory format
torch_channels_last = partial(torch_eager, channels_last=True)


def torch_version():
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


# ----------------------------------------------------------------------------- numpy from scratch


def _im2col(xp, kh, kw, stride):
    """``(N·Ho·Wo, C·kh·kw)`` patches of an already padded ``(N, C, H, W)``."""
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    n, c, ho, wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw), (ho, wo)


class _NumpyNet:
    """The network in plain numpy: forward caches what the handwritten backward needs."""

    def __init__(self, specs, lr):
        self.specs, self.lr, self.weights = specs, lr, [tuple(a.copy() for a in wb) for wb in _weights(specs)]

    def step(self, x, y):
        caches, it = [], iter(range(len(self.weights)))
        for name, cfg, *_ in self.specs:
            if name == "Conv2D":
                i = next(it)
                w, b = self.weights[i]
                (ph, pw), (k, c, kh, kw) = cfg["padding"], w.shape
                xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
                cols, (ho, wo) = _im2col(xp, kh, kw, cfg["stride"])
                out = cols @ w.reshape(k, -1).T + b
                caches.append((i, cols, xp.shape, (ho, wo)))
                x = out.reshape(x.shape[0], ho, wo, k).transpose(0, 3, 1, 2)
            elif name == "ReLU":
                caches.append(x > 0)
                x = np.maximum(x, 0)
            elif name == "MaxPool2D":
                (kh, kw) = cfg["window"]
                n, c, h, wd = x.shape
                win = x[:, :, : h - h % kh, : wd - wd % kw].reshape(n, c, h // kh, kh, wd // kw, kw)
                out = win.max(axis=(3, 5))
                caches.append((win == out[:, :, :, None, :, None], x.shape))
                x = out
            elif name == "Flatten":
                caches.append(x.shape)
                x = x.reshape(x.shape[0], -1)
            elif name == "Linear":
                i = next(it)
                w, b = self.weights[i]
                caches.append((i, x))
                x = x @ w + b
        # softmax cross-entropy and its gradient (softmax - onehot) / N
        z = x - x.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        n = x.shape[0]
        loss = -np.log(p[np.arange(n), y] + 1e-30).mean()
        g = p
        g[np.arange(n), y] -= 1.0
        g /= n
        grads = {}
        for (name, cfg, *_), cache in zip(reversed(self.specs), reversed(caches)):
            if name == "Linear":
                i, xin = cache
                grads[i] = (xin.T @ g, g.sum(0))  # dw = xᵀ g, db = Σ g
                g = g @ self.weights[i][0].T  # dx = g wᵀ
            elif name == "Flatten":
                g = g.reshape(cache)
            elif name == "ReLU":
                g = g * cache
            elif name == "MaxPool2D":
                mask, shape = cache
                (kh, kw) = cfg["window"]
                full = np.zeros(shape, g.dtype)
                h, wd = mask.shape[2] * kh, mask.shape[4] * kw
                full[:, :, :h, :wd] = (mask * g[:, :, :, None, :, None]).reshape(shape[0], shape[1], h, wd)
                g = full
            elif name == "Conv2D":
                i, cols, xp_shape, (ho, wo) = cache
                w, _ = self.weights[i]
                k, c, kh, kw = w.shape
                gm = g.transpose(0, 2, 3, 1).reshape(-1, k)
                grads[i] = ((gm.T @ cols).reshape(w.shape), gm.sum(0))  # dW = g X*ᵀ
                if i == 0:
                    break  # no gradient needed for the data
                dcols = (gm @ w.reshape(k, -1)).reshape(g.shape[0], ho, wo, c, kh, kw)  # dX* = Wᵀ g
                dxp = np.zeros(xp_shape, g.dtype)
                (sh, sw), (ph, pw) = cfg["stride"], cfg["padding"]
                for a in range(kh):  # col2im: add each tap back at its shifted place
                    for bb in range(kw):
                        dxp[:, :, a : a + sh * ho : sh, bb : bb + sw * wo : sw] += dcols[..., a, bb].transpose(
                            0, 3, 1, 2
                        )
                g = dxp[:, :, ph : xp_shape[2] - ph, pw : xp_shape[3] - pw]
        for i, (dw, db) in grads.items():
            w, b = self.weights[i]
            w -= self.lr * dw
            b -= self.lr * db
        return loss


def numpy_im2col(model, params, x, y, lr, device, specs):
    _check_supported(specs)
    net, x, y = _NumpyNet(specs, lr), np.asarray(x), np.asarray(y)
    return lambda: float(net.step(x, y))
