"""Ready-made models, each a ``serial`` stack of tinyfn layers."""

from __future__ import annotations

import operator

from tinyfn import _checks
from tinyfn.layers import (
    BatchNorm2D,
    Conv2D,
    Dropout,
    Flatten,
    Float32,
    GlobalAvgPool2D,
    LayerNorm,
    Linear,
    MaxPool2D,
    PatchEmbedding,
    ReLU,
    TakeToken,
    TransformerBlock,
    residual,
    serial,
)

__all__ = ["lenet5", "wide_cnn", "resnet", "basic_block", "vit", "MODELS", "get_model"]


def _in_float32(compute_dtype):
    """The layers that end a model computing in ``compute_dtype``: a cast back to float32 (for the loss)."""
    return () if compute_dtype is None else (Float32(),)


def lenet5(num_classes: int = 10, *, compute_dtype=None):
    """LeNet-5 for ``(N, 1, 28, 28)`` images (61,706 params for 10 classes).

    conv(6, 5×5, pad 2) - relu - pool 2 - conv(16, 5×5) - relu - pool 2 - flatten - linear(120) - relu - linear(84) -
    relu - linear(num_classes). With ``compute_dtype`` (``jnp.bfloat16``, say) the conv and linear layers compute in
    it, the params stay float32 and the logits come back as float32.
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    cd = dict(compute_dtype=compute_dtype)
    return serial(
        Conv2D(6, 5, padding=2, **cd),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 5, **cd),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Linear(120, **cd),
        ReLU(),
        Linear(84, **cd),
        ReLU(),
        Linear(num_classes, **cd),
        *_in_float32(compute_dtype),
    )


def wide_cnn(
    num_classes: int = 10,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.25,
    *,
    compute_dtype=None,
):
    """A wider two-conv CNN for ``(N, 1, 28, 28)`` (421,642 params with the defaults), where matrix products dominate.

    conv(32, 3×3, pad 1) - relu - pool 2 - conv(64, 3×3, pad 1) - relu - pool 2 - flatten - dropout - linear(hidden) -
    relu - dropout - linear(num_classes). ``compute_dtype`` as in ``lenet5``.
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    c1, c2 = (_checks.positive_int("channels", c) for c in channels)
    cd = dict(compute_dtype=compute_dtype)
    return serial(
        Conv2D(c1, 3, padding=1, **cd),
        ReLU(),
        MaxPool2D(2),
        Conv2D(c2, 3, padding=1, **cd),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dropout(dropout),
        Linear(_checks.positive_int("hidden", hidden), **cd),
        ReLU(),
        Dropout(dropout),
        Linear(num_classes, **cd),
        *_in_float32(compute_dtype),
    )


def basic_block(channels: int, stride: int = 1, project: bool = False, *, compute_dtype=None):
    """He et al.'s basic residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    Both convolutions are 3×3 without bias (batch norm's shift replaces it); the first has ``stride``. With
    ``project`` the shortcut is a strided 1×1 convolution and batch norm (for a change of width or resolution), else
    the identity. ``compute_dtype``: the convolutions compute in it (batch norm's statistics stay float32).
    """
    cd = dict(use_bias=False, compute_dtype=compute_dtype)
    body = serial(
        Conv2D(channels, 3, stride, 1, **cd),
        BatchNorm2D(),
        ReLU(),
        Conv2D(channels, 3, 1, 1, **cd),
        BatchNorm2D(),
    )
    shortcut = serial(Conv2D(channels, 1, stride, **cd), BatchNorm2D()) if project else None
    return serial(residual(body, shortcut), ReLU())


