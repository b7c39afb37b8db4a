"""Text classification: raw (text, label) pairs of any TFDS text dataset; TensorBoard: the validation confusion
matrix and per-class PR curves of each epoch, the token embeddings in the projector.

The model's vocabulary is adapted on the train split before training (`adapt`). Any TFDS dataset with
supervised (text, label) keys works (`--dataset imdb_reviews --set labels=neg,pos` where the machine
can download it); the model's `labels` must be the dataset's class names, in order.

Signatures:
  serving_default   text string [N]: UTF-8, not blank (else INVALID_ARGUMENT)
                    ->  probabilities float32 [N, classes], label string [N], score float32 [N]
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines import data
from pipelines.errors import UserError
from pipelines.metrics import ClassifierCurves
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import ClassifierSummaries, Embedding, Projector, metadata_text
from pipelines.tasks.sequences import checked_text, cosine_adamw, share_right
from zoo.text_classifier import VECTORIZE


def class_names(dataset: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of `dataset`'s supervised label."""
    info = data.builder(dataset, data_dir).info
    return list(info.features[info.supervised_keys[1]].names)


def token_embeddings(model: keras.Model) -> Embedding:
    """The classifier's token embedding, one point per vocabulary entry, labelled by its token."""
    vocabulary = model.get_layer(VECTORIZE).get_vocabulary()
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.Embedding))
    vectors = keras.ops.convert_to_numpy(layer.embeddings)[:len(vocabulary)]
    return Embedding(vectors, [metadata_text(token) for token in vocabulary])


class TextClassification(Task):
    """Raw (text, label) pairs, sparse cross-entropy, accuracy, a confusion matrix per epoch (module doc)."""

    name = "text_classification"
    recipe_defaults = {"weight_decay": 1e-4}

    @override
    def load_splits(self, data_dir) -> Splits:
        """The default splits, once the model's labels are checked against the dataset's class names."""
        names = class_names(self.run.dataset, data_dir)
        if list(self.hparams["labels"]) != names:
            raise UserError(f"{self.run.model} predicts {list(self.hparams['labels'])} but {self.run.dataset} has "
                            f"classes {names}: train with --set labels={','.join(names)}")
        return super().load_splits(data_dir)

    @override
    def adapt(self, model: keras.Model, splits: Splits) -> None:
        """Build the vocabulary of the model's TextVectorization layer from the train split's texts (one pass:
        the train pipeline repeats)."""
        model.get_layer(VECTORIZE).adapt(splits.train.take(splits.steps_per_epoch).map(lambda text, _: text))

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW with cosine decay over the run; sparse cross-entropy; accuracy, macro F1 and the curves."""
        self.curves = ClassifierCurves(len(self.hparams["labels"]))
        model.compile(optimizer=cosine_adamw(self.recipe, steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), self.curves],
                      jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: the validation confusion matrix and per-class PR curves of each epoch; the token
        embeddings in the projector at the end."""
        return [ClassifierSummaries(f"{run_dir}/validation", self.curves, list(self.hparams["labels"])),
                Projector(f"{run_dir}/embeddings", token_embeddings)]

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
