"""Build tinyfn/data/fashion_mnist_subset.npz, the dataset shipped inside the package.

    apt-get install dataset-fashion-mnist
    python scripts/make_embedded_data.py            # reads /usr/share/datasets/fashion-mnist

A stratified random subset of Fashion-MNIST: 800 training and 200 test images per
class (8,000 / 2,000), drawn with a fixed seed from the official train and test
splits, stored as uint8 in a compressed npz (no pickle).

Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf, "Fashion-MNIST: a Novel
Image Dataset for Benchmarking Machine Learning Algorithms", 2017.
Copyright (c) 2017 Zalando SE, released under the MIT licence
(https://github.com/zalandoresearch/fashion-mnist/blob/master/LICENSE).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyfn.data import load_fashion_mnist

OUT = Path(__file__).resolve().parent.parent / "tinyfn" / "data" / "fashion_mnist_subset.npz"


def stratified(labels, per_class, rng):
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX directory (default: the Debian location)")
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20140906)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        data = load_fashion_mnist(split, args.data_dir)
        idx = stratified(data.labels, per_class, rng)
        arrays[f"{split}_images"] = data.images[idx, 0].astype(np.uint8)
        arrays[f"{split}_labels"] = data.labels[idx].astype(np.uint8)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
        + ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    )


if __name__ == "__main__":
    main()
