"""Datasets: an IDX reader, Fashion-MNIST (or any MNIST-format directory), and an embedded subset."""

from tinyfn.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    Dataset,
    load_dataset,
    load_embedded,
    load_fashion_mnist,
    load_idx_dir,
    normalization,
    normalize,
)
from tinyfn.data.idx import IDXError, read_idx, write_idx

__all__ = [
    "read_idx",
    "write_idx",
    "IDXError",
    "Dataset",
    "load_fashion_mnist",
    "load_idx_dir",
    "load_embedded",
    "load_dataset",
    "normalization",
    "normalize",
    "FASHION_MNIST_CLASSES",
    "DEFAULT_FASHION_MNIST_DIR",
]
