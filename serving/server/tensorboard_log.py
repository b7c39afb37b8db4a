"""Serving logs in TensorBoard (`--tensorboard_logdir DIR`, tfzoo's own flag; off by default).

Every `--tensorboard_log_interval_seconds`, for each model version that answered something in the interval, one
TensorBoard run `DIR/<model>/<version>` gets:
  scalars     requests, requests_per_second, errors/<CODE> (each gRPC status code seen), latency_ms/p50 and
              /p99 (every API, both protocols), batch_size/mean (with --enable_batching)
  classifiers (a `probabilities` [N, classes] or `top_k_ids` output): the predicted-class histogram, a bar chart
              of the interval's predicted-class shares beside the training label shares the model card records
              (`label_distribution`), and drift/total_variation = 1/2 sum_k |p_k - q_k| between them (0: the
              same distribution, 1: disjoint)
  images      (a float input [N, H, W, C]): histograms of each image's mean and standard deviation of its pixels
  generators  (a string output `generated`): the histogram of generated lengths, in characters
The step is the interval's index since the server started. What a request sees and answers is summarised on the
thread that ran its model, after its answer was made; the writing is done by one background thread.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("tfzoo.serving")

MODEL_CARD = Path("assets.extra") / "model_card.json"


class LogdirError(ValueError):
    """The logdir cannot be written; the message names it."""


@dataclasses.dataclass
class Interval:
    """What one model version saw and answered since the last write."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    batch_sizes: list[int] = dataclasses.field(default_factory=list)
    classes: list[np.ndarray] = dataclasses.field(default_factory=list)
    pixel_means: list[np.ndarray] = dataclasses.field(default_factory=list)
    pixel_stds: list[np.ndarray] = dataclasses.field(default_factory=list)
    generated_lengths: list[np.ndarray] = dataclasses.field(default_factory=list)


class ServingLog:
    """Collects per model version, writes TensorBoard summaries at a fixed interval (see the module doc)."""

    def __init__(self, logdir: str | os.PathLike, interval_seconds: float):
        self.logdir, self.interval = Path(logdir), interval_seconds
        check_writable(self.logdir)
        self._lock = threading.Lock()
        self._current: dict[tuple[str, int], Interval] = collections.defaultdict(Interval)
        self._cards: dict[tuple[str, int], dict] = {}
        self._writers: dict[tuple[str, int], object] = {}
        self._step = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tensorboard-log", daemon=True)
        self._thread.start()

    # --- collecting (request threads) ----------------------------------------------------------------------

    def request(self, model: str, version: int | None, status: str, seconds: float) -> None:
        """One answered call of any API: its status code and latency."""
        if version is None:
            return  # refused before a version was chosen: nothing to attribute it to
        with self._lock:
            interval = self._current[(model, version)]
            interval.latencies.append(seconds)
            if status != "OK":
                interval.errors[status] += 1

    def batch(self, model: str, version: int, rows: int) -> None:
        with self._lock:
            self._current[(model, version)].batch_sizes.append(rows)

    def predicted(self, model: str, version: int, path: str, inputs: dict, outputs: dict) -> None:
        """Summaries of what a Predict saw and answered (arrays by alias)."""
        key = (model, version)
        self._cards.setdefault(key, read_card(path))
        classes = predicted_classes(outputs)
        images = [a for a in inputs.values() if isinstance(a, np.ndarray) and a.ndim == 4 and a.dtype.kind == "f"]
        generated = outputs.get("generated")
        with self._lock:
            interval = self._current[key]
            if classes is not None:
                interval.classes.append(classes)
            for array in images:
                flat = array.reshape(len(array), -1)
                interval.pixel_means.append(flat.mean(axis=1))
                interval.pixel_stds.append(flat.std(axis=1))
            if generated is not None and np.asarray(generated).dtype == object:
                interval.generated_lengths.append(np.array([len(g.decode("utf-8", "replace")) if isinstance(g, bytes)
                                                            else len(str(g)) for g in np.ravel(generated)]))

    # --- writing (one background thread) ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Write the summaries of the interval that ends now."""
        with self._lock:
            current, self._current = self._current, collections.defaultdict(Interval)
            step = self._step
            self._step += 1
        for key, interval in current.items():
            try:
                self._write(key, interval, step)
            except Exception:  # a summary must never take serving down
                log.exception("Writing the TensorBoard serving log of %s version %s failed", *key)

    def _write(self, key: tuple[str, int], interval: Interval, step: int) -> None:
        import tensorflow as tf

        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = tf.summary.create_file_writer(str(self.logdir / key[0] / str(key[1])))
        with writer.as_default(step=step):
            tf.summary.scalar("requests", len(interval.latencies))
            tf.summary.scalar("requests_per_second", len(interval.latencies) / self.interval)
            for code, count in interval.errors.items():
                tf.summary.scalar(f"errors/{code}", count)
            if interval.latencies:
                p50, p99 = np.percentile(np.array(interval.latencies) * 1000, [50, 99])
                tf.summary.scalar("latency_ms/p50", p50)
                tf.summary.scalar("latency_ms/p99", p99)
            if interval.batch_sizes:
                tf.summary.scalar("batch_size/mean", float(np.mean(interval.batch_sizes)))
                tf.summary.histogram("batch_size", np.array(interval.batch_sizes))
            if interval.classes:
                self._write_classes(np.concatenate(interval.classes), self._cards.get(key, {}))
            if interval.pixel_means:
                tf.summary.histogram("inputs/pixel_mean", np.concatenate(interval.pixel_means))
                tf.summary.histogram("inputs/pixel_std", np.concatenate(interval.pixel_stds))
            if interval.generated_lengths:
                tf.summary.histogram("outputs/generated_length", np.concatenate(interval.generated_lengths))
        writer.flush()

    @staticmethod
    def _write_classes(classes: np.ndarray, card: dict) -> None:
        import tensorflow as tf

        tf.summary.histogram("outputs/predicted_class", classes)
        training = card.get("label_distribution")
        if not training:
            return
        shares = np.asarray(training["shares"], np.float64)
        predicted = np.bincount(classes, minlength=len(shares))[:len(shares)] / max(len(classes), 1)
        tf.summary.scalar("drift/total_variation", total_variation(predicted, shares),
                          description="1/2 sum |predicted share - training share| over the classes")
        rows = "\n".join(f"| {k} | {label} | {t:.3f} | {p:.3f} |" for k, (label, t, p)
                         in enumerate(zip(training["labels"], shares, predicted, strict=True)))
        tf.summary.image("class_distribution", bar_chart(predicted, shares),
                         description="Per class, left to right: the training label share (gray, "
                                     f"{training.get('split', 'train')}) beside this interval's share of served "
                                     "predictions (blue).\n\n| class | label | training | served |\n|---|---|---|---|\n"
                                     + rows)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
        self.flush()


