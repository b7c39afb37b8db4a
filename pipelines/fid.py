"""FD-cnn: the Fréchet distance between two image sets in the feature space of the zoo's trained `cnn`.

As FID (Heusel et al., 2017) does with Inception, but with the penultimate layer (64 units) of tfzoo's
Fashion-MNIST classifier: d = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Values are
comparable only between runs that use the same classifier; the distance between the real train and
test splits is the floor a perfect generator would reach with finitely many samples.

The classifier is a `cnn` training run (its last checkpoint): $TFZOO_FD_CLASSIFIER names one
(runs/cnn/<run-id>), else the newest run in the runs dir trained on `fashion_mnist`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

import zoo
from pipelines import paths

CLASSIFIER_ENV = "TFZOO_FD_CLASSIFIER"
CLASSIFIER_DATASET = "fashion_mnist"


class Classifier:
    """A trained zoo `cnn` run: penultimate-layer features and predicted classes of images in [0, 1]."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        config = json.loads((self.run_dir / "config.json").read_text())
        checkpoints = sorted((self.run_dir / "checkpoints").glob("epoch-*.weights.h5"))
        if not checkpoints:
            raise FileNotFoundError(f"{self.run_dir} has no checkpoints: train it with `tfzoo train cnn`")
        model = zoo.build(config["model"], **config["hparams"])
        model.load_weights(str(checkpoints[-1]))
        self.checkpoint = checkpoints[-1]
        self.model = keras.Model(model.input, [model.get_layer("probabilities").input, model.output])

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, 64], predicted class ids [N]) of images [N, 28, 28, 1] in [0, 1]."""
        images = np.asarray(images, np.float32)
        outputs = [self.model(images[i:i + batch_size], training=False) for i in range(0, len(images), batch_size)]
        features = np.concatenate([np.asarray(f) for f, _ in outputs]).astype(np.float64)
        return features, np.concatenate([np.argmax(p, axis=-1) for _, p in outputs])


def find_classifier(runs_dir: str | os.PathLike | None = None) -> Classifier | None:
    """The run named by $TFZOO_FD_CLASSIFIER, else the newest `cnn` run on Fashion-MNIST, else None."""
    if os.environ.get(CLASSIFIER_ENV):
        return Classifier(os.environ[CLASSIFIER_ENV])
    for run_dir in sorted((paths.runs_dir(runs_dir) / "cnn").glob("*"), reverse=True):
        config = run_dir / "config.json"
        if (config.is_file() and json.loads(config.read_text()).get("dataset") == CLASSIFIER_DATASET
                and any((run_dir / "checkpoints").glob("epoch-*.weights.h5"))):
            return Classifier(run_dir)
    return None


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix:
    # eigh on it is stable where a general matrix square root of S_a S_b is not.
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    mean_term = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)
