"""Time one AdamW training step of ``tinyfn.models.vit`` against its peers, interleaved in one process.

    python benchmarks/vit_step.py [--batch-size 128] [--patch 7] [--embed-dim 64] [--depth 4] [--heads 4]
                                  [--mlp-ratio 2] [--steps 10] [--rounds 10] [--no-torch] [--quick]

The same vision transformer three ways, from the same initial weights: tinyfn
(handwritten rules: ``conv2d``, ``linear``, ``layer_norm``, ``gelu``,
``dot_product_attention``; ``tinyfn.train.adamw``; jitted); JAX autodiff (the
patches cut by a reshape and one matrix product, ``jax.nn.dot_product_attention``
and plain ``jax.numpy``, ``jax.grad``, the same ``tinyfn.train.adamw``, jitted);
PyTorch eager (``nn.Conv2d``, ``nn.TransformerEncoderLayer(norm_first=True)``,
whose attention is ``F.scaled_dot_product_attention``, ``torch.optim.AdamW``,
as many threads as cores). No augmentation and no dropout, so the steps compute
the same thing. Each round runs ``--steps`` steps of every implementation in
turn (after a warm-up that compiles and checks that every implementation gives
the same first two losses), timing each to completion; the table gives median
and min ms/step and images/s. The last line, for scripts, is

    vit tinyfn/jax-autodiff=R1 tinyfn/torch=R2

(median ms/step ratios; below 1 means tinyfn is faster).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import tinyfn
from tinyfn import models, train
from tinyfn.losses import softmax_cross_entropy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet_step import interleaved_times  # noqa: E402  (the benchmarks' shared timing loop)

TINYFN = "tinyfn (handwritten rules, jit)"
JAX = "JAX autodiff (jax.nn.dot_product_attention, jit)"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=float, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--quick", action="store_true", help="batch 16, 1 round of 2 steps: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.rounds = 16, 2, 1
    return args


def _split(params):
    """``models.vit``'s params as (patch embedding, [(ln1, attention, ln2, fc1, fc2)], final norm, head)."""
    pe, *blocks, ln, _, head = params
    per_block = [(*b[0]["body"], b[1]["body"][0], b[1]["body"][1], b[1]["body"][3]) for b in blocks]
    return pe, per_block, ln, head


