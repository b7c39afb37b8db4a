"""Translation: (source, target) string pairs, teacher-forced cross-entropy, exact match, `translate`.

Signatures:
  translate (also serving_default)   text string [N]: UTF-8, not blank, at most `max_source_chars`
                                     characters (else INVALID_ARGUMENT)  ->  translation string [N]
The greedy decoding loop runs inside the SavedModel (see `zoo.seq2seq`).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines.tasks.base import Task, WarmupRequests
from pipelines.tasks.common import EpochSummaries
from pipelines.tasks.sequences import checked_text, cosine_adamw, share_right

SAMPLES = 8


class ExactMatch(keras.metrics.MeanMetricWrapper):
    """Share of sequences whose every (unpadded) token is predicted right.

    Under teacher forcing this equals greedy decoding's exact match: if every step's argmax is the
    target token given the true prefix, greedy decoding produces exactly the target, and conversely.
    """

    def __init__(self, name: str = "exact_match", **kwargs):
        super().__init__(self.match, name=name, **kwargs)

    @staticmethod
    def match(y_true, y_pred):
        right = keras.ops.equal(keras.ops.argmax(y_pred, axis=-1), keras.ops.cast(y_true, "int64"))
        return keras.ops.cast(keras.ops.all(right | (y_true == 0), axis=-1), "float32")


class TranslationSamples(EpochSummaries):
    """Logs greedy translations of validation sources beside their targets, once per epoch."""

    def __init__(self, log_dir: str, sources: np.ndarray, targets: np.ndarray):
        super().__init__(log_dir)
        self.sources, self.targets = tf.constant(sources), targets

    @override
    def summarize(self):
        translations = self.model.translate(self.sources).numpy()
        rows = ["| source | translation | target |", "|---|---|---|"] + [
            f"| {s.decode()} | {t.decode()} | {y.decode()} |"
            for s, t, y in zip(self.sources.numpy(), translations, self.targets, strict=True)]
        tf.summary.text("translations", "\n".join(rows))


class Translation(Task):
    """(source, target) string pairs, teacher-forced cross-entropy, exact match, `translate` (module doc)."""

    name = "translation"
    recipe_defaults = {"weight_decay": 1e-4}
    # Under a multi-worker strategy Keras 3 first builds the model from a symbolic batch of the string pairs
    # passed to `call`, which takes the token ids its train_step makes of them, and fails.
    single_worker_reason = ("tokenizes its string pairs in its train step, which Keras's multi-worker fit cannot "
                            "build from")

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW with cosine decay over the run; cross-entropy over unpadded tokens; token accuracy, exact match."""
        model.compile(optimizer=cosine_adamw(self.recipe, steps_per_epoch, clipnorm=1.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")],
                      metrics=[ExactMatch()], jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: sample translations per epoch."""
        sources, targets = sample_batch
        return [TranslationSamples(f"{run_dir}/validation", np.asarray(sources[:SAMPLES]),
                                   np.asarray(targets[:SAMPLES]))]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`translate` (= `serving_default`): strings -> greedy translations."""
        max_chars = self.hparams["max_source_chars"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def translate(text):
            return {"translation": model.translate(checked_text(text, max_chars=max_chars))}

        return {"serving_default": translate, "translate": translate}

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """Four real validation sources for `translate`."""
        return [("translate", {"text": np.asarray(sample_batch[0][:4], dtype=object)})]

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """Exact-match accuracy of the exported `translate` on raw (source, target) string batches."""
        fn = loaded.signatures["translate"]
        result = share_right(ds, lambda text: fn(text=text)["translation"])
        return {"exact_match": result["share"], "examples": result["examples"]}
