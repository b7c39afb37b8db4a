"""What several tasks share: input scaling, the learning-rate schedule, per-epoch TensorBoard summaries."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

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


def image_calibration(task, dataset: str, count: int, data_dir=None) -> list[dict[str, np.ndarray]]:
    """The first `count` images of `task`'s train split, one {"image": [1, H, W, C] in [0, 1]} each: the
    calibration inputs of an image model (`Task.calibration_inputs`)."""
    from pipelines.tasks.base import TRAIN_SPLIT

    batches = task.load_evaluation(dataset, TRAIN_SPLIT, batch_size=1, data_dir=data_dir).take(count)
    return [{"image": np.asarray(to_unit_range(images))} for images, _ in batches]


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


def grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tile [N, H, W, C] images into one [1, rows*H, columns*W, C] image."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return canvas[None]


class BufferedScalars:
    """Scalars of many steps, buffered and written by one compiled call per `flush`: an eager
    `tf.summary.scalar` costs about 0.5 ms, more than a step of a small environment or model."""

    def __init__(self, writer: tf.summary.SummaryWriter, tags: tuple[str, ...]):
        self.writer, self.tags = writer, tuple(tags)
        self.steps: list[int] = []
        self.rows: list[tuple[float, ...]] = []

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, len(tags)], tf.float32)])
        def write(steps, values):
            for i in tf.range(tf.size(steps)):
                with tf.name_scope("/"):  # the tags as they are, not under the loop's "while/" scope
                    for j, tag in enumerate(self.tags):
                        tf.summary.scalar(tag, values[i, j], step=steps[i])

        self._write = write

    def add(self, step: int, *values: float) -> None:
        """One value per tag, at `step`."""
        self.steps.append(step)
        self.rows.append(values)

    def flush(self) -> None:
        """Write what is buffered."""
        if self.steps:
            with self.writer.as_default():
                self._write(tf.constant(self.steps, tf.int64), tf.constant(self.rows, tf.float32))
            self.steps, self.rows = [], []


class EpochSummaries(keras.callbacks.Callback):
    """Writes TensorBoard summaries at the end of every epoch: a subclass implements `summarize`, which runs
    with the writer as default and the epoch as step (so its `tf.summary.*` calls need no `step=`); `self.epoch`
    is the epoch, and `self.logs` the epoch's logs (what it adds there reaches the History and metrics.json)."""

    def __init__(self, log_dir: str | os.PathLike):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.epoch, self.logs = 0, {}
        self.background: concurrent.futures.ThreadPoolExecutor | None = None
        self.pending: list[concurrent.futures.Future] = []

    def in_background(self, work: Callable[..., None], *args) -> None:
        """Run `work(*args)` as `summarize` runs (the writer as default, this epoch as step, flushed after), but
        on this callback's own thread (one, in order), so the next epoch starts at once; `on_train_end` waits
        for all of it and re-raises what failed."""
        epoch = self.epoch

        def write() -> None:
            with self.writer.as_default(step=epoch):
                work(*args)
            self.writer.flush()

        if self.background is None:
            self.background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=type(self).__name__)
        self.pending.append(self.background.submit(write))

    @override
    def on_train_end(self, logs=None):
        for future in self.pending:
            future.result()
        self.pending = []

    @override
    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.logs = epoch, logs if logs is not None else {}
        with self.writer.as_default(step=epoch):
            self.summarize()
        self.writer.flush()

    def summarize(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}.summarize")


