"""Shared fixtures: a data dir with the synthetic dataset, and one trained + exported `cnn` run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "tfserving"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A TFDS data dir private to this test session."""
    return tmp_path_factory.mktemp("tensorflow_datasets")


@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory, data_dir):
    """One `cnn` run on the synthetic dataset (2 epochs), exported to <tmp>/models/cnn/1; batches 2-3 profiled."""
    from pipelines import train

    root = tmp_path_factory.mktemp("workdir")
    return train.train(
        "cnn",
        dataset="synthetic_fashion_mnist",
        recipe_overrides={"epochs": 2, "batch_size": 64},
        runs_dir=root / "runs",
        models_dir=root / "models",
        data_dir=data_dir,
        verbose=0,
        profile_batches=(2, 3),
    )
