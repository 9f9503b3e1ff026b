"""Datasets: an IDX reader, Fashion-MNIST (or any MNIST-format directory), and an embedded subset."""

from tinyfn.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR as DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES,
    Dataset as Dataset,
    load_dataset as load_dataset,
    load_embedded as load_embedded,
    load_fashion_mnist as load_fashion_mnist,
    load_idx_dir as load_idx_dir,
    normalization as normalization,
    normalize as normalize,
)
from tinyfn.data.idx import IDXError as IDXError, read_idx as read_idx, write_idx as write_idx