class ClassifierSummaries(EpochSummaries):
    """After each epoch's validation pass: its confusion matrix (an image, as TensorFlow's image-summaries guide
    draws it for Fashion-MNIST) and one precision-recall curve per class (the PR curves plugin, tag
    "<class>/pr_curves"), from the
    `ClassifierCurves` metric that the pass filled inside the compiled test step (no extra pass). The figure
    is drawn in the background (`in_background`)."""

    def __init__(self, log_dir: str | os.PathLike, curves, names: list[str], what: str = "validation examples"):
        super().__init__(log_dir)
        self.curves, self.names, self.what = curves, list(names), what

    @override
    def summarize(self):
        from tensorboard.plugins.pr_curve import summary as pr_curve

        if f"val_{self.curves.name}" not in self.logs:  # no validation pass this epoch: the state is training's
            return
        matrix = np.asarray(self.curves.confusion).round().astype(np.int64)
        curves = self.curves.curves()
        for i, name in enumerate(self.names):
            proto = pr_curve.raw_data_pb(
                name, curves["tp"][i], curves["fp"][i], curves["tn"][i], curves["fn"][i],
                curves["precision"][i], curves["recall"][i], num_thresholds=self.curves.bins + 1,
                display_name=f"{name} vs the rest", description=f"{int(matrix.sum())} {self.what}")
            tf.summary.experimental.write_raw_pb(proto.SerializeToString())
        self.in_background(self.draw, matrix)

    def draw(self, matrix: np.ndarray) -> None:
        from pipelines.tasks import plots

        image = plots.figure_to_image(plots.confusion_matrix_figure(matrix, self.names))
        tf.summary.image("confusion_matrix", image,
                         description=f"{int(matrix.sum())} {self.what}; rows: true class, columns: predicted")


@dataclasses.dataclass
class Embedding:
    """Points for TensorBoard's projector: `vectors` [N, D], one metadata row per point (`labels`: one column,
    or tab-separated columns named by `header`), and optionally a thumbnail per point (`sprite` [N, H, W, C],
    values in [0, 1])."""

    vectors: np.ndarray
    labels: list[str]
    header: str | None = None
    sprite: np.ndarray | None = None


def metadata_text(text: str) -> str:
    """A token as one projector metadata cell: no tabs or line breaks, the empty token named."""
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r") or "<empty>"


def write_projector(log_dir: str | os.PathLike, embedding: Embedding) -> None:
    """`embedding` as the projector reads it: a checkpoint of the vectors, metadata.tsv, sprite.png and
    projector_config.pbtxt in `log_dir` (TensorBoard's embedding-projector guide)."""
    from tensorboard.plugins import projector

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = ([embedding.header] if embedding.header else []) + list(embedding.labels)
    (log_dir / "metadata.tsv").write_text("\n".join(rows) + "\n")
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(np.asarray(embedding.vectors, np.float32)))
    checkpoint.save(str(log_dir / "embedding.ckpt"))
    config = projector.ProjectorConfig()
    entry = config.embeddings.add(tensor_name="embedding/.ATTRIBUTES/VARIABLE_VALUE", metadata_path="metadata.tsv")
    if embedding.sprite is not None:
        images = np.asarray(embedding.sprite, np.float32)
        side = int(np.ceil(np.sqrt(len(images))))  # the projector reads a square grid, row by row
        tiled = grid(images, columns=side)[0]
        pixels = tf.cast(tf.round(tf.clip_by_value(tiled, 0.0, 1.0) * 255.0), tf.uint8)
        (log_dir / "sprite.png").write_bytes(tf.io.encode_png(pixels).numpy())
        entry.sprite.image_path = "sprite.png"
        entry.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])  # width, height
    projector.visualize_embeddings(str(log_dir), config)
    # TensorBoard finds runs by their event files: one text summary makes this directory the projector's run.
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        tf.summary.text("embedding", f"{len(embedding.labels)} points of {np.shape(embedding.vectors)[1]} "
                                     "dimensions: see the Projector tab")
    writer.close()


class Projector(keras.callbacks.Callback):
    """At the end of training, `fetch(model)`'s Embedding for TensorBoard's projector, in `log_dir` (a run of
    its own beside train/ and validation/)."""

    def __init__(self, log_dir: str | os.PathLike, fetch: Callable[[keras.Model], Embedding]):
        super().__init__()
        self.log_dir, self.fetch = log_dir, fetch

    @override
    def on_train_end(self, logs=None):
        write_projector(self.log_dir, self.fetch(self.model))
