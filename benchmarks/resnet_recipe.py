"""Train ``tinyfn.models.resnet`` with batch norm, AdamW, a cosine schedule and augmentation, timing every epoch.

    python benchmarks/resnet_recipe.py [--data embedded|fashion-mnist] [--epochs 4] [--width 16]
        [--blocks 2] [--batch-size 128] [--lr 3e-3] [--max-steps N] [--no-augment]

A direct loop over the stateful ``make_train_step`` (batch statistics in
training, running statistics in evaluation) with the augmentation fused into
the same jitted call. ``--max-steps`` stops each epoch early and projects the
full epoch's time from the measured steps (compilation excluded). The last
line, for scripts, is

    epoch_s=T projected_epoch_s=P test_accuracy=A total_s=W
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import tinyfn
from tinyfn import data, models, train
from tinyfn.layers import init_with_state
from tinyfn.losses import softmax_cross_entropy


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    train_set, test_set = data.load_dataset(args.data, "train"), data.load_dataset(args.data, "test")
    mean, std = data.normalization(train_set.images)
    x_train, y_train = data.normalize(train_set.images, mean, std), train_set.labels
    x_test, y_test = data.normalize(test_set.images, mean, std), test_set.labels
    steps_per_epoch = len(y_train) // args.batch_size
    model = models.resnet(width=args.width, blocks_per_stage=args.blocks)
    key = jax.random.key(args.seed)
    _, params, state = init_with_state(model, key, (None, *x_train.shape[1:]))
    optimizer = train.adamw(train.cosine(args.lr, steps_per_epoch * args.epochs, warmup_steps=min(100, steps_per_epoch)), weight_decay=args.weight_decay)
    opt_state = optimizer.init(params)
    step = make_step = train.make_train_step(model, softmax_cross_entropy, optimizer, donate=False)
    augment = None if args.no_augment else train.augment.compose(train.augment.random_crop(2), train.augment.random_flip())

    @jax.jit
    def train_batch(params, state, opt_state, x, y, key):
        k_aug, k_step = jax.random.split(key)
        return make_step(params, state, opt_state, augment(k_aug, x) if augment else x, y, k_step)

    eval_step = train.make_eval_step(model, softmax_cross_entropy)
    print(tinyfn.summary(model, (None, *x_train.shape[1:])).splitlines()[-1], f"| {steps_per_epoch} steps/epoch", flush=True)
    rng = np.random.default_rng(args.seed)
    epoch_times, projected = [], []
    for epoch in range(args.epochs):
        order = rng.permutation(len(y_train))
        n_steps = steps_per_epoch if args.max_steps is None else min(args.max_steps, steps_per_epoch)
        t0 = t_first = time.perf_counter()
        loss_sum = 0.0
        for b in range(n_steps):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            params, state, opt_state, m = train_batch(params, state, opt_state, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]), jax.random.fold_in(key, epoch * steps_per_epoch + b))
            if b == 0:
                jax.block_until_ready(m)
                t_first = time.perf_counter()  # the first step includes compilation
            loss_sum += float(m["loss"]) if b % 50 == 0 else 0.0
        jax.block_until_ready(params)
        t1 = time.perf_counter()
        per_step = (t1 - t_first) / max(n_steps - 1, 1)
        epoch_times.append(t1 - t0)
        projected.append(per_step * steps_per_epoch)
        correct = 0.0
        for s in range(0, len(y_test), 1000):
            mm = eval_step(params, state, jnp.asarray(x_test[s : s + 1000]), jnp.asarray(y_test[s : s + 1000]))
            correct += float(mm["accuracy"]) * len(y_test[s : s + 1000])
        acc = correct / len(y_test)
        print(f"epoch {epoch + 1}: {t1 - t0:.1f} s ({per_step * 1000:.0f} ms/step, projected epoch {per_step * steps_per_epoch:.0f} s), "
              f"last loss {float(m['loss']):.3f}, test accuracy {acc:.4f}", flush=True)
    del step
    print(f"epoch_s={np.median(epoch_times):.1f} projected_epoch_s={np.median(projected):.1f} test_accuracy={acc:.4f} total_s={time.perf_counter() - t_start:.0f}")


if __name__ == "__main__":
    main()
