"""Time one training step of several ``tinyfn.models.resnet`` shapes, interleaved in one process.

    python benchmarks/resnet_variants.py 20:2 24:1,1,3 24:1,1,2 [--batch-size 128] [--steps 4] [--rounds 8]

Each argument is ``WIDTH:BLOCKS``: ``models.resnet(width=WIDTH, blocks_per_stage=BLOCKS)``
with the recipe's other defaults (the 4x4 stride-2 stem, three stages), BLOCKS one count
for every stage (``2``) or one per stage (``1,1,3``). Every net takes the command line's
training step (``make_train_step`` with AdamW, its crops and flips inside the step) on the
same batch; the nets take turns, ``--steps`` steps each per round for ``--rounds`` rounds,
so a machine whose speed drifts slows all of them alike. One line per net: params,
multiply-adds per image (forward) and the median and first-quartile ms per step; the
last line, for scripts, is

    variants WIDTH:BLOCKS=MS ...

(median ms/step of each).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from resnet_step import _blocks, block_counts

import tinyfn
from tinyfn import models, train
from tinyfn.layers import init_with_state
from tinyfn.losses import softmax_cross_entropy


def parse_variant(text: str):
    """``"24:1,1,3"`` -> ``(24, (1, 1, 3))``; ``"20:2"`` -> ``(20, 2)``."""
    try:
        width, blocks = text.split(":")
        return int(width), block_counts(blocks)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a variant is WIDTH:BLOCKS (20:2 or 24:1,1,3), got {text!r}") from None


def multiply_adds(width: int, blocks, stages: int = 3, size: int = 28) -> int:
    """Forward multiply-adds per image of ``models.resnet(width, blocks_per_stage=blocks)`` on ``size``x``size`` inputs
    (the 4x4 stride-2 stem, 3x3 convolutions, 1x1 projections, the final linear layer)."""
    hw = (size + 2 - 4) // 2 + 1
    total = hw * hw * width * 16
    for cin, c, stride, projected in _blocks(width, blocks, first_stride=1, stages=stages):
        hw = (hw - 1) // stride + 1
        total += hw * hw * c * (cin * 9 + c * 9 + (cin if projected else 0))
    return total + c * 10  # the linear layer on the last stage's channels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", type=parse_variant, metavar="WIDTH:BLOCKS")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)
    tinyfn.tune_allocator()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.batch_size).astype(np.int32))
    augment = train.augment.compose(train.augment.random_crop(1), train.augment.random_flip())
    nets = []
    for width, blocks in args.variants:
        model = models.resnet(width=width, blocks_per_stage=blocks)
        _, params, state = init_with_state(model, jax.random.key(0), (None, 1, 28, 28))
        optimizer = train.adamw(2e-3, weight_decay=5e-2, mask=train.weights_only)
        step = train.make_train_step(
            model, softmax_cross_entropy, optimizer, with_state=True, augment=augment, donate=False
        )
        carry = (params, state, optimizer.init(params), x, y, jax.random.key_data(jax.random.key(1)))
        jax.block_until_ready(step(*carry))  # compiled here
        nets.append(
            (
                f"{width}:{blocks if isinstance(blocks, int) else ','.join(map(str, blocks))}",
                step,
                carry,
                params,
                width,
                blocks,
            )
        )
    times = [[] for _ in nets]
    for _ in range(args.rounds):
        for i, (_, step, carry, *_rest) in enumerate(nets):
            for _ in range(args.steps):
                t = time.perf_counter()
                jax.block_until_ready(step(*carry))
                times[i].append(time.perf_counter() - t)
    print(f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, jax {jax.__version__}")
    for (name, _, _, params, width, blocks), t in zip(nets, times):
        n = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
        print(
            f"{name:12s} params {n:9,d}  multiply-adds {multiply_adds(width, blocks) / 1e6:5.2f}M  median "
            f"{np.median(t) * 1e3:7.1f} ms  p25 {np.percentile(t, 25) * 1e3:7.1f} ms"
        )
    print("variants " + " ".join(f"{name}={np.median(t) * 1e3:.1f}" for (name, *_), t in zip(nets, times)))


if __name__ == "__main__":
    main()