def resnet(
    num_classes: int = 10,
    width: int = 24,
    blocks_per_stage: int | tuple[int, ...] = (1, 1, 3),
    stages: int = 3,
    first_stride: int = 1,
    stem_stride: int = 2,
    *,
    compute_dtype=None,
):
    """A small ResNet for ``(N, C, H, W)`` images (He et al.'s CIFAR design), with batch norm.

    A stem conv(width) - bn - relu, then ``stages`` stages of ``blocks_per_stage`` basic blocks of ``width · 2^s``
    channels (one count for every stage, or one per stage as in torchvision's ``layers=[...]``: ``(1, 1, 4)``; a stage
    of 0 blocks is skipped, so ``(0, 1, 3)`` takes the stem's output straight into the second stage's strided block);
    the first block of the first stage has stride ``first_stride``, the first block of every later stage stride 2
    (each with a 1×1 projection shortcut); global average pooling, linear(num_classes). The stem is a 3×3 conv at the
    input's resolution (``stem_stride=1``) or, with ``stem_stride=s > 1``, a (2s)×(2s) conv of stride s and padding
    s/2: every pixel is seen by the same number of windows, and no activation is computed at full resolution (use it
    with ``first_stride=1``).

    The defaults (a 4×4 stride-2 stem, then 24-48-96 channels at 14×14, 7×7 and 4×4 on 28×28 inputs in 1, 1 and 3
    blocks) are the model of the command line's resnet recipe: 506,554 params for 10 classes, 11.1M multiply-adds per
    image forward. It trains a step in about the time of ``width=20, blocks_per_stage=2`` (272,930 params, 8.7M; the
    previous default), whose extra block at 14×14, where the activations are largest, costs as much as two at 4×4, and
    reaches about 0.4 points more test accuracy: width moved it more than depth (``benchmarks/README.md``, ResNet).
    ``width=16, blocks_per_stage=2, stem_stride=1, first_stride=2`` (a 3×3 stem at 28×28, the first block halving the
    resolution through a 1×1 projection: 175,258 params, 5.7M) is the one before; ``stem_stride=2, first_stride=1``
    reaches the same stages with no 28×28 activation but the input and trains a step about 1.2 times faster on two CPU
    cores, with the same accuracy. ``first_stride=1`` with the 3×3 stem runs the stages at 28×28, 14×14, 7×7 (20.2M
    multiply-adds at width 16). A stateful model: train it with ``tinyfn.layers.init_with_state`` and
    ``make_train_step`` (``with_state``). ``compute_dtype`` (``jnp.bfloat16``): the convolutions and the linear layer
    compute in it, batch norm and average pooling keep their statistics and sums in float32, the params stay float32
    and the logits come back as float32.
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    width = _checks.positive_int("width", width)
    stages = _checks.positive_int("stages", stages)
    blocks = _stage_blocks(blocks_per_stage, stages)
    first_stride = _checks.positive_int("first_stride", first_stride)
    stem_stride = _checks.positive_int("stem_stride", stem_stride)
    cd = dict(compute_dtype=compute_dtype)
    if stem_stride == 1:
        stem = Conv2D(width, 3, 1, 1, use_bias=False, **cd)
    elif stem_stride % 2:
        raise ValueError(
            "resnet: stem_stride must be 1 or even (its kernel is 2·stem_stride, its padding stem_stride/2), got "
            f"{stem_stride}"
        )
    else:
        stem = Conv2D(width, 2 * stem_stride, stem_stride, stem_stride // 2, use_bias=False, **cd)
    layers = [stem, BatchNorm2D(), ReLU()]
    for s in range(stages):
        channels = width * 2**s
        for b in range(blocks[s]):
            stride = (first_stride if s == 0 else 2) if b == 0 else 1
            layers.append(basic_block(channels, stride=stride, project=b == 0 and (stride > 1 or s > 0), **cd))
    layers += [GlobalAvgPool2D(), Linear(num_classes, **cd), *_in_float32(compute_dtype)]
    return serial(*layers)


def _stage_blocks(blocks_per_stage, stages: int) -> tuple[int, ...]:
    """``blocks_per_stage`` as one count per stage: an int for every stage, or a sequence of ``stages`` ints."""
    if isinstance(blocks_per_stage, (list, tuple)):
        if len(blocks_per_stage) != stages:
            raise ValueError(
                f"resnet: blocks_per_stage must be an int or one count per stage ({stages}), got "
                f"{tuple(blocks_per_stage)!r}"
            )
        counts = tuple(_stage_count(i, b) for i, b in enumerate(blocks_per_stage))
        if not any(counts):
            raise ValueError(f"resnet: blocks_per_stage must hold at least one block, got {tuple(blocks_per_stage)!r}")
        return counts
    return (_checks.positive_int("blocks_per_stage", blocks_per_stage, op="resnet"),) * stages


def _stage_count(i: int, count) -> int:
    try:
        n = None if isinstance(count, bool) else operator.index(count)
    except TypeError:
        n = None
    if n is None or n < 0:
        raise ValueError(f"resnet: blocks_per_stage[{i}] must be an int >= 0 (0 skips the stage), got {count!r}")
    return n


def vit(
    num_classes: int = 10,
    patch: int = 7,
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 2,
    dropout: float = 0.0,
):
    """A small vision transformer (Dosovitskiy et al. 2021) for ``(N, C, H, W)`` images, ``H``, ``W`` multiples of
    ``patch``.

    PatchEmbedding(patch, embed_dim) (a class token and learned positions) - ``depth`` pre-norm TransformerBlocks
    (``num_heads`` heads, an MLP of ``mlp_ratio · embed_dim``) - LayerNorm - TakeToken(0) (the class token) -
    Linear(num_classes). The defaults read 28×28 images as 16 patches of 7×7 plus the class token: 17 tokens of 64
    features, 4 blocks of 4 heads, 139,018 params for 10 classes (the command line's ``vit`` recipe: 0.907 on
    Fashion-MNIST's test set in ten minutes on two CPU cores).
    """
    num_classes = _checks.positive_int("num_classes", num_classes, op="vit")
    depth = _checks.positive_int("depth", depth, op="vit")
    blocks = [TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(depth)]
    return serial(PatchEmbedding(patch, embed_dim), *blocks, LayerNorm(), TakeToken(0), Linear(num_classes))


MODELS = {"lenet5": lenet5, "wide_cnn": wide_cnn, "resnet": resnet, "vit": vit}


def get_model(name: str, **kwargs):
    """A model by name from ``MODELS``, built with ``kwargs``; an argument the model does not take is named.

    ``get_model("lenet5", compute_dtype=jnp.bfloat16)`` builds LeNet-5 computing in bfloat16; a model without an
    argument given says so, naming the models that take it.
    """
    import inspect

    if name not in MODELS:
        raise ValueError(f"get_model: model must be one of {sorted(MODELS)}, got {name!r}")
    accepted = inspect.signature(MODELS[name]).parameters
    for arg in kwargs:
        if arg not in accepted:
            takers = sorted(m for m, f in MODELS.items() if arg in inspect.signature(f).parameters)
            also = f" (models that take it: {', '.join(takers)})" if takers else ""
            raise ValueError(f"get_model: model {name!r} takes no argument {arg!r}{also}")
    return MODELS[name](**kwargs)
