"""What several tasks share: input scaling, the learning-rate schedule, per-epoch TensorBoard summaries."""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override


def to_unit_range(images) -> tf.Tensor:
    """uint8 pixels (or any numbers in [0, 255]) -> float32 in [0, 1]: what every image model takes.

    The one place the zoo's input scaling is defined: training pipelines, evaluation, warmup requests and the
    `encoded_image` signatures all call it.
    """
    return tf.cast(images, tf.float32) / 255.0


def to_pixels(images) -> tf.Tensor:
    """The inverse of `to_unit_range`: floats in [0, 1] (clipped) -> uint8 pixels, e.g. to encode a PNG."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def label_distribution(dataset: str, split: str, names: list[str], data_dir=None) -> dict:
    """The share of each class among the supervised labels of `split`: recorded in a classifier's model card, so
    that a server can compare what it predicts with what the model was trained on (--tensorboard_logdir)."""
    from pipelines import data

    labels = data.builder(dataset, data_dir).as_dataset(split=split, as_supervised=True).map(
        lambda _, label: label, num_parallel_calls=tf.data.AUTOTUNE).batch(65536)
    counts = sum((np.bincount(batch.numpy().astype(np.int64), minlength=len(names))[:len(names)] for batch in labels),
                 np.zeros(len(names), np.int64))
    return {"labels": list(names), "shares": (counts / max(int(counts.sum()), 1)).round(6).tolist(),
            "examples": int(counts.sum()), "split": split}


def warmup_cosine(peak: float, total_steps: int, *, warmup_steps: int = 0,
                  final: float = 0.0) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine decay to `final` at `total_steps`."""
    warmup_steps = min(warmup_steps, max(0, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak, decay_steps=max(1, total_steps - warmup_steps), alpha=final / peak,
        warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)


class EpochSummaries(keras.callbacks.Callback):
    """Writes TensorBoard summaries at the end of every epoch: a subclass implements `summarize`, which runs
    with the writer as default and the epoch as step (so its `tf.summary.*` calls need no `step=`); `self.epoch`
    is the epoch, and `self.logs` the epoch's logs (what it adds there reaches the History and metrics.json)."""

    def __init__(self, log_dir: str | os.PathLike):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.epoch, self.logs = 0, {}

    @override
    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.logs = epoch, logs if logs is not None else {}
        with self.writer.as_default(step=epoch):
            self.summarize()
        self.writer.flush()

    def summarize(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}.summarize")