def jax_forward(params, x, heads, patch):
    """The ViT in plain ``jax.numpy`` and ``jax.nn.dot_product_attention`` (layout ``(N, T, H, D)``)."""
    pe, blocks, ln, head = _split(params)
    n, c, hh, ww = x.shape
    e = pe["w"].shape[0]
    cols = x.reshape(n, c, hh // patch, patch, ww // patch, patch).transpose(0, 2, 4, 1, 3, 5)
    cols = cols.reshape(n, -1, c * patch * patch)  # (N, T, C p p): each patch, row-major, as the conv reads it
    tokens = cols @ pe["w"].reshape(e, -1).T + pe["b"]
    h = jnp.concatenate([jnp.broadcast_to(pe["cls"], (n, 1, e)), tokens], axis=1) + pe["pos"]

    def norm(v, p):
        mean = v.mean(-1, keepdims=True)
        var = ((v - mean) ** 2).mean(-1, keepdims=True)
        return (v - mean) * jax.lax.rsqrt(var + 1e-5) * p["gamma"] + p["beta"]

    t = h.shape[1]
    for ln1, att, ln2, fc1, fc2 in blocks:
        qkv = (norm(h, ln1) @ att["in_proj_weight"].T + att["in_proj_bias"]).reshape(n, t, 3, heads, e // heads)
        o = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(n, t, e)
        h = h + o @ att["out_proj_weight"].T + att["out_proj_bias"]
        h = h + jax.nn.gelu(norm(h, ln2) @ fc1["w"] + fc1["b"], approximate=False) @ fc2["w"] + fc2["b"]
    return norm(h, ln)[:, 0] @ head["w"] + head["b"]


def jax_autodiff_step(optimizer, heads, patch):
    def loss(params, x, y):
        logp = jax.nn.log_softmax(jax_forward(params, x, heads, patch))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

    @jax.jit
    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), opt_state, value

    return step


def torch_step(params, heads, patch):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    pe, blocks, ln, head = _split(params)
    e = pe["w"].shape[0]

    def t(a, transpose=False):
        a = np.asarray(a)
        return torch.from_numpy((a.T if transpose else a).copy())

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(pe["w"].shape[1], e, patch, stride=patch)
            self.cls, self.pos = nn.Parameter(t(pe["cls"])), nn.Parameter(t(pe["pos"]))
            hidden = blocks[0][3]["w"].shape[1]
            layer = {"dropout": 0.0, "activation": "gelu", "batch_first": True, "norm_first": True}
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(e, heads, hidden, **layer) for _ in blocks)
            self.norm, self.head = nn.LayerNorm(e), nn.Linear(e, head["w"].shape[1])

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            h = torch.cat([self.cls.expand(x.shape[0], 1, e), tokens], dim=1) + self.pos
            for block in self.blocks:
                h = block(h)
            return self.head(self.norm(h)[:, 0])

    net = ViT()
    with torch.no_grad():
        net.embed.weight.copy_(t(pe["w"]))
        net.embed.bias.copy_(t(pe["b"]))
        for block, (ln1, att, ln2, fc1, fc2) in zip(net.blocks, blocks):
            block.self_attn.in_proj_weight.copy_(t(att["in_proj_weight"]))
            block.self_attn.in_proj_bias.copy_(t(att["in_proj_bias"]))
            block.self_attn.out_proj.weight.copy_(t(att["out_proj_weight"]))
            block.self_attn.out_proj.bias.copy_(t(att["out_proj_bias"]))
            for mod, p in ((block.norm1, ln1), (block.norm2, ln2), (net.norm, ln)):
                mod.weight.copy_(t(p["gamma"]))
                mod.bias.copy_(t(p["beta"]))
            for mod, p in ((block.linear1, fc1), (block.linear2, fc2), (net.head, head)):
                mod.weight.copy_(t(p["w"], transpose=True))
                mod.bias.copy_(t(p["b"]))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=5e-2)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _implementations(args, params, x, y):
    """``{name: run}``, each ``run()`` one training step returning its loss as a float; and the PyTorch names."""
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    optimizer = train.adamw(1e-3, weight_decay=5e-2)
    model = models.vit(10, args.patch, args.embed_dim, args.depth, args.heads, args.mlp_ratio)
    tf_step = jax.jit(train.make_train_step(model, softmax_cross_entropy, optimizer, donate=False))
    tf_carry = [params, optimizer.init(params)]

    def run_tinyfn():
        out = tf_step(*tf_carry, xj, yj, jax.random.key(0))
        tf_carry[:] = out[:2]
        return float(out[2]["loss"])

    jstep = jax_autodiff_step(optimizer, args.heads, args.patch)
    j_carry = [params, optimizer.init(params)]

    def run_jax():
        out = jstep(*j_carry, xj, yj)
        j_carry[:] = out[:2]
        return float(out[2])

    impls = {TINYFN: run_tinyfn, JAX: run_jax}
    if args.no_torch:
        return impls, []
    try:
        import torch
    except ImportError:
        print("torch not installed: PyTorch column skipped")
        return impls, []
    step = torch_step(params, args.heads, args.patch)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    name = f"PyTorch {torch.__version__} eager (SDPA)"
    impls[name] = lambda: float(step(xt, yt))
    return impls, [name]


def main(argv=None):
    args = parse_args(argv)
    tinyfn.tune_allocator()
    model = models.vit(10, args.patch, args.embed_dim, args.depth, args.heads, args.mlp_ratio)
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    impls, torch_names = _implementations(args, params, x, y)
    times, ref = interleaved_times(impls, TINYFN, args.rounds, args.steps)
    print(f"first two losses, every implementation: {ref[0]:.4f}, {ref[1]:.4f} (within 2e-3)")
    print(
        f"vit(patch={args.patch}, embed_dim={args.embed_dim}, depth={args.depth}, num_heads={args.heads}, "
        f"mlp_ratio={args.mlp_ratio}) batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, "
        f"{os.cpu_count()} cores, jax {jax.__version__}"
    )
    print(f"{'implementation':52s} {'median ms':>10s} {'min ms':>8s} {'images/s':>9s} {'x tinyfn':>9s}")
    base = np.median(times[TINYFN])
    for name, t in times.items():
        med = np.median(t)
        print(f"{name:52s} {med * 1e3:10.1f} {min(t) * 1e3:8.1f} {args.batch_size / med:9.0f} {med / base:9.2f}")
    jax_ratio = base / np.median(times[JAX])
    torch_ratio = base / min(np.median(times[n]) for n in torch_names) if torch_names else float("nan")
    print(f"vit tinyfn/jax-autodiff={jax_ratio:.3f} tinyfn/torch={torch_ratio:.3f}")


if __name__ == "__main__":
    main()
