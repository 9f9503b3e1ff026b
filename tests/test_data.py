"""IDX files and datasets."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from tinyfn.data import (
    DEFAULT_FASHION_MNIST_DIR,
    IDXError,
    load_dataset,
    load_embedded,
    load_fashion_mnist,
    load_idx_dir,
    normalization,
    normalize,
    read_idx,
    write_idx,
)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_write_then_read_round_trips(tmp_path, name, dtype):
    a = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_reads_the_mnist_header_by_hand(tmp_path):
    raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    (tmp_path / "x").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "raw, match",
    [
        (bytes([0, 1, 0x08, 1, 0, 0, 0, 1, 7]), r"bad magic number 0x00010801"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 7]), r"bad magic number 0x00000701"),
        (bytes([0, 0, 0x08, 0]), r"bad magic number 0x00000800"),
        (bytes([0, 0, 0x08, 2, 0, 0, 0, 2]), r"truncated header"),
        (
            bytes([0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2]),
            r"file is truncated: dimensions \(4,\) of uint8 need 12 bytes, found 10",
        ),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 1, 1, 2]), r"longer than its header says"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 0]), r"a dimension is zero"),
        (bytes([0, 0]), r"too short"),
    ],
)
def test_malformed_files_raise_a_clear_error(tmp_path, raw, match):
    (tmp_path / "bad").write_bytes(raw)
    with pytest.raises(IDXError, match=match):
        read_idx(tmp_path / "bad")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    (tmp_path / "a.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(IDXError, match="gzip stream is truncated or corrupted"):
        read_idx(tmp_path / "a.gz")


def _idx_dir(path, n_train=12, n_test=5, wrong_count=False):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(path / f"{prefix}-labels-idx1-ubyte", (np.arange(n + wrong_count) % 10).astype(np.uint8))
    return path


def test_any_idx_directory_loads(tmp_path):
    d = load_idx_dir("train", _idx_dir(tmp_path))
    assert d.images.shape == (12, 1, 28, 28) and d.images.dtype == np.uint8
    assert d.labels.dtype == np.int32 and list(d.labels[:3]) == [0, 1, 2] and len(d.classes) == 10
    assert len(load_dataset(str(tmp_path), "test")) == 5


def test_missing_and_inconsistent_files(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"no train-images-idx3-ubyte and train-labels-idx1-ubyte\[.gz\] in .*apt-get install dataset-fashion-mnist"
        ),
    ):
        load_idx_dir("train", tmp_path)
    _idx_dir(tmp_path, wrong_count=True)
    with pytest.raises(ValueError, match="expected 12 labels"):
        load_idx_dir("train", tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_idx_dir("valid", tmp_path)
    with pytest.raises(ValueError, match="data must be 'embedded', 'fashion-mnist' or an IDX directory"):
        load_dataset("/no/such/dir", "train")


def test_embedded_subset_is_stratified_and_small():
    train, test = load_embedded("train"), load_embedded("test")
    assert train.images.shape == (8000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert np.bincount(train.labels).tolist() == [800] * 10 and np.bincount(test.labels).tolist() == [200] * 10
    import tinyfn.data

    assert (Path(tinyfn.data.__file__).parent / "fashion_mnist_subset.npz").stat().st_size <= 5_000_000


def test_normalisation():
    images = np.array([[[[0, 255]]], [[[255, 255]]]], np.uint8)
    mean, std = normalization(images)
    assert mean == pytest.approx(0.75) and std == pytest.approx(np.sqrt(0.1875))
    z = normalize(images, mean, std)
    assert z.dtype == np.float32 and abs(float(z.mean())) < 1e-6 and float(z.std()) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_full_fashion_mnist_from_the_debian_package():
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 1, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10


def test_labels_outside_the_classes_name_the_file(tmp_path):
    _idx_dir(tmp_path)
    with pytest.raises(
        ValueError, match=r"train-labels-idx1-ubyte: labels must be in 0\.\.4 for the 5 classes given, got 5 at index 5"
    ):
        load_idx_dir("train", tmp_path, classes=tuple("abcde"))
