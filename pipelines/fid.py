"""FD-cnn: the Fréchet distance between two image sets in the feature space of the zoo's trained `cnn`.

As FID (Heusel et al., 2017) does with Inception, but with the penultimate layer (64 units) of tfzoo's
Fashion-MNIST classifier: d = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Values are
comparable only between runs that use the same classifier; the distance between the real train and
test splits is the floor a perfect generator would reach with finitely many samples.

The classifier is named, never guessed: a `cnn` training run directory (its last checkpoint) or one checkpoint
file, given by the recipe's `fd_classifier` (`--set fd_classifier=runs/cnn/<run-id>`) or $TFZOO_FD_CLASSIFIER.
The checkpoint's path and SHA-256 are recorded in the run's metrics and the exported model card, and
`tfzoo evaluate` scores with the checkpoint the card names, so the same model gets the same score tomorrow.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np

import zoo
from pipelines import paths
from pipelines.errors import UserError

CLASSIFIER_ENV = "TFZOO_FD_CLASSIFIER"


class Classifier:
    """A trained zoo `cnn`: penultimate-layer features and predicted classes of images in [0, 1].

    `path` is a run directory (its last checkpoint) or a checkpoint file in a run's checkpoints/.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            checkpoints = paths.checkpoints(path)
            if not checkpoints:
                raise UserError(f"{path} has no checkpoints: name a trained cnn run (tfzoo train cnn)")
            self.checkpoint, run_dir = checkpoints[max(checkpoints)], path
        elif path.is_file():
            self.checkpoint, run_dir = path, path.parent.parent
        else:
            raise UserError(f"FD-cnn classifier {path} does not exist: name a cnn run directory or checkpoint")
        config = json.loads((run_dir / "config.json").read_text())
        model = zoo.build(config["model"], **config["hparams"])
        model.load_weights(str(self.checkpoint))
        self.sha256 = hashlib.sha256(self.checkpoint.read_bytes()).hexdigest()
        self.model = keras.Model(model.input, [model.get_layer("probabilities").input, model.output])

    def describe(self) -> dict[str, str]:
        """What names this classifier exactly: its checkpoint's path and SHA-256."""
        return {"checkpoint": str(self.checkpoint.resolve()), "sha256": self.sha256}

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, 64], predicted class ids [N]) of images [N, 28, 28, 1] in [0, 1]."""
        images = np.asarray(images, np.float32)
        outputs = [self.model(images[i:i + batch_size], training=False) for i in range(0, len(images), batch_size)]
        features = np.concatenate([np.asarray(f) for f, _ in outputs]).astype(np.float64)
        return features, np.concatenate([np.argmax(p, axis=-1) for _, p in outputs])


def named_classifier(name: str | os.PathLike | None) -> Classifier | None:
    """The classifier `name` (a cnn run directory or checkpoint), else the one $TFZOO_FD_CLASSIFIER names,
    else None (FD-cnn is off)."""
    name = name or os.environ.get(CLASSIFIER_ENV)
    return Classifier(name) if name else None


def recorded_classifier(record: dict) -> Classifier:
    """The classifier a model card recorded (`Classifier.describe()`), checked to be the same file."""
    classifier = Classifier(record["checkpoint"])
    if classifier.sha256 != record["sha256"]:
        raise UserError(f"the FD-cnn classifier {record['checkpoint']} changed since the model was exported "
                        f"(SHA-256 {classifier.sha256[:12]}, recorded {record['sha256'][:12]}): set "
                        f"{CLASSIFIER_ENV} to score with another classifier, knowing the figures will differ")
    return classifier


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
