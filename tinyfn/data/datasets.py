"""Image classification datasets: Fashion-MNIST (or any MNIST-format IDX directory) and the embedded subset."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinyfn.data.idx import read_idx

__all__ = [
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "DEFAULT_FASHION_MNIST_DIR",
    "load_fashion_mnist",
    "load_idx_dir",
    "load_embedded",
    "load_dataset",
    "normalization",
    "normalize",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_EMBEDDED = "fashion_mnist_subset.npz"


class Dataset(NamedTuple):
    """``images (N, 1, H, W)`` uint8 in ``[0, 255]``, ``labels (N,)`` int32, and the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _check_split(split):
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_dir(split: str, data_dir, classes=None) -> Dataset:
    """Load ``split`` of an MNIST-format IDX directory (``train-images-idx3-ubyte[.gz]`` and friends)."""
    _check_split(split)
    directory = Path(data_dir)
    paths = [_find(directory, stem) for stem in _FILES[split]]
    if None in paths:
        missing = [stem for stem, p in zip(_FILES[split], paths) if p is None]
        raise FileNotFoundError(
            f"no {' and '.join(missing)}[.gz] in {directory}: expected the four MNIST-format IDX files there "
            "(for Fashion-MNIST on Debian/Ubuntu: `apt-get install dataset-fashion-mnist`, which puts them in "
            f"{DEFAULT_FASHION_MNIST_DIR})"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths[1]}: expected {len(images)} labels to match {paths[0]}, got shape {labels.shape}")
    labels = labels.astype(np.int32)
    n_classes = int(labels.max()) + 1
    if classes is not None and n_classes > len(classes):
        bad = int(np.argmax(labels >= len(classes)))
        raise ValueError(
            f"{paths[1]}: labels must be in 0..{len(classes) - 1} for the {len(classes)} classes given, got "
            f"{labels[bad]} at index {bad}"
        )
    if classes is None:
        classes = FASHION_MNIST_CLASSES if n_classes <= 10 else tuple(str(i) for i in range(n_classes))
    return Dataset(images[:, None], labels, tuple(classes))


def load_fashion_mnist(split: str = "train", data_dir=None) -> Dataset:
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000) from ``data_dir`` or the Debian location.

    Any MNIST-format IDX directory works the same way (MNIST itself included).
    """
    return load_idx_dir(split, DEFAULT_FASHION_MNIST_DIR if data_dir is None else data_dir)


def load_embedded(split: str = "train") -> Dataset:
    """The Fashion-MNIST subset shipped inside tinyfn: 8,000 train and 2,000 test images, stratified by class.

    Made by ``scripts/make_embedded_data.py`` from the Debian package; Fashion-MNIST
    is © Zalando SE, MIT licence.
    """
    _check_split(split)
    with resources.files("tinyfn.data").joinpath(_EMBEDDED).open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            return Dataset(
                npz[f"{split}_images"][:, None], npz[f"{split}_labels"].astype(np.int32), FASHION_MNIST_CLASSES
            )


def load_dataset(name: str, split: str) -> Dataset:
    """``"embedded"``, ``"fashion-mnist"`` (the Debian location) or a path to an IDX directory."""
    if name == "embedded":
        return load_embedded(split)
    if name == "fashion-mnist":
        return load_fashion_mnist(split)
    if Path(name).is_dir():
        return load_idx_dir(split, name)
    raise ValueError(f"data must be 'embedded', 'fashion-mnist' or an IDX directory, got {name!r} (not a directory)")


def normalization(images) -> tuple[float, float]:
    """Mean and standard deviation of ``images`` scaled to ``[0, 1]`` (computed on the training set)."""
    scaled = np.asarray(images, np.float64) / 255.0
    return float(scaled.mean()), float(scaled.std())


def normalize(images, mean: float, std: float) -> np.ndarray:
    """``(images / 255 - mean) / std`` as float32."""
    return ((np.asarray(images, np.float32) / np.float32(255.0)) - np.float32(mean)) / np.float32(std)
