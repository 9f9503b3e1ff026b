"""Extra memory of one attention training step, plain vs blocked: O(T²) vs O(T).

For each sequence length T (N = 1, H = 1, D = 32, S = T) the step is
``jax.grad`` of ``sum(dot_product_attention(q, k, v) * c)`` with respect to
``q, k, v``; the script compiles it (``jax.jit(...).lower(...).compile()``)
and prints XLA's ``memory_analysis().temp_size_in_bytes``: the buffers the
step needs besides its arguments and outputs. The plain formulation stores
the ``T × T`` matrix ``P`` for its backward; the blocked one keeps the row
log-sum-exp and ``block_size`` keys' worth of ``P`` at a time.

    PYTHONPATH=. python benchmarks/attention_memory.py [--lengths 256 1024 4096] [--block-size 128]

Nothing is run, only compiled. The last line is
``attention_temp_mib plain=[...] blocked=[...]`` (one entry per length).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from tinyfn.layers import ATTENTION_FORMULATIONS, dot_product_attention


def temp_bytes(formulation: str, t: int, d: int, block_size: int) -> int:
    """Temporary buffer size of the compiled training step at sequence length ``t``."""

    def loss(q, k, v, c):
        return jnp.sum(dot_product_attention(q, k, v, formulation=formulation, block_size=block_size) * c)

    spec = jax.ShapeDtypeStruct((1, 1, t, d), jnp.float32)
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(spec, spec, spec, spec).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=128)
    args = parser.parse_args(argv)
    mib = {f: [] for f in ATTENTION_FORMULATIONS}
    print(f"backend {jax.default_backend()}, N=1 H=1 D={args.features}, block_size={args.block_size}, float32")
    print("| T | formulation | temp MiB | T² floats (MiB) |")
    print("|---|---|---|---|")
    for t in args.lengths:
        for formulation in ATTENTION_FORMULATIONS:
            size = temp_bytes(formulation, t, args.features, args.block_size) / 2**20
            mib[formulation].append(round(size, 3))
            print(f"| {t} | {formulation} | {size:.3f} | {t * t * 4 / 2**20:.1f} |", flush=True)
    print(" ".join(["attention_temp_mib"] + [f"{f}={mib[f]}".replace(" ", "") for f in ATTENTION_FORMULATIONS]))


if __name__ == "__main__":
    main()
