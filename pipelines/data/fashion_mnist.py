"""Fashion-MNIST as a TFDS dataset built offline from the IDX files of Debian's `dataset-fashion-mnist`.

Features and splits match the TFDS catalog's `fashion_mnist` (image uint8 [28, 28, 1], ClassLabel
with the ten class names; 60,000 train / 10,000 test), so a model trained on either is the same.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from typing_extensions import override

from pipelines.errors import UserError
from zoo.labels import FASHION_MNIST_LABELS

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class MissingDataError(UserError, FileNotFoundError):
    """A dataset's source files are not on this machine; the message says how to get them."""


def source_dir() -> Path:
    """Directory holding the IDX files: $TFZOO_FASHION_MNIST_DIR, else Debian's install location."""
    return Path(os.environ.get("TFZOO_FASHION_MNIST_DIR") or DEBIAN_DIR)


def check_source(directory: Path | None = None) -> Path:
    """Return the IDX directory, or raise a one-line error naming the package to install."""
    directory = directory or source_dir()
    missing = [f for pair in FILES.values() for f in pair if not (directory / f).is_file()]
    if missing:
        raise MissingDataError(
            f"Fashion-MNIST IDX files not found in {directory} (missing {missing[0]}): "
            "run `apt-get install -y dataset-fashion-mnist` or set TFZOO_FASHION_MNIST_DIR"
        )
    return directory


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def features() -> tfds.features.FeaturesDict:
    """Fashion-MNIST's features (also the synthetic stand-in's): uint8 image [28, 28, 1], ten class names."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=list(FASHION_MNIST_LABELS)),
    })


class TfzooFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Zalando), from the local IDX files: 70,000 28x28 grayscale images, 10 classes."""

    VERSION = tfds.core.Version("3.0.1")
    RELEASE_NOTES = {"3.0.1": "Same features and splits as the TFDS catalog's fashion_mnist 3.0.1."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=features(),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = check_source()
        return {split: self._generate_examples(directory, *files) for split, files in FILES.items()}

    def _generate_examples(self, directory: Path, images_file: str, labels_file: str):
        images = read_idx(directory / images_file)
        labels = read_idx(directory / labels_file)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image[..., None], "label": int(label)}
