"""Datasets: an IDX reader, Fashion-MNIST (or any MNIST-format directory), and an embedded subset."""

from tinyfn.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR as DEFAULT_FASHION_MNIST_DIR,
)
from tinyfn.data.datasets import (
    FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES,
)
from tinyfn.data.datasets import (
    Dataset as Dataset,
)
from tinyfn.data.datasets import (
    load_dataset as load_dataset,
)
from tinyfn.data.datasets import (
    load_embedded as load_embedded,
)
from tinyfn.data.datasets import (
    load_fashion_mnist as load_fashion_mnist,
)
from tinyfn.data.datasets import (
    load_idx_dir as load_idx_dir,
)
from tinyfn.data.datasets import (
    normalization as normalization,
)
from tinyfn.data.datasets import (
    normalize as normalize,
)
from tinyfn.data.idx import IDXError as IDXError
from tinyfn.data.idx import read_idx as read_idx
from tinyfn.data.idx import write_idx as write_idx
