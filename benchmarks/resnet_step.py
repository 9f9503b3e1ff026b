"""Time one AdamW training step of ``tinyfn.models.resnet`` against its peers, interleaved in one process.

    python benchmarks/resnet_step.py [--batch-size 128] [--image-size 28] [--width 24] [--blocks 1,1,3]
        [--first-stride 1] [--stem-stride 2] [--steps 10] [--rounds 10]

The network defaults to ``models.resnet()``'s (the recipe's model); ``--width 20
--blocks 2`` is the one before it, ``--width 16 --blocks 2 --first-stride 2 --stem-stride 1`` the one before that.

The same network three ways, from the same initial weights: tinyfn (handwritten
rules, batch norm with its running statistics, ``tinyfn.train.adamw``, jitted);
JAX autodiff (``lax.conv_general_dilated`` in NCHW, batch norm and its running
statistics in ``jax.numpy``, ``jax.grad``, the same ``tinyfn.train.adamw``,
jitted); PyTorch eager (``nn.Conv2d``/``nn.BatchNorm2d``, ``torch.optim.AdamW``,
as many threads as cores, NCHW and channels-last). No augmentation, so the
steps compute the same thing. Each round runs ``--steps`` steps of every
implementation in turn (after a warm-up that compiles and checks that every
implementation gives the same first two losses), timing each to completion
(a step returns its loss as a Python float); the table gives median and min ms/step and images/s. The last
line, for scripts, is

    resnet tinyfn/jax-autodiff=R1 tinyfn/torch=R2

(median ms/step ratios, against PyTorch's faster layout; below 1 means tinyfn is faster).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import train_step  # the same first-losses check as the small CNNs' script
from jax import lax

import tinyfn
from tinyfn import models, train
from tinyfn.layers import init_with_state
from tinyfn.losses import softmax_cross_entropy


def parse_args(argv=None):
    import inspect

    default = {k: v.default for k, v in inspect.signature(models.resnet).parameters.items()}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--image-size", type=int, default=28, help="square inputs of this size (smaller: progressive resizing's steps)"
    )
    ap.add_argument("--width", type=int, default=default["width"])
    ap.add_argument(
        "--blocks",
        type=block_counts,
        default=default["blocks_per_stage"],
        help="basic blocks per stage: one count for every stage, or one per stage (1,1,3)",
    )
    ap.add_argument("--first-stride", type=int, default=default["first_stride"])
    ap.add_argument(
        "--stem-stride",
        type=int,
        default=default["stem_stride"],
        help="1: a 3x3 stem at full resolution; 2: a 4x4 stride-2 stem (use with --first-stride 1)",
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    return ap.parse_args(argv)


def block_counts(text):
    """``"2"`` -> ``2``, ``"1,1,3"`` -> ``(1, 1, 3)``: ``--blocks`` as ``models.resnet(blocks_per_stage=)`` takes it."""
    counts = tuple(int(c) for c in text.split(","))
    return counts[0] if len(counts) == 1 else counts


def _blocks(width, blocks=2, first_stride=2, stages=3):
    """``(in_channels, channels, stride, projected)`` of every basic block of
    ``models.resnet(width, blocks_per_stage=blocks, first_stride=...)``."""
    counts = (blocks,) * stages if isinstance(blocks, int) else tuple(blocks)
    out, cin = [], width
    for s in range(stages):
        c = width * 2**s
        for b in range(counts[s]):
            stride = (first_stride if s == 0 else 2) if b == 0 else 1
            out.append((cin, c, stride, b == 0 and (stride > 1 or s > 0)))
            cin = c
    return out


def _from_tinyfn(params, state, width, blocks, first_stride):
    """tinyfn's resnet params and state as a flat list of (conv weight, bn params, bn state) in network order."""
    convs = [(params[0]["w"], params[1], state[1])]
    for i, (_, _, _, projected) in enumerate(_blocks(width, blocks, first_stride)):
        residual = params[3 + i][0]  # serial(residual(body, shortcut), ReLU)
        rstate = state[3 + i][0]
        body, shortcut = residual["body"], residual.get("shortcut")
        convs.append((body[0]["w"], body[1], rstate["body"][1]))
        convs.append((body[3]["w"], body[4], rstate["body"][4]))
        if projected:
            convs.append((shortcut[0]["w"], shortcut[1], rstate["shortcut"][1]))
    return convs, params[-1]


