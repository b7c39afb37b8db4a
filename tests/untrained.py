"""A run's model exported untrained: the baseline that a test's quality bound must be shown to fail."""
from __future__ import annotations

from pathlib import Path

import keras

from pipelines import export as exporter
from pipelines import tasks
from pipelines.train import RunResult


def export_untrained(run: RunResult, models_dir: Path, data_dir: Path) -> Path:
    """The model of `run` with its hyperparameters and seed but no training, exported as the run's was (the same
    task, signatures and model card; a vocabulary adapted as in training): what a model that learned nothing
    scores through the same `tfzoo evaluate`."""
    config = run.config
    task = tasks.get(config.task)(config)
    keras.utils.set_random_seed(config.seed)
    model = config.build()
    splits = task.load_splits(data_dir)
    task.adapt(model, splits)
    return exporter.export_model(model, task, splits.sample_batch, models_dir, {"dataset": config.dataset})
