"""A tiny deterministic stand-in for Fashion-MNIST, for fast tests: same features, learnable classes.

Class k is a bright bar whose position and orientation depend on k, drawn on seeded noise, so a
small model learns it in one epoch and results are identical on every machine.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from typing_extensions import override

from pipelines.data.fashion_mnist import features

SPLITS = {"train": (600, 0), "test": (200, 1)}  # examples, seed


def synthetic_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28x1 uint8 image of class `label` (0-9) with seeded noise."""
    image = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
    offset = 3 + 4 * (label % 5) + int(rng.integers(-1, 2))
    if label < 5:
        image[offset : offset + 3, 2:26] = 230
    else:
        image[2:26, offset : offset + 3] = 230
    return image[..., None]


class TfzooSyntheticFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Synthetic Fashion-MNIST look-alike: 28x28x1 bars on noise, 10 classes, 600 train / 200 test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=features(),
            supervised_keys=("image", "label"),
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(n, seed) for split, (n, seed) in SPLITS.items()}

    def _generate_examples(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        for i in range(n):
            label = i % 10
            yield i, {"image": synthetic_image(label, rng), "label": label}
