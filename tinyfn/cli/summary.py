"""``python -m tinyfn summary RUN``: the table of a checkpoint's layers, output shapes and parameter counts."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("checkpoint", type=Path, help="a run directory or a .safetensors checkpoint that records its model")


def run(args) -> int:
    from tinyfn.layers import summary
    from tinyfn.train import load_model

    model, _, meta = load_model(args.checkpoint)  # a missing or unreadable checkpoint: main's one-line error
    input_shape = tuple(meta["model"].get("input_shape", (1, 28, 28)))
    print(f"{args.checkpoint}: input (N, {', '.join(str(d) for d in input_shape)})")
    print(summary(model, (None, *input_shape)))
    return 0
