"""Tasks: what a kind of problem adds around a model (loss, metrics, TensorBoard extras, signatures).

The task named `x` in `zoo.TASKS` lives in `pipelines/tasks/x.py`. Its hooks get the run's spec, whose
`hparams` are this run's (defaults merged with overrides). Each task module provides:
  preprocess(spec, recipe, training) -> fn(x, y) -> (x, y)   on batches from `pipelines.data.load`
  compile(model, spec, recipe, steps_per_epoch)       loss, metrics, optimizer with its schedule
  callbacks(spec, run_dir, sample_batch) -> [Callback]   TensorBoard extras
  signatures(model, spec, hparams) -> {name: tf.function}   the SavedModel's serving signatures
  warmup_requests(spec, sample_batch) -> [(signature_name, {input: ndarray})]
  evaluate_export(loaded, ds) -> {metric: value}       metrics of an exported SavedModel on raw batches
and may provide
  load_splits(spec, recipe, dataset, *, data_dir, seed) -> Splits
                                                      when its data is not (x, y) batches of one dataset
                                                      (default: `default_load_splits`)
  load_evaluation(dataset, split, *, batch_size, data_dir, cache) -> tf.data.Dataset
                                                      the raw batches `evaluate_export` reads
                                                      (default: `pipelines.data.load`)
  model_card(spec, hparams, model) -> dict           entries added to the exported model card
  example_fn(features) -> (x, y)                      maps a TFDS example to (x, y) when the dataset's
                                                      supervised keys are not what the task trains on
  adapt(model, splits)                                fit preprocessing layers (e.g. a vocabulary) on the
                                                      train split, after the model is built, before compile
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from types import ModuleType

import tensorflow as tf

import zoo
from pipelines import data

TRAIN_SPLIT = "train[:90%]"
VALIDATION_SPLIT = "train[90%:]"
TEST_SPLIT = "test"


@dataclasses.dataclass
class Splits:
    """The pipelines a run trains, validates and tests on, and one batch for TensorBoard and warmup.

    `validation` may be None (no validation pass); `steps_per_epoch` is the number of train batches
    per epoch (Keras's `steps_per_epoch` when `train` repeats); `names` records the split names.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    sample_batch: object
    steps_per_epoch: int
    names: dict


def get(task: str) -> ModuleType:
    """The task module for `task` (a name from `zoo.TASKS`)."""
    if task not in zoo.TASKS:
        raise KeyError(f"unknown task {task!r}; one of {', '.join(zoo.TASKS)}")
    return importlib.import_module(f"{__name__}.{task}")


def default_load_splits(task: ModuleType, spec: zoo.ModelSpec, recipe: dict, dataset: str, *,
                        data_dir: str | os.PathLike | None, seed: int) -> Splits:
    """(x, y) batches of `dataset`: train = first 90% of `train`, validation = the rest, test = `test`."""
    load = dict(batch_size=recipe["batch_size"], data_dir=data_dir, example_fn=getattr(task, "example_fn", None))
    eval_preprocess = task.preprocess(spec, recipe, training=False)
    train_ds = data.load(dataset, TRAIN_SPLIT, shuffle=True, seed=seed,
                         preprocess=task.preprocess(spec, recipe, training=True), **load)
    # From its own uncached pipeline: abandoning an iterator of a cached dataset half-way truncates the cache.
    sample_batch = next(iter(data.load(dataset, VALIDATION_SPLIT, preprocess=eval_preprocess, cache=False, **load)))
    return Splits(
        train=train_ds,
        validation=data.load(dataset, VALIDATION_SPLIT, preprocess=eval_preprocess, **load),
        test=data.load(dataset, TEST_SPLIT, preprocess=eval_preprocess, **load),
        sample_batch=sample_batch,
        steps_per_epoch=int(train_ds.cardinality()),
        names={"train": TRAIN_SPLIT, "validation": VALIDATION_SPLIT, "test": TEST_SPLIT},
    )


def load_splits(task: ModuleType, spec: zoo.ModelSpec, recipe: dict, dataset: str, *,
                data_dir: str | os.PathLike | None = None, seed: int = 0) -> Splits:
    """The task's own `load_splits` if it has one, else `default_load_splits`."""
    loader = getattr(task, "load_splits", None)
    if loader is None:
        return default_load_splits(task, spec, recipe, dataset, data_dir=data_dir, seed=seed)
    return loader(spec, recipe, dataset, data_dir=data_dir, seed=seed)


def adapt(task: ModuleType, model, splits: Splits) -> None:
    """Run the task's `adapt` (preprocessing layers fitted on the train split), if it has one."""
    adapt_fn = getattr(task, "adapt", None)
    if adapt_fn is not None:
        adapt_fn(model, splits)
