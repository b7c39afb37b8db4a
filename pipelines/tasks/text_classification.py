"""Text classification: raw (text, label) pairs of any TFDS text dataset, a confusion matrix per epoch.

The model's vocabulary is adapted on the train split before training (`adapt`). Any TFDS dataset with
supervised (text, label) keys works (`--dataset imdb_reviews --set labels=neg,pos` where the machine
can download it); the model's `labels` must be the dataset's class names, in order.

Signatures:
  serving_default   text string [N]: UTF-8, not blank (else INVALID_ARGUMENT)
                    ->  probabilities float32 [N, classes], label string [N], score float32 [N]
"""
from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines import data, tasks
from pipelines.tasks import plots, sequences
from pipelines.tasks.sequences import checked_text
from zoo import ModelSpec
from zoo.text_classifier import VECTORIZE

CONFUSION_EXAMPLES = 2048  # validation lines behind each epoch's confusion matrix

preprocess = sequences.preprocess


def class_names(dataset: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of `dataset`'s supervised label."""
    info = data.builder(dataset, data_dir).info
    return list(info.features[info.supervised_keys[1]].names)


def load_splits(spec: ModelSpec, recipe: dict, dataset: str, *, data_dir: str | os.PathLike | None,
                seed: int) -> tasks.Splits:
    """The default splits, with up to `CONFUSION_EXAMPLES` validation examples as the sample batch."""
    names = class_names(dataset, data_dir)
    if list(spec.hparams["labels"]) != names:
        raise ValueError(f"{spec.name} predicts {list(spec.hparams['labels'])} but {dataset} has classes {names}: "
                         f"train with --set labels={','.join(names)}")
    splits = tasks.default_load_splits(tasks.get(spec.task), spec, recipe, dataset, data_dir=data_dir, seed=seed)
    texts, labels = (np.concatenate(parts)[:CONFUSION_EXAMPLES] for parts in zip(
        *splits.validation.take(-(-CONFUSION_EXAMPLES // recipe["batch_size"])).as_numpy_iterator(), strict=True))
    return dataclasses.replace(splits, sample_batch=(texts, labels))


def adapt(model: keras.Model, splits: tasks.Splits) -> None:
    """Build the vocabulary of the model's TextVectorization layer from the train split's texts."""
    model.get_layer(VECTORIZE).adapt(splits.train.map(lambda text, label: text))


def compile(model: keras.Model, spec: ModelSpec, recipe: dict, steps_per_epoch: int) -> None:
    """AdamW with cosine decay over the run; sparse cross-entropy; accuracy."""
    model.compile(optimizer=sequences.cosine_adamw(recipe, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=bool(recipe["jit_compile"]))


class ConfusionMatrix(keras.callbacks.Callback):
    """Logs the confusion matrix of validation examples as an image, once per epoch."""

    def __init__(self, log_dir: str, texts: np.ndarray, labels: np.ndarray, names: list[str]):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.texts, self.labels, self.names = tf.constant(texts), labels, names

    def on_epoch_end(self, epoch, logs=None):
        predicted = np.argmax(self.model.predict(self.texts, verbose=0), axis=-1)
        matrix = tf.math.confusion_matrix(self.labels, predicted, num_classes=len(self.names)).numpy()
        image = plots.figure_to_image(plots.confusion_matrix_figure(matrix, self.names))
        with self.writer.as_default():
            tf.summary.image("confusion_matrix", image, step=epoch,
                             description=f"{len(self.labels)} validation examples; rows: true class")
        self.writer.flush()


def callbacks(spec: ModelSpec, run_dir: str, sample_batch) -> list[keras.callbacks.Callback]:
    """TensorBoard extras: a confusion matrix per epoch."""
    texts, labels = sample_batch
    return [ConfusionMatrix(f"{run_dir}/validation", texts, labels, list(spec.hparams["labels"]))]


def signatures(model: keras.Model, spec: ModelSpec, hparams: dict) -> dict:
    """`serving_default`: strings -> class probabilities, the most likely label and its probability."""
    labels = tf.constant(list(hparams["labels"]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        probabilities = model(checked_text(text), training=False)
        return {"probabilities": probabilities, "label": tf.gather(labels, tf.argmax(probabilities, axis=-1)),
                "score": tf.reduce_max(probabilities, axis=-1)}

    return {"serving_default": serving_default}


def warmup_requests(spec: ModelSpec, sample_batch) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Four real validation lines."""
    return [("serving_default", {"text": np.asarray(sample_batch[0][:4], dtype=object)})]


def evaluate_export(loaded, ds) -> dict:
    """Accuracy of the exported `serving_default` on raw (text, label) batches."""
    fn = loaded.signatures["serving_default"]
    result = sequences.share_right(ds, lambda text: tf.argmax(fn(text=text)["probabilities"], axis=-1))
    return {"accuracy": result["share"], "examples": result["examples"]}
