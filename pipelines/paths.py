"""Where tfzoo keeps datasets, runs and models: the path conventions, defined once."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """TFDS data dir: `override`, else $TFZOO_DATA_DIR, else TFDS's default ~/tensorflow_datasets."""
    return Path(override or os.environ.get("TFZOO_DATA_DIR") or Path.home() / "tensorflow_datasets")


def runs_dir(override: str | os.PathLike | None = None) -> Path:
    """Root of training runs (TensorBoard logdir): `override`, else $TFZOO_RUNS_DIR, else ./runs."""
    return Path(override or os.environ.get("TFZOO_RUNS_DIR") or "runs")


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """Root of exported models (TF Serving layout): `override`, else $TFZOO_MODELS_DIR, else ./models."""
    return Path(override or os.environ.get("TFZOO_MODELS_DIR") or "models")


# A run's weights after each epoch: runs/<model>/<run-id>/checkpoints/epoch-001.weights.h5, ...
CHECKPOINT_FILE = "epoch-{epoch:03d}.weights.h5"


def checkpoint_pattern(run_dir: str | os.PathLike) -> Path:
    """A run's checkpoint path with `{epoch}` left for Keras's ModelCheckpoint to fill in."""
    return Path(run_dir) / "checkpoints" / CHECKPOINT_FILE


def checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """The checkpoints a run has, by epoch."""
    found = {}
    for path in (Path(run_dir) / "checkpoints").glob(CHECKPOINT_FILE.replace("{epoch:03d}", "*")):
        epoch = path.name.removeprefix("epoch-").split(".")[0]
        if epoch.isdigit():
            found[int(epoch)] = path
    return found
