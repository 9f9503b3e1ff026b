"""Train ``tinyfn.models.resnet`` (batch norm, AdamW or SGD, a cosine schedule, augmentation), timing every epoch.

    python benchmarks/resnet_recipe.py --data fashion-mnist [--epochs 15] [--width 24] [--blocks 1,1,3]
        [--first-stride 1] [--stem-stride 2] [--batch-size 128] [--optimizer {adamw,sgd}] [--momentum 0.9]
        [--lr 4e-3] [--weight-decay 5e-2] [--decay {all,weights}]
        [--augment {crop+flip,flip,crop}] [--crop-padding 1] [--fill {background,zero}] [--no-augment]
        [--label-smoothing 0.1] [--tta {flip,none}] [--resize-schedule 16:6,22:4] [--max-steps N] [--plot PNG]

Every default comes from ``RESNET_RECIPE`` (the command line's recipe: 0.9410 test
accuracy in 14 min 12 s all in measured with its copy on two CPU cores; see
benchmarks/README.md). Like the command line it trains on all 60,000 images;
unlike it, it evaluates the test set after every epoch.

A direct loop over the stateful ``make_train_step`` (batch statistics in
training, running statistics in evaluation) with the augmentation fused into
the same jitted call. ``--max-steps`` stops each epoch early and projects the
full epoch's time from the measured steps (compilation excluded). The last
line, for scripts, is

    epoch_s=T projected_epoch_s=P test_accuracy=A test_accuracy_tta=B total_s=W

where ``A`` is the last epoch's single-view test accuracy and ``B`` the same
weights evaluated with the recipe's test-time views (``--tta flip``: each image
and its mirror image, their class probabilities averaged).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from resnet_step import block_counts

import tinyfn
from tinyfn import data, models, train
from tinyfn.cli.runs import resize_stages
from tinyfn.layers import init_with_state
from tinyfn.losses import softmax_cross_entropy

RESNET_RECIPE = {
    # the model: models.resnet()'s defaults, width=24, blocks_per_stage=(1, 1, 3), stages=3, first_stride=1,
    # stem_stride=2: a 4x4 stride-2 stem conv into 14x14, then 24 channels at 14x14, 48 at 7x7, 96 at 4x4 in 1, 1
    # and 3 basic blocks (506,554 params)
    "width": 24,
    "blocks_per_stage": (1, 1, 3),
    "stages": 3,
    "first_stride": 1,
    "stem_stride": 2,
    # the training: AdamW (no decay on batch norm and biases), linear warm-up then a half cosine to 0,
    # random crops (padding 1, black) and flips, label smoothing 0.1
    "optimizer": "adamw",
    "momentum": 0.9,  # --optimizer sgd's Nesterov momentum (the command line's --momentum); unused by AdamW
    "learning_rate": 4e-3,
    "weight_decay": 5e-2,
    # which params the weight decay applies to: all, or weights (filters and matrices: train.weights_only)
    "decay": "weights",
    "warmup_steps": 200,
    "epochs": 15,
    "batch_size": 128,
    "augment": "crop+flip",
    "crop_padding": 1,
    "label_smoothing": 0.1,
    "tta": "flip",  # the final test evaluation averages each image's and its mirror image's class probabilities
    # progressive resizing: SIZE:EPOCHS stages on images scaled down, then full size (the command line's flag)
    "resize_schedule": "none",
}


def parse_args(argv=None):
    r = RESNET_RECIPE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--epochs", type=int, default=r["epochs"])
    ap.add_argument("--width", type=int, default=r["width"])
    ap.add_argument(
        "--blocks",
        type=block_counts,
        default=r["blocks_per_stage"],
        help="basic blocks per stage: one count for every stage, or one per stage (1,1,3)",
    )
    ap.add_argument("--stages", type=int, default=r["stages"])
    ap.add_argument("--first-stride", type=int, default=r["first_stride"])
    ap.add_argument("--stem-stride", type=int, default=r["stem_stride"])
    ap.add_argument("--batch-size", type=int, default=r["batch_size"])
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default=r["optimizer"])
    ap.add_argument("--momentum", type=float, default=r["momentum"], help="SGD's Nesterov momentum (--optimizer sgd)")
    ap.add_argument("--lr", type=float, default=r["learning_rate"])
    ap.add_argument("--weight-decay", type=float, default=r["weight_decay"])
    ap.add_argument("--decay", choices=("all", "weights"), default=r["decay"])
    ap.add_argument("--warmup-steps", type=int, default=r["warmup_steps"])
    ap.add_argument("--plot", default=None, help="save the curves (train loss, test accuracy per epoch) to this PNG")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--augment", choices=("crop+flip", "flip", "crop"), default=r["augment"])
    ap.add_argument("--crop-padding", type=int, default=r["crop_padding"])
    ap.add_argument("--label-smoothing", type=float, default=r["label_smoothing"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fill",
        choices=("background", "zero"),
        default="background",
        help=(
            "what the crops pad with: background is black, (0 - mean) / std of the normalised data; zero is the mean "
            "grey"
        ),
    )
    ap.add_argument("--tta", choices=("flip", "none"), default=r["tta"])
    ap.add_argument(
        "--resize-schedule",
        default=r["resize_schedule"],
        help="SIZE:EPOCHS,... stages on images scaled down, the rest at full size (e.g. 16:6,22:4; none)",
    )
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    tinyfn.tune_allocator()  # before XLA starts, as the command line does: large temporaries stay mapped
    train_set, test_set = data.load_dataset(args.data, "train"), data.load_dataset(args.data, "test")
    mean, std = data.normalization(train_set.images)
    x_train, y_train = data.normalize(train_set.images, mean, std), train_set.labels
    x_test, y_test = data.normalize(test_set.images, mean, std), test_set.labels
    steps_per_epoch = len(y_train) // args.batch_size
    model = models.resnet(
        width=args.width,
        blocks_per_stage=args.blocks,
        stages=args.stages,
        first_stride=args.first_stride,
        stem_stride=args.stem_stride,
    )
    key = jax.random.key(args.seed)
    _, params, state = init_with_state(model, key, (None, *x_train.shape[1:]))
    lr = train.cosine(
        args.lr, steps_per_epoch * args.epochs, warmup_steps=min(args.warmup_steps, steps_per_epoch * args.epochs - 1)
    )
    decay = dict(weight_decay=args.weight_decay, mask=train.weights_only if args.decay == "weights" else None)
    if args.optimizer == "sgd":  # L2 weight decay, as the command line's --optimizer sgd
        optimizer = train.sgd(lr, momentum=args.momentum, nesterov=args.momentum > 0, **decay)
    else:
        optimizer = train.adamw(lr, **decay)
    opt_state = optimizer.init(params)
    loss = functools.partial(softmax_cross_entropy, label_smoothing=args.label_smoothing)
    step = make_step = train.make_train_step(model, loss, optimizer, donate=False)
    background = float(data.normalize(np.zeros((1,), np.uint8), mean, std)[0]) if args.fill == "background" else 0.0
    crop, flip = train.augment.random_crop(args.crop_padding, fill=background), train.augment.random_flip()
    chosen = {"crop+flip": (crop, flip), "flip": (flip,), "crop": (crop,)}
    augment = None if args.no_augment else train.augment.compose(*chosen[args.augment])
    schedule = train.augment.progressive_resizing(augment, resize_stages(args.resize_schedule))

    @functools.cache
    def train_batch_of(stage):  # one jitted step per stage of the schedule
        augment_now = schedule.augmentations[stage]

        @jax.jit
        def train_batch(params, state, opt_state, x, y, key):
            k_aug, k_step = jax.random.split(key)
            return make_step(params, state, opt_state, augment_now(k_aug, x) if augment_now else x, y, k_step)

        return train_batch

    eval_step = train.make_eval_step(model, softmax_cross_entropy)
    print(
        tinyfn.summary(model, (None, *x_train.shape[1:])).splitlines()[-1],
        f"| {steps_per_epoch} steps/epoch",
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    epoch_times, projected, curve, accs = [], [], [], []
    for epoch in range(args.epochs):
        order = rng.permutation(len(y_train))
        n_steps = steps_per_epoch if args.max_steps is None else min(args.max_steps, steps_per_epoch)
        train_batch = train_batch_of(schedule.stage(epoch))
        t0 = t_first = time.perf_counter()
        for b in range(n_steps):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            params, state, opt_state, m = train_batch(
                params,
                state,
                opt_state,
                jnp.asarray(x_train[idx]),
                jnp.asarray(y_train[idx]),
                jax.random.fold_in(key, epoch * steps_per_epoch + b),
            )
            if b == 0:
                jax.block_until_ready(m)
                t_first = time.perf_counter()  # the first step includes compilation
            if b % 50 == 0:
                curve.append((epoch + b / steps_per_epoch, float(m["loss"]), float(m["accuracy"])))
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
        accs.append(acc)
        print(
            f"epoch {epoch + 1}: {t1 - t0:.1f} s ({per_step * 1000:.0f} ms/step, projected epoch "
            f"{per_step * steps_per_epoch:.0f} s), "
            f"last loss {float(m['loss']):.3f}, test accuracy {acc:.4f}, {time.perf_counter() - t_start:.0f} s all in, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    views = train.augment.TTA_VIEWS[args.tta]
    acc_tta = train.evaluate(model, params, (x_test, y_test), model_state=state, views=views)[1] if views else acc
    print(
        f"test accuracy after epoch {args.epochs}: {acc:.4f} single view, {acc_tta:.4f} with test-time views "
        f"{args.tta}",
        flush=True,
    )
    if args.plot:
        _plot(args.plot, curve, accs)
    del step
    print(
        f"epoch_s={np.median(epoch_times):.1f} projected_epoch_s={np.median(projected):.1f} test_accuracy={acc:.4f} "
        f"test_accuracy_tta={acc_tta:.4f} total_s={time.perf_counter() - t_start:.0f}"
    )


def _plot(path, curve, accs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    e, loss, acc = zip(*curve)
    ax1.plot(e, loss, label="train loss (batch)")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(e, acc, alpha=0.5, label="train accuracy (batch, augmented)")
    ax2.plot(range(1, len(accs) + 1), accs, "o-", label="test accuracy")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
