"""Where a training step's time goes: every layer's forward and backward, timed as compiled pieces.

    python benchmarks/profile_step.py --model {lenet5,wide_cnn,resnet} [--batch-size 128] [--reps 20] [--no-torch]
        [--no-xla-trace] [--top 30]

The model is walked the way ``serial`` and ``residual`` compose it; each leaf layer (and each residual
sum) is compiled on its own, at the shape it sees inside the model, twice: its forward in training mode,
and its forward plus the VJP of a random cotangent (the handwritten rule). Both are timed to completion,
``--reps`` times after a warm-up; the table gives the medians, the backward as their difference, the
GFLOP/s of convolutions and linear layers (2 per multiply-add; the backward does two products: dX and
dW), the bytes each piece reads and writes at least (inputs, outputs, params, their gradients), and each
layer's share of the whole jitted training step (AdamW, timed the same way). Pieces compiled alone miss
the fusions XLA makes across layers in the whole step, so the shares do not add up to 100%: the
remainder is the optimizer, the loss and what the fused step does better or worse.

Then XLA's own profile of the whole compiled step (``xla_profile.py``): every thunk the runtime executes, timed by
``jax.profiler``, grouped (GEMMs forward and backward, the tap loops of im2col/col2im and pooling, buffer fills,
layout copies, reductions, elementwise fusions) with the GEMMs' GFLOP/s, and the longest thunks with their shapes.

With PyTorch installed, its eager step of the same network in channels-last memory format (its faster layout
in every measured case), built as ``resnet_step.py`` and ``train_step.py`` build it, runs under
``torch.profiler`` and its operators are listed by self CPU time, the same way. The wide CNN's step there has no
dropout, which the peers do not implement; the line above PyTorch's table says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import tinyfn
from tinyfn import models, train
from tinyfn.layers import add_arrays, apply_with_state, init_with_state, serial
from tinyfn.losses import softmax_cross_entropy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(models.MODELS), default="resnet")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20, help="timed calls of each piece (median reported)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-xla-trace", action="store_true", help="skip XLA's per-thunk profile of the whole step")
    ap.add_argument("--top", type=int, default=30, help="thunks listed in XLA's profile")
    return ap.parse_args(argv)


def walk(layer, shape, path="", key=None):
    """``(path, layer, input_shape)`` of every leaf layer in order, and ``(path, None, shapes)`` for each residual
    sum."""
    key = jax.random.key(0) if key is None else key
    name = layer.name.lower()
    if name == "serial":
        for i, child in enumerate(layer.children):
            yield from walk(child, shape, f"{path}{i}.", key)
            shape = init_with_state(child, key, shape)[0]
    elif name == "residual":
        body = layer.children[0]
        yield from walk(body, shape, f"{path}body.", key)
        if len(layer.children) > 1:
            yield from walk(layer.children[1], shape, f"{path}shortcut.", key)
        out = init_with_state(body, key, shape)[0]
        yield f"{path}add", None, (out, out)
    else:
        yield path.rstrip("."), layer, shape


def _timed(fn, *args, reps):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _nbytes(tree):
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree))


def _flops(layer, in_shape, out_shape, batch):
    """Forward multiply-adds x2 of a conv or linear layer (0 for the rest)."""
    if layer is None or layer.name not in ("Conv2D", "Linear"):
        return 0
    _, params, _ = init_with_state(layer, jax.random.key(0), in_shape)
    w = params["w"]
    if layer.name == "Linear":
        return 2 * batch * w.shape[0] * w.shape[1]
    return 2 * batch * int(np.prod(out_shape[1:])) * int(np.prod(w.shape[1:]))


def profile_piece(path, layer, in_shape, batch, reps):
    rng = np.random.default_rng(0)
    key = jax.random.key(1)
    if layer is None:  # a residual sum of two branches
        a, b = (jnp.asarray(rng.standard_normal((batch, *s[1:])), jnp.float32) for s in in_shape)
        fwd = jax.jit(lambda a, b: add_arrays((a, b)))
        both = jax.jit(lambda a, b, g: jax.vjp(lambda a, b: add_arrays((a, b)), a, b)[1](g))
        t_f = _timed(fwd, a, b, reps=reps)
        t_fb = _timed(both, a, b, a, reps=reps)
        moved = 3 * _nbytes(a), 3 * _nbytes(a)
        return dict(
            path=path, kind="add", shape=tuple(a.shape), fwd=t_f, bwd=max(t_fb - t_f, 0.0), flops=0, bytes=moved
        )
    out_shape, params, state = init_with_state(layer, key, in_shape)
    x = jnp.asarray(rng.standard_normal((batch, *in_shape[1:])), jnp.float32)

    def forward(p, x):
        return apply_with_state(layer, p, state, x, key=key, train=True)[0]

    y = forward(params, x)
    g = jnp.asarray(rng.standard_normal(y.shape), y.dtype)
    t_f = _timed(jax.jit(forward), params, x, reps=reps)
    t_fb = _timed(jax.jit(lambda p, x, g: jax.vjp(forward, p, x)[1](g)), params, x, g, reps=reps)
    f_bytes = _nbytes(x) + _nbytes(y) + _nbytes(params)
    b_bytes = _nbytes(g) + _nbytes(x) + _nbytes(x) + 2 * _nbytes(params)
    flops = _flops(layer, in_shape, out_shape, batch)
    return dict(
        path=path,
        kind=layer.name,
        shape=tuple(y.shape),
        fwd=t_f,
        bwd=max(t_fb - t_f, 0.0),
        flops=flops,
        bytes=(f_bytes, b_bytes),
    )


def whole_step(model, batch):
    """The jitted training step (AdamW) and its arguments."""
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 28, 28))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 1, 28, 28)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    optimizer = train.adamw(1e-3, weight_decay=5e-2)
    step = jax.jit(train.make_train_step(model, softmax_cross_entropy, optimizer, donate=False, with_state=True))
    return step, (params, state, optimizer.init(params), x, y, jax.random.key(0))


def print_table(rows, step_s):
    print(
        f"{'layer':28s} {'kind':15s} {'output':18s} {'fwd ms':>7s} {'bwd ms':>7s} {'GFLOP/s f/b':>12s} "
        f"{'MB f/b':>11s} {'share':>6s}"
    )
    for r in rows:
        bwd_rate = f"{2 * r['flops'] / r['bwd'] / 1e9:5.1f}" if r["bwd"] > 1e-5 else "    -"  # below the noise: none
        gf = f"{r['flops'] / r['fwd'] / 1e9:5.1f}/{bwd_rate}" if r["flops"] else "-"
        mb = f"{r['bytes'][0] / 1e6:5.1f}/{r['bytes'][1] / 1e6:5.1f}"
        share = (r["fwd"] + r["bwd"]) / step_s
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['path'][:28]:28s} {r['kind'][:15]:15s} {shape:18s} {r['fwd'] * 1e3:7.2f} {r['bwd'] * 1e3:7.2f} "
            f"{gf:>12s} {mb:>11s} {share:6.1%}"
        )
    total = sum(r["fwd"] + r["bwd"] for r in rows)
    print(f"pieces in all: {total * 1e3:.1f} ms; the whole jitted step: {step_s * 1e3:.1f} ms ({total / step_s:.0%})")
    kinds = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["fwd"] + r["bwd"]
    print(
        "by kind: "
        + ", ".join(f"{k} {v * 1e3:.1f} ms ({v / step_s:.0%})" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    )


def torch_profile(args, model):
    try:
        import torch
    except ImportError:
        print("torch not installed: no PyTorch profile")
        return
    from torch.profiler import ProfilerActivity, profile

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 28, 28))
    if args.model == "resnet":
        import resnet_step

        defaults = (
            models.resnet.__defaults__
        )  # (num_classes, width, blocks_per_stage, stages, first_stride, stem_stride)
        width, blocks, _, first_stride, stem_stride = defaults[1:]
        convs, head = resnet_step._from_tinyfn(params, state, width, blocks, first_stride)
        step = resnet_step.torch_step(convs, head, width, blocks, first_stride, True, stem_stride)
        xt, yt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last), torch.from_numpy(y.astype(np.int64))
        run, layout = (lambda: step(xt, yt)), "channels-last"
    else:
        import peers

        # the peers implement no dropout (its mask is a cheap elementwise product): PyTorch's step leaves it out
        kept = [(layer, p) for layer, p in zip(model.children, params) if layer.name != "Dropout"]
        net, net_params = serial(*(layer for layer, _ in kept)), tuple(p for _, p in kept)
        specs = peers.layer_specs(net, net_params, (None, 1, 28, 28))
        run = peers.torch_channels_last(net, net_params, x, y, 0.01, jax.devices()[0], specs)
        layout = "channels-last" + (", without its dropout" if len(kept) < len(params) else "")
    for _ in range(3):
        run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.reps):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"\nPyTorch {torch.__version__} eager, {layout}, {args.reps} steps: self CPU time by operator "
        f"({total / args.reps / 1e3:.1f} ms a step)"
    )
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:18]:
        per = e.self_cpu_time_total / args.reps / 1e3
        print(
            f"  {e.key[:44]:44s} {per:7.2f} ms {e.self_cpu_time_total / total:6.1%}  calls/step {e.count // args.reps}"
        )


def main(argv=None):
    args = parse_args(argv)
    tinyfn.tune_allocator()
    model = models.get_model(args.model)
    rows = [profile_piece(p, layer, s, args.batch_size, args.reps) for p, layer, s in walk(model, (None, 1, 28, 28))]
    step, step_args = whole_step(model, args.batch_size)
    step_s = _timed(lambda: step(*step_args), reps=args.reps)
    print(
        f"{args.model}, batch {args.batch_size}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; medians of {args.reps} calls"
    )
    print_table(rows, step_s)
    if not args.no_xla_trace:
        import xla_profile

        xla_profile.print_profile(*xla_profile.trace_thunks(step, step_args, steps=min(args.reps, 10)), top=args.top)
    if not args.no_torch:
        torch_profile(args, model)


if __name__ == "__main__":
    main()