def _stem(stem_stride):
    """``(kernel, stride, padding)`` of ``models.resnet``'s stem conv."""
    return (3, 1, 1) if stem_stride == 1 else (2 * stem_stride, stem_stride, stem_stride // 2)


def jax_autodiff_step(width, blocks, first_stride, optimizer, stem_stride=1):
    """A jitted AdamW step of the same network, its gradient by ``jax.grad`` of ``lax`` ops."""
    blocks = _blocks(width, blocks, first_stride)
    _, s_stride, s_pad = _stem(stem_stride)

    def conv(x, w, stride, p=None):
        p = w.shape[2] // 2 if p is None else p
        return lax.conv_general_dilated(
            x, w, (stride, stride), ((p, p), (p, p)), dimension_numbers=("NCHW", "OIHW", "NCHW")
        )

    def bn(x, p, s):
        mean = x.mean((0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean((0, 2, 3))
        m = x.size // x.shape[1]
        y = (x - mean[None, :, None, None]) * lax.rsqrt(var + 1e-5)[None, :, None, None]
        new = {
            "mean": 0.9 * s["mean"] + 0.1 * lax.stop_gradient(mean),
            "var": 0.9 * s["var"] + 0.1 * lax.stop_gradient(var) * m / (m - 1),
        }
        return y * p["gamma"][None, :, None, None] + p["beta"][None, :, None, None], new

    def forward(params, states, x):
        convs, head = params
        it, st, new = iter(convs), iter(states), []

        def cbr(h, stride, relu=True, pad=None):
            w, p = next(it)
            y, s = bn(conv(h, w, stride, pad), p, next(st))
            new.append(s)
            return jax.nn.relu(y) if relu else y

        h = cbr(x, s_stride, pad=s_pad)
        for _, _, stride, projected in blocks:
            o = cbr(cbr(h, stride), 1, relu=False)
            h = jax.nn.relu(o + (cbr(h, stride, relu=False) if projected else h))
        return h.mean((2, 3)) @ head["w"] + head["b"], new

    def loss(params, states, x, y):
        logits, new = forward(params, states, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)), new

    @jax.jit
    def step(params, states, opt_state, x, y):
        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params, states, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), new, opt_state, value

    return step


def torch_step(convs, head, width, blocks, first_stride, channels_last, stem_stride=1):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    weights = iter(convs)

    def cb(cin, c, k, stride, pad=None):
        w, p, s = next(weights)
        conv, norm = nn.Conv2d(cin, c, k, stride, k // 2 if pad is None else pad, bias=False), nn.BatchNorm2d(c)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.asarray(w)))
            norm.weight.copy_(torch.from_numpy(np.asarray(p["gamma"])))
            norm.bias.copy_(torch.from_numpy(np.asarray(p["beta"])))
        return nn.Sequential(conv, norm)

    class Block(nn.Module):
        def __init__(self, cin, c, stride, projected):
            super().__init__()
            self.a, self.b = cb(cin, c, 3, stride), cb(c, c, 3, 1)
            self.shortcut = cb(cin, c, 1, stride) if projected else None

        def forward(self, x):
            o = self.b(torch.relu(self.a(x)))
            return torch.relu(o + (self.shortcut(x) if self.shortcut is not None else x))

    stem = cb(1, width, *_stem(stem_stride))
    fc = nn.Linear(head["w"].shape[0], head["w"].shape[1])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(np.asarray(head["w"]).T.copy()))
        fc.bias.copy_(torch.from_numpy(np.asarray(head["b"])))
    net = nn.Sequential(
        stem,
        nn.ReLU(),
        *[Block(*b) for b in _blocks(width, blocks, first_stride)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        fc,
    )
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=5e-2)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def interleaved_times(impls, reference, rounds, steps):
    """``({name: [seconds per step]}, reference's first two losses)``: every implementation's ``steps`` steps in
    turn for ``rounds`` rounds, after a warm-up (compilation included) in which each must give the reference's
    first two losses (the same weights, batch and optimizer: otherwise the comparison is void)."""
    times = {name: [] for name in impls}
    first = {name: [run() for _ in range(2)] for name, run in impls.items()}
    ref = train_step.same_step({reference: first[reference], **first})
    for _ in range(rounds):
        for name, run in impls.items():
            for _ in range(steps):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
    return times, ref


def main(argv=None):
    args = parse_args(argv)
    tinyfn.tune_allocator()
    model = models.resnet(
        width=args.width, blocks_per_stage=args.blocks, first_stride=args.first_stride, stem_stride=args.stem_stride
    )
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, args.image_size, args.image_size))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 1, args.image_size, args.image_size)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    optimizer = train.adamw(1e-3, weight_decay=5e-2)

    tf_step = jax.jit(train.make_train_step(model, softmax_cross_entropy, optimizer, donate=False))
    tf_carry = [params, state, optimizer.init(params)]

    def run_tinyfn():
        out = tf_step(*tf_carry, xj, yj, jax.random.key(0))
        tf_carry[:] = out[:3]
        return float(out[3]["loss"])

    convs, head = _from_tinyfn(params, state, args.width, args.blocks, args.first_stride)
    jparams = ([(w, p) for w, p, _ in convs], head)
    jstep = jax_autodiff_step(args.width, args.blocks, args.first_stride, optimizer, args.stem_stride)
    j_carry = [jparams, [s for _, _, s in convs], optimizer.init(jparams)]

    def run_jax():
        out = jstep(*j_carry, xj, yj)
        j_carry[:] = out[:3]
        return float(out[3])

    impls = {"tinyfn (handwritten rules, jit)": run_tinyfn, "JAX autodiff (lax.conv, jax.grad, jit)": run_jax}
    torch_names = []
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: PyTorch columns skipped")
        else:
            for cl in (False, True):
                step = torch_step(convs, head, args.width, args.blocks, args.first_stride, cl, args.stem_stride)
                xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last) if cl else torch.from_numpy(x)
                yt = torch.from_numpy(y.astype(np.int64))
                name = f"PyTorch {torch.__version__} eager" + (", channels-last" if cl else ", NCHW")
                impls[name] = lambda step=step, xt=xt, yt=yt: float(step(xt, yt))
                torch_names.append(name)
    times, ref = interleaved_times(impls, "tinyfn (handwritten rules, jit)", args.rounds, args.steps)
    print(f"first two losses, every implementation: {ref[0]:.4f}, {ref[1]:.4f} (within 2e-3)")
    print(
        f"resnet(width={args.width}, blocks_per_stage={args.blocks}, first_stride={args.first_stride}, "
        f"stem_stride={args.stem_stride}) batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, "
        f"{os.cpu_count()} cores, jax {jax.__version__}"
    )
    print(f"{'implementation':48s} {'median ms':>10s} {'min ms':>8s} {'images/s':>9s} {'x tinyfn':>9s}")
    base = np.median(times["tinyfn (handwritten rules, jit)"])
    for name, t in times.items():
        med = np.median(t)
        print(f"{name:48s} {med * 1e3:10.1f} {min(t) * 1e3:8.1f} {args.batch_size / med:9.0f} {med / base:9.2f}")
    jax_ratio = base / np.median(times["JAX autodiff (lax.conv, jax.grad, jit)"])
    torch_ratio = base / min(np.median(times[n]) for n in torch_names) if torch_names else float("nan")
    print(f"resnet tinyfn/jax-autodiff={jax_ratio:.3f} tinyfn/torch={torch_ratio:.3f}")


if __name__ == "__main__":
    main()