def check_writable(logdir: Path) -> None:
    """Create `logdir` and write a file in it, or raise LogdirError naming it."""
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LogdirError(f"--tensorboard_logdir {logdir} cannot be written: {e.strerror or e}") from None


def read_card(path: str) -> dict:
    """The model card of an exported version, or {} (a model from elsewhere has none)."""
    try:
        return json.loads((Path(path) / MODEL_CARD).read_text())
    except (OSError, ValueError):
        return {}


def predicted_classes(outputs: dict) -> np.ndarray | None:
    """Class ids of a classifier's answer: argmax of `probabilities` [N, classes], or `top_k_ids`[:, 0]."""
    probabilities = outputs.get("probabilities")
    if isinstance(probabilities, np.ndarray) and probabilities.ndim == 2 and probabilities.dtype.kind == "f":
        return probabilities.argmax(axis=1)
    ids = outputs.get("top_k_ids")
    if isinstance(ids, np.ndarray) and ids.ndim == 2 and ids.shape[1] and ids.dtype.kind in "iu":
        return ids[:, 0].astype(np.int64)
    return None


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two distributions over the same classes: 1/2 sum |p - q|."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def bar_chart(predicted: np.ndarray, training: np.ndarray, height: int = 120, bar: int = 10) -> np.ndarray:
    """A [1, H, W, 3] uint8 image: for each class, its training share (gray) beside its served share (blue), on
    a common scale (the tallest bar fills the height). Drawn with numpy: the server imports no plotting library."""
    classes = len(training)
    image = np.full((height, classes * (3 * bar), 3), 255, np.uint8)
    top = max(float(np.max(training)), float(np.max(predicted)), 1e-9)
    for k, (train_share, served_share) in enumerate(zip(training, predicted, strict=True)):
        left = k * 3 * bar + bar // 2
        for offset, share, colour in ((0, train_share, (150, 150, 150)), (bar, served_share, (31, 119, 180))):
            rows = int(round(share / top * (height - 1)))
            if rows:
                image[height - rows:, left + offset:left + offset + bar] = colour
    return image[None]
