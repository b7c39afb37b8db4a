"""Keras `fit` as the trainer runs it for every task that trains on a dataset (`Task.fit`'s default).

One iterator for the whole run on the train and validation pipelines, tf.data's autotuning off (no pause at
epoch boundaries), and the run's standard callbacks: BackupAndRestore (resume an interrupted run), TensorBoard
at epoch granularity, HParams, a weights checkpoint per epoch, the task's own extras and early stopping.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from typing_extensions import override

from pipelines import distributed, paths
from pipelines.errors import UserError


@dataclasses.dataclass
class FitOptions:
    """What the trainer gives a task's `fit`: where the run lives and how to report."""

    run_dir: Path
    run_id: str
    hparams: dict[str, bool | int | float | str]  # the HParams plugin's values (model.*, train.*)
    verbose: int | str = "auto"
    profile_batches: tuple[int, int] | None = None
    extra_callbacks: tuple = ()
    # A multi-worker run's non-chief worker: the chief's backup/ it resumes from (its own run_dir is temporary).
    chief_backup: Path | None = None


@dataclasses.dataclass
class Fitted:
    """What a task's `fit` did: the per-epoch history (Keras's `History.history` form), the epochs run in this
    session (fewer than the recipe's after a resume or an early stop), the examples (or environment steps) it
    trained on in this session, and the seconds it took."""

    history: dict[str, list[float]]
    epochs_run: int
    examples: int
    seconds: float
    stopped_early: bool = False


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback at update_freq="epoch" without its per-batch work: Keras 3 still converts and
    writes every batch's logs as `batch_*` scalars (to no writer) at every step. The model graph is written once.
    With `profile_batch` (first, last; 1-based, as Keras counts: calls of `steps_per_execution` steps), Keras's
    batch hooks run (without logs) so that they capture those batches' profile into train/plugins/profile
    (TensorBoard's Profile tab)."""

    def __init__(self, log_dir: str, profile_batch: tuple[int, int] | None = None):
        super().__init__(log_dir, update_freq="epoch", profile_batch=profile_batch or 0)
        self.profiling = bool(profile_batch)
        self.graph_written = False

    @override
    def on_train_batch_begin(self, batch, logs=None):
        if self.profiling:  # counts the batch; starts the trace at the first profiled one
            super().on_train_batch_begin(batch, None)

    @override
    def on_train_batch_end(self, batch, logs=None):
        if self.profiling or not self.graph_written:  # no logs: no batch scalars
            super().on_train_batch_end(batch, None)
            self.graph_written = True


def repeating(dataset: tf.data.Dataset | None) -> tuple[tf.data.Dataset | None, int | None]:
    """A finite dataset of known length as (dataset.repeat(), its length): the same batches in the same order
    every epoch, from one iterator; anything else as it is (None steps: Keras reads it to its end)."""
    if dataset is None:
        return None, None
    length = int(dataset.cardinality())
    return (dataset.repeat(), length) if length > 0 else (dataset, None)


def without_autotune(dataset: tf.data.Dataset | None) -> tf.data.Dataset | None:
    """`dataset` with tf.data's autotuning model off. With it on, an iterator's destructor waits for its
    autotune thread (`Model::OptimizeLoop`) to wake and stop: seconds of idle process each time Keras drops an
    iterator (the validation one after every evaluation, the train one at the end of fit; up to 50 s measured
    on resnet in bench/results/training-speed.md). The pipelines' AUTOTUNE parallelism then stays at its
    default (the core count) and prefetch buffers still grow on demand, which measured no slower here."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def per_call(steps_per_execution: int, steps_per_epoch: int, validation_steps: int | None) -> int:
    """The recipe's `steps_per_execution`, checked: Keras runs whole calls, so on a repeating dataset an epoch
    that is not a multiple of it would train (or validate) on steps past its end."""
    if steps_per_execution < 1:
        raise UserError(f"steps_per_execution={steps_per_execution}: it must be 1 or more")
    for name, steps in (("steps_per_epoch", steps_per_epoch), ("the validation steps", validation_steps)):
        if steps and steps % steps_per_execution:
            divisors = [k for k in range(1, min(steps, 64) + 1) if steps % k == 0]
            raise UserError(f"steps_per_execution={steps_per_execution} does not divide {name} ({steps}): "
                            f"--set steps_per_execution=K with K one of {divisors}")
    return steps_per_execution


def keras_fit(model: keras.Model, splits, recipe: dict[str, Any], task_callbacks: list,
              options: FitOptions) -> Fitted:
    """`model.fit` on `splits` (a `pipelines.tasks.Splits`) for the recipe's epochs, with the standard callbacks
    and the task's `task_callbacks`."""
    run_dir = options.run_dir
    backup = (distributed.WorkerBackupAndRestore(options.chief_backup, run_dir / "backup") if options.chief_backup
              else keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True))
    callbacks = [
        backup,
        EpochTensorBoard(str(run_dir), options.profile_batches),
        hp.KerasCallback(str(run_dir / "validation"), options.hparams, trial_id=options.run_id),
        keras.callbacks.ModelCheckpoint(str(paths.checkpoint_pattern(run_dir)), save_weights_only=True),
        *task_callbacks,
        *options.extra_callbacks,
    ]
    patience = recipe["early_stopping_patience"]
    if patience:
        if splits.validation is None:
            raise UserError("early_stopping_patience needs a validation split; this task has none")
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True))

    validation, validation_steps = repeating(without_autotune(splits.validation))
    model.steps_per_execution = per_call(recipe["steps_per_execution"], splits.steps_per_epoch, validation_steps)
    start = time.perf_counter()
    # One iterator for the whole run on both pipelines (`steps_per_epoch` and `validation_steps` batches an
    # epoch): a new iterator per epoch costs a pause at every boundary while the last one's tf.data threads stop.
    # shuffle=False: the tf.data pipeline already reshuffles; Keras cannot shuffle a Dataset.
    history = model.fit(without_autotune(splits.train), validation_data=validation,
                        validation_steps=validation_steps, epochs=recipe["epochs"],
                        steps_per_epoch=splits.steps_per_epoch, shuffle=False, callbacks=callbacks,
                        verbose=options.verbose)
    seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    return Fitted(history=history.history, epochs_run=epochs_run,
                  examples=epochs_run * splits.steps_per_epoch * recipe["batch_size"], seconds=seconds,
                  stopped_early=bool(patience) and history.epoch[-1:] != [recipe["epochs"] - 1])
