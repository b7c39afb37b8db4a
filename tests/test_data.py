"""Datasets: TFDS builders that work offline, with clear errors when their source is missing."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from pipelines import data
from pipelines.data import fashion_mnist
from zoo.labels import FASHION_MNIST_LABELS


def test_synthetic_dataset_is_tfds_loadable_with_fashion_mnist_features(data_dir):
    data.builder("synthetic_fashion_mnist", data_dir)
    ds, info = tfds.load("tfzoo_synthetic_fashion_mnist", split="test", data_dir=str(data_dir), with_info=True)
    assert info.splits["train"].num_examples == 600 and info.splits["test"].num_examples == 200
    assert info.features["label"].names == list(FASHION_MNIST_LABELS)
    example = next(iter(ds))
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == "uint8"


def test_synthetic_dataset_is_identical_across_builds(tmp_path, data_dir):
    first = data.builder("synthetic_fashion_mnist", data_dir).as_dataset(split="train")
    second = data.builder("synthetic_fashion_mnist", tmp_path).as_dataset(split="train")
    for a, b in zip(first.take(20), second.take(20), strict=False):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_load_yields_batched_preprocessed_pairs(data_dir):
    ds = data.load("synthetic_fashion_mnist", "train[:100]", batch_size=32, data_dir=data_dir,
                   preprocess=lambda x, y: (x, y))
    shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(32, 28, 28, 1)] * 3 + [(4, 28, 28, 1)]


def test_missing_fashion_mnist_files_name_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TFZOO_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(data.MissingDataError, match="apt-get install -y dataset-fashion-mnist"):
        data.builder("fashion_mnist", tmp_path / "tfds")


def test_read_idx_rejects_files_that_are_not_idx(tmp_path):
    import gzip

    path = tmp_path / "junk.gz"
    path.write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        fashion_mnist.read_idx(path)


@pytest.mark.skipif(not fashion_mnist.DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_builds_from_the_debian_idx_files(data_dir):
    info = data.builder("fashion_mnist", data_dir).info
    assert info.splits["train"].num_examples == 60_000
    assert info.splits["test"].num_examples == 10_000
    ds = tfds.load("tfzoo_fashion_mnist", split="test[:1000]", data_dir=str(data_dir), as_supervised=True)
    labels = np.array([int(y) for _, y in ds])
    assert set(labels) == set(range(10))  # every class present in the first 1000 test images
