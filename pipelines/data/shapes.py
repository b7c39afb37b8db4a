"""Procedural shapes: circles, squares and triangles on noisy backgrounds, for segmentation and detection.

Each 64x64 RGB image holds 1-4 shapes of random size, colour and position on a noisy background of
random colour. Shapes may overlap (a later shape hides part of an earlier one) but never hide more
than a third of another's box, so every labelled object stays visible. Each example carries the
per-pixel class mask (0 = background, 1 + index into `SHAPES_LABELS`) and one box per object
(normalized ymin, xmin, ymax, xmax, tight around the whole shape). Deterministic per split seed.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from typing_extensions import override

from zoo.labels import SHAPES_IMAGE_SIZE as IMAGE_SIZE
from zoo.labels import SHAPES_LABELS

MAX_OBJECTS = 4
MAX_OVERLAP = 1 / 3  # intersection over the smaller box, between any two shapes
_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5


def shape_mask(kind: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean [64, 64] mask of a circle, square or upward triangle centred at (cy, cx) with half-size r."""
    dy, dx = _YY - cy, _XX - cx
    if SHAPES_LABELS[kind] == "circle":
        return dy**2 + dx**2 <= r**2
    if SHAPES_LABELS[kind] == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    # Triangle with apex (cy - r, cx) and base from (cy + r, cx - r) to (cy + r, cx + r).
    return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of boxes a and b over the smaller one's area."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return h * w / smaller


def generate(rng: np.random.Generator) -> dict:
    """One example: image uint8 [64, 64, 3], mask uint8 [64, 64, 1], boxes float32 [n, 4], labels [n]."""
    background = rng.integers(0, 256, size=3)
    image = background + rng.normal(0, 12, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(len(SHAPES_LABELS)))
            r = rng.uniform(5, 14)
            cy, cx = rng.uniform(r, IMAGE_SIZE - r, size=2)
            pixels = shape_mask(kind, cy, cx, r)
            ys, xs = np.nonzero(pixels)
            box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32) / IMAGE_SIZE
            if all(_overlap(box, other) <= MAX_OVERLAP for other in boxes):
                break
        else:
            continue
        colour = rng.integers(0, 256, size=3)
        while np.abs(colour - background).sum() < 150:  # visible against the background
            colour = rng.integers(0, 256, size=3)
        image[pixels] = colour + rng.normal(0, 8, size=(len(ys), 3))
        mask[pixels] = kind + 1
        boxes.append(box)
        labels.append(kind)
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "mask": mask[..., None],
        "objects": {"bbox": np.array(boxes, np.float32).reshape(-1, 4), "label": np.array(labels, np.int64)},
    }


class TfzooShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes: 64x64 RGB, per-pixel class masks and boxes of circles, squares, triangles."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 5,000 train / 500 test, 1-4 shapes per image."}
    SPLITS = {"train": (5000, 0), "test": (500, 1)}  # examples, seed

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "mask": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=list(SHAPES_LABELS)),
                }),
            }),
            supervised_keys=("image", "mask"),
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(n, seed) for split, (n, seed) in self.SPLITS.items()}

    def _generate_examples(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, generate(rng)


class TfzooShapesSmall(TfzooShapes):
    """The same procedural shapes, 300 train / 100 test: for fast tests."""

    RELEASE_NOTES = {"1.0.0": "Initial release: 300 train / 100 test, 1-4 shapes per image."}
    SPLITS = {"train": (300, 2), "test": (100, 3)}
