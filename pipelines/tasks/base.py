"""The task contract: what the trainer, the exporter and the evaluator ask of every kind of problem.

A task is what a kind of problem adds around a model: how its data is loaded and preprocessed, its loss,
metrics and optimizer, its TensorBoard extras, the serving signatures it exports, its warmup requests and
how an exported version is evaluated. Each module of `pipelines.tasks` defines one `Task` subclass;
`pipelines.tasks.get(name)` returns it.

A Task is made for one run (`Task(run_config)`) and reads the run's hyperparameters and recipe from it,
never from the registry's spec. Evaluating an exported version needs no run: `load_evaluation` and
`evaluate_export` are class methods, given what the model card recorded.

Hooks, in the order the trainer calls them (those without a default must be written by every task):
  load_splits(data_dir)            -> Splits       train/validation/test pipelines and a sample batch
  preprocess(training)             -> fn(x, y)     the per-batch mapper `load_splits` applies (default: none)
  adapt(model, splits)                             fit preprocessing layers on the train split (default: none)
  compile(model, steps_per_epoch)                  loss, metrics, optimizer and its schedule (required)
  callbacks(run_dir, sample_batch) -> [Callback]   TensorBoard extras (default: none)
  fit(model, splits, options)      -> Fitted        train (default: Keras fit with the standard callbacks)
  test(model, splits)              -> {metric: value}   the test split's metrics (default: Keras evaluate)
  signatures(model)                -> {name: tf.function}   the SavedModel's serving signatures (required)
  warmup_requests(sample_batch)    -> [(signature, {input: array})]   replayed by the server (default: none)
  model_card(model)                -> dict          entries a client needs in the model card (default: none)
  load_evaluation(dataset, split, batch_size=, data_dir=)   the raw batches `evaluate_export` reads
  evaluate_export(loaded, ds, card) -> {metric: value}  metrics of an exported SavedModel (required)
  calibration_inputs(dataset, count=)   train examples as serving_default takes them (int8 calibration)
Before the run exists, `dataset_hparams(dataset)` (a class method) gives the hyperparameters the dataset fixes
(an environment's observation shape and action count); `pipelines.config.resolve` applies them.
An override is marked `@override` (typing_extensions), so a renamed hook in the base fails loudly.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from pipelines import data, fitting
from pipelines.config import RunConfig
from pipelines.fitting import FitOptions, Fitted

TRAIN_SPLIT = "train[:90%]"
VALIDATION_SPLIT = "train[90%:]"
TEST_SPLIT = "test"

Batch = Any  # one batch of a split: (x, y) as the split yields it
WarmupRequests = list[tuple[str, dict[str, np.ndarray]]]


@dataclasses.dataclass
class Splits:
    """The pipelines a run trains, validates and tests on, and one batch for TensorBoard and warmup.

    `train` repeats without end (one iterator for the whole run: no pause at epoch boundaries while a finished
    epoch's iterator shuts down); `steps_per_epoch` train batches make an epoch. `validation` is finite, or
    None for no validation pass; `names` records which split is which. A task that learns by acting (in an
    environment, not on a dataset) has no pipelines (None) and names its seeds instead.
    """

    train: tf.data.Dataset | None
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    sample_batch: Batch
    steps_per_epoch: int
    names: dict[str, str]


def identity(x, y):
    """A batch as it is."""
    return x, y


class Task:
    """The base of every task: the hooks' documentation and defaults (see the module doc)."""

    name: ClassVar[str]
    # Recipe entries this task's hooks read, with their defaults (a run may set these and the trainer's only).
    recipe_defaults: ClassVar[Mapping[str, Any]] = {}
    # The trainer's recipe entries (pipelines.config.TRAINER_RECIPE) this task does not read: --set refuses them.
    unused_trainer_keys: ClassVar[frozenset[str]] = frozenset()
    # How a TFDS example (its feature dict) becomes (x, y); None: the dataset's supervised keys.
    example_fn: ClassVar[Callable | None] = None
    # The split an exported version's quality is measured on (`load_evaluation`): the test split, where the
    # dataset has one.
    evaluation_split: ClassVar[str] = TEST_SPLIT
    # Why `fit` cannot train on several workers (tf.distribute splitting its batches), or None: Keras `fit` can.
    single_worker_reason: ClassVar[str | None] = None

    def __init__(self, run: RunConfig):
        self.run = run
        self.hparams, self.recipe = run.hparams, run.recipe

    @classmethod
    def dataset_hparams(cls, dataset: str) -> dict[str, Any]:  # noqa: ARG003 (no dataset fixes any by default)
        """Hyperparameters that `dataset` fixes (e.g. an environment's action count): applied over the model's
        defaults; a `--set` that disagrees is refused."""
        return {}

    # --- data -------------------------------------------------------------------------------------------------

    def preprocess(self, training: bool) -> Callable:  # noqa: ARG002 (the default maps no batch)
        """The per-batch mapper (x, y) -> (x, y) of the train (`training`) or the evaluation pipelines."""
        return identity

    def load_splits(self, data_dir: str | os.PathLike | None) -> Splits:
        """(x, y) batches of the run's dataset: train = the first 90% of `train` (shuffled, repeating),
        validation = the rest, test = `test`; the sample batch is the first validation batch."""
        load = dict(batch_size=self.recipe["batch_size"], data_dir=data_dir, example_fn=self.example_fn)
        dataset, evaluation = self.run.dataset, self.preprocess(training=False)
        train = data.load(dataset, TRAIN_SPLIT, shuffle=True, seed=self.run.seed,
                          preprocess=self.preprocess(training=True), **load)
        # From its own uncached pipeline: abandoning an iterator of a cached dataset half-way truncates the cache.
        sample_batch = next(iter(data.load(dataset, VALIDATION_SPLIT, preprocess=evaluation, cache=False, **load)))
        return Splits(
            train=train.repeat(), steps_per_epoch=int(train.cardinality()),
            validation=data.load(dataset, VALIDATION_SPLIT, preprocess=evaluation, **load),
            test=data.load(dataset, TEST_SPLIT, preprocess=evaluation, **load),
            sample_batch=sample_batch,
            names={"train": TRAIN_SPLIT, "validation": VALIDATION_SPLIT, "test": TEST_SPLIT},
        )

    def adapt(self, model: keras.Model, splits: Splits) -> None:  # noqa: ARG002 (nothing to adapt by default)
        """Fit the model's preprocessing layers (e.g. a vocabulary) on the train split, before `compile`."""

    # --- training ---------------------------------------------------------------------------------------------

    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """`model.compile` with the task's loss, metrics and optimizer (its schedule over the whole run)."""
        raise NotImplementedError(f"{type(self).__name__}.compile")

    def callbacks(self, run_dir: Path, sample_batch: Batch) -> list[keras.callbacks.Callback]:  # noqa: ARG002
        """TensorBoard extras (images, text, plots), written under `run_dir` (validation/ or train/)."""
        return []

    def fit(self, model: keras.Model, splits: Splits, options: FitOptions) -> Fitted:
        """Train the compiled `model` for the recipe's epochs: Keras `fit` on the splits with the run's standard
        callbacks (backup-and-restore, TensorBoard, HParams, checkpoints, early stopping) and this task's."""
        return fitting.keras_fit(model, splits, dict(self.recipe), self.callbacks(options.run_dir,
                                                                                  splits.sample_batch), options)

    def test(self, model: keras.Model, splits: Splits) -> dict[str, float]:
        """The trained model's metrics on the test split (the trainer records them as test_<metric>)."""
        return model.evaluate(fitting.without_autotune(splits.test), return_dict=True, verbose=0)

    # --- export -----------------------------------------------------------------------------------------------

    def signatures(self, model: keras.Model) -> dict[str, Callable]:
        """The serving signatures, name -> tf.function with an input signature; `serving_default` first."""
        raise NotImplementedError(f"{type(self).__name__}.signatures")

    def warmup_requests(self, sample_batch: Batch) -> WarmupRequests:  # noqa: ARG002 (default: none)
        """Real requests the server replays before the version serves (TF Serving's warmup records)."""
        return []

    def model_card(self, model: keras.Model) -> dict[str, Any]:  # noqa: ARG002 (default: nothing more)
        """Entries of the model card beyond name, task, hyperparameters, labels and metrics."""
        return {}

    # --- evaluation of an exported version (no run needed) ----------------------------------------------------

    @classmethod
    def load_evaluation(cls, dataset: str, split: str, *, batch_size: int,
                        data_dir: str | os.PathLike | None = None) -> tf.data.Dataset:
        """The raw batches of `split` that `evaluate_export` reads."""
        return data.load(dataset, split, batch_size=batch_size, data_dir=data_dir, cache=False,
                         example_fn=cls.example_fn)

    @classmethod
    def calibration_inputs(cls, dataset: str, *, count: int, data_dir: str | os.PathLike | None = None
                           ) -> list[dict[str, np.ndarray]]:
        """`count` examples of the train split, one request each ({input: batch of 1}), as `serving_default`
        takes them: the representative data of full-integer quantization (never test examples)."""
        from pipelines.errors import UserError

        del dataset, count, data_dir  # the default has none
        raise UserError(f"{cls.name} models have no calibration inputs for full-integer quantization")

    @classmethod
    def evaluate_export(cls, loaded, ds: tf.data.Dataset, card: Mapping[str, Any]) -> dict[str, Any]:
        """Metrics of an exported SavedModel (`tf.saved_model.load`, its model card `card`), computed through its
        signatures on the raw batches `ds` of `load_evaluation`."""
        raise NotImplementedError(f"{cls.__name__}.evaluate_export")
