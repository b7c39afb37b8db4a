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
from typing_extensions import override

from pipelines import data
from pipelines.errors import UserError
from pipelines.tasks import plots
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import EpochSummaries
from pipelines.tasks.sequences import checked_text, cosine_adamw, share_right
from zoo.text_classifier import VECTORIZE

CONFUSION_EXAMPLES = 2048  # validation lines behind each epoch's confusion matrix


def class_names(dataset: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of `dataset`'s supervised label."""
    info = data.builder(dataset, data_dir).info
    return list(info.features[info.supervised_keys[1]].names)


class ConfusionMatrix(EpochSummaries):
    """Logs the confusion matrix of validation examples as an image, once per epoch."""

    def __init__(self, log_dir: str, texts: np.ndarray, labels: np.ndarray, names: list[str]):
        super().__init__(log_dir)
        self.texts, self.labels, self.names = tf.constant(texts), labels, names

    @override
    def summarize(self):
        predicted = np.argmax(self.model.predict(self.texts, verbose=0), axis=-1)
        matrix = tf.math.confusion_matrix(self.labels, predicted, num_classes=len(self.names)).numpy()
        tf.summary.image("confusion_matrix", plots.figure_to_image(plots.confusion_matrix_figure(matrix, self.names)),
                         description=f"{len(self.labels)} validation examples; rows: true class")


class TextClassification(Task):
    """Raw (text, label) pairs, sparse cross-entropy, accuracy, a confusion matrix per epoch (module doc)."""

    name = "text_classification"
    recipe_defaults = {"weight_decay": 1e-4}

    @override
    def load_splits(self, data_dir) -> Splits:
        """The default splits, with up to `CONFUSION_EXAMPLES` validation examples as the sample batch."""
        names = class_names(self.run.dataset, data_dir)
        if list(self.hparams["labels"]) != names:
            raise UserError(f"{self.run.model} predicts {list(self.hparams['labels'])} but {self.run.dataset} has "
                            f"classes {names}: train with --set labels={','.join(names)}")
        splits = super().load_splits(data_dir)
        texts, labels = (np.concatenate(parts)[:CONFUSION_EXAMPLES] for parts in zip(
            *splits.validation.take(-(-CONFUSION_EXAMPLES // self.recipe["batch_size"])).as_numpy_iterator(),
            strict=True))
        return dataclasses.replace(splits, sample_batch=(texts, labels))

    @override
    def adapt(self, model: keras.Model, splits: Splits) -> None:
        """Build the vocabulary of the model's TextVectorization layer from the train split's texts (one pass:
        the train pipeline repeats)."""
        model.get_layer(VECTORIZE).adapt(splits.train.take(splits.steps_per_epoch).map(lambda text, _: text))

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW with cosine decay over the run; sparse cross-entropy; accuracy."""
        model.compile(optimizer=cosine_adamw(self.recipe, steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: a confusion matrix per epoch."""
        texts, labels = sample_batch
        return [ConfusionMatrix(f"{run_dir}/validation", texts, labels, list(self.hparams["labels"]))]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`serving_default`: strings -> class probabilities, the most likely label and its probability."""
        labels = tf.constant(list(self.hparams["labels"]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serving_default(text):
            probabilities = model(checked_text(text), training=False)
            return {"probabilities": probabilities, "label": tf.gather(labels, tf.argmax(probabilities, axis=-1)),
                    "score": tf.reduce_max(probabilities, axis=-1)}

        return {"serving_default": serving_default}

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """Four real validation lines."""
        return [("serving_default", {"text": np.asarray(sample_batch[0][:4], dtype=object)})]

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """Accuracy of the exported `serving_default` on raw (text, label) batches."""
        fn = loaded.signatures["serving_default"]
        result = share_right(ds, lambda text: tf.argmax(fn(text=text)["probabilities"], axis=-1))
        return {"accuracy": result["share"], "examples": result["examples"]}
