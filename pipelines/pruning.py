"""Magnitude pruning for Keras 3 models (tensorflow-model-optimization works with Keras 2 only).

The schedule is Zhu & Gupta's (2017) polynomial one, as tfmot's `PolynomialDecay`: the sparsity of every
prunable kernel (Dense and convolution kernels; biases and normalization are kept) rises from 0 to the target
over the fine-tuning as s(t) = s_f * (1 - (1 - t / T)^3), recomputed every `frequency` steps by zeroing each
kernel's smallest magnitudes (a mask); after every training step the masks are applied again, so pruned
weights stay zero while the others learn.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from typing_extensions import override

from pipelines import fitting
from pipelines.train import make_run_id


def prunable(model: keras.Model) -> list:
    """The kernels pruning applies to: those of Dense and convolution layers."""
    return [layer.kernel for layer in model._flatten_layers()
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                                  keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose))]


def sparsity(kernels: list) -> float:
    """The share of zeros over `kernels`."""
    sizes = [int(np.prod(k.shape)) for k in kernels]
    zeros = [int(np.sum(keras.ops.convert_to_numpy(k) == 0)) for k in kernels]
    return sum(zeros) / max(sum(sizes), 1)


class MagnitudePruning(keras.callbacks.Callback):
    """Zero the smallest-magnitude weights of each prunable kernel on the polynomial schedule."""

    def __init__(self, target: float, total_steps: int, frequency: int | None = None):
        super().__init__()
        self.target, self.total_steps = target, max(1, total_steps)
        # Masks recomputed 20 times over the schedule (every 100 steps at most), as tfmot's default frequency.
        self.frequency = frequency or max(1, min(100, self.total_steps // 20))
        self.masks: list[np.ndarray] = []

    def sparsity_at(self, step: int) -> float:
        return self.target * (1 - (1 - min(step, self.total_steps) / self.total_steps) ** 3)

    def update_masks(self, level: float) -> None:
        self.masks = []
        for kernel in self.kernels:
            values = np.abs(keras.ops.convert_to_numpy(kernel))
            k = math.ceil(level * values.size)
            threshold = np.partition(values.ravel(), k - 1)[k - 1] if k else -1.0
            self.masks.append((values > threshold).astype(values.dtype))

    def apply(self) -> None:
        for kernel, mask in zip(self.kernels, self.masks, strict=True):
            kernel.assign(keras.ops.convert_to_numpy(kernel) * mask)

    @override
    def on_train_begin(self, logs=None):
        self.kernels = prunable(self.model)
        self.update_masks(0.0)

    @override
    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.frequency == 0 or step >= self.total_steps:
            self.update_masks(self.sparsity_at(step))
        self.apply()

    @override
    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = sparsity(self.kernels)

    @override
    def on_train_end(self, logs=None):
        self.update_masks(self.target)
        self.apply()


def prune(model: keras.Model, task, splits, settings: dict, *, runs_dir, seed: int = 0
          ) -> tuple[float, fitting.Fitted]:
    """Fine-tune `model` on its task's train split for `prune_epochs` at `prune_learning_rate` while pruning it
    to `sparsity`; TensorBoard logs under `runs_dir`/<run id>. Returns the sparsity reached and the fit (its
    history holds the validation metrics of every epoch)."""
    keras.utils.set_random_seed(seed)
    run = dataclasses.replace(task.run, recipe={**task.run.recipe, "epochs": settings["prune_epochs"],
                                                "learning_rate": settings["prune_learning_rate"],
                                                "warmup_epochs": 0, "early_stopping_patience": 0,
                                                # the masks are applied after every step
                                                "steps_per_execution": 1})
    task = type(task)(run)
    task.compile(model, splits.steps_per_epoch)
    pruning = MagnitudePruning(settings["sparsity"], total_steps=int(0.8 * settings["prune_epochs"]
                                                                     * splits.steps_per_epoch))
    run_id = make_run_id()
    fitted = fitting.keras_fit(model, splits, dict(run.recipe), [pruning],
                               fitting.FitOptions(run_dir=runs_dir / run_id, run_id=run_id,
                                                  hparams={"sparsity": settings["sparsity"]}, verbose=2))
    return round(sparsity(prunable(model)), 4), fitted
