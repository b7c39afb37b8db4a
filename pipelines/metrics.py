"""Metrics implemented once: mean IoU, mAP@0.5 (PASCAL VOC all-point AP), and a classifier's curves.

`MeanIoU` is the Keras metric logged during training; `mean_iou` and `mean_average_precision`
score exported models (`tfzoo evaluate`, bench/vision.py). `ClassifierCurves` accumulates a
classifier's confusion matrix and per-class score histograms inside the compiled train and test steps
(no extra pass over the data), from which the TensorBoard callback draws the confusion matrix and
the per-class precision-recall curves of each epoch's validation pass.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override


def mean_iou(confusion) -> float:
    """Mean over classes present (in truth or prediction) of TP / (TP + FP + FN), from a confusion matrix."""
    confusion = keras.ops.convert_to_tensor(confusion, "float32")
    true_positives = keras.ops.diagonal(confusion)
    union = keras.ops.sum(confusion, 0) + keras.ops.sum(confusion, 1) - true_positives
    present = keras.ops.cast(union > 0, "float32")
    iou = true_positives / keras.ops.maximum(union, 1.0)
    return keras.ops.sum(iou * present) / keras.ops.maximum(keras.ops.sum(present), 1.0)


def confusion_matrix(labels, predictions, num_classes: int):
    """[num_classes, num_classes] counts, rows = true class, columns = predicted class."""
    return tf.math.confusion_matrix(tf.reshape(labels, [-1]), tf.reshape(predictions, [-1]), num_classes,
                                    dtype=tf.float32)


class MeanIoU(keras.metrics.Metric):
    """Mean IoU of per-pixel class probabilities against integer masks, accumulated over batches."""

    def __init__(self, num_classes: int, name: str = "mean_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable((num_classes, num_classes), "zeros", name="confusion")

    @override
    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = keras.ops.argmax(y_pred, axis=-1)
        self.confusion.assign_add(confusion_matrix(keras.ops.cast(y_true, "int64"), predicted, self.num_classes))

    def result(self):
        return mean_iou(self.confusion)

    def reset_state(self):
        self.confusion.assign(keras.ops.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (ymin, xmin, ymax, xmax) boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-12)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (PASCAL VOC 2010+ all-point interpolation)."""
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    changes = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[changes + 1] - recall[changes]) * precision[changes + 1]))


def mean_average_precision(detections: list[dict], ground_truths: list[dict], num_classes: int,
                           iou_threshold: float = 0.5) -> dict:
    """mAP over classes with ground truth; per image, detections have boxes/scores/classes, truths boxes/classes.

    A detection is a true positive when it overlaps a not-yet-matched truth of its class with IoU >=
    `iou_threshold` (highest-scoring detections match first); every other detection is a false positive.
    Returns {"map": float, "ap": [per-class AP or None when the class has no ground truth]}.
    """
    aps = []
    for c in range(num_classes):
        scored, total_truths = [], 0
        for found, truth in zip(detections, ground_truths, strict=True):
            truth_boxes = np.asarray(truth["boxes"]).reshape(-1, 4)[np.asarray(truth["classes"]) == c]
            total_truths += len(truth_boxes)
            keep = np.asarray(found["classes"]) == c
            boxes, scores = np.asarray(found["boxes"]).reshape(-1, 4)[keep], np.asarray(found["scores"])[keep]
            matched = np.zeros(len(truth_boxes), bool)
            ious = box_iou(boxes, truth_boxes)
            for i in np.argsort(-scores, kind="stable"):
                candidates = np.where(matched, -1.0, ious[i]) if len(truth_boxes) else np.array([-1.0])
                best = int(np.argmax(candidates))
                hit = candidates[best] >= iou_threshold
                if hit:
                    matched[best] = True
                scored.append((scores[i], hit))
        if total_truths == 0:
            aps.append(None)
            continue
        scored.sort(key=lambda s: -s[0])
        hits = np.array([h for _, h in scored], bool)
        true_positives = np.cumsum(hits)
        recall = true_positives / total_truths
        precision = true_positives / np.arange(1, len(hits) + 1)
        aps.append(average_precision(recall, precision) if len(hits) else 0.0)
    present = [ap for ap in aps if ap is not None]
    return {"map": float(np.mean(present)) if present else 0.0, "ap": aps}


class ClassifierCurves(keras.metrics.Metric):
    """Sparse labels against class probabilities: the confusion matrix (rows: true class) and, per class, how
    many examples of that class (positives) and of the others (negatives) got each score bin's probability
    (`bins` equal bins of [0, 1]). Its result, logged as `macro_f1`, is the macro-averaged F1 of the argmax
    predictions; `curves()` gives the precision-recall counts at each bin edge."""

    def __init__(self, num_classes: int, bins: int = 100, name: str = "macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.bins = num_classes, bins
        self.confusion = self.add_variable((num_classes, num_classes), "zeros", name="confusion")
        self.positives = self.add_variable((num_classes, bins), "zeros", name="positives")
        self.negatives = self.add_variable((num_classes, bins), "zeros", name="negatives")

    @override
    def update_state(self, y_true, y_pred, sample_weight=None):  # noqa: ARG002 (unweighted, as the curves)
        y_pred = keras.ops.reshape(y_pred, (-1, self.num_classes))
        truth = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        predicted = keras.ops.one_hot(keras.ops.argmax(y_pred, axis=-1), self.num_classes)
        self.confusion.assign_add(keras.ops.matmul(keras.ops.transpose(truth), predicted))
        # one_hot of each (example, class) probability's bin: [N, classes, bins]; matmuls keep XLA happy
        binned = keras.ops.one_hot(keras.ops.cast(keras.ops.clip(y_pred * self.bins, 0, self.bins - 1), "int32"),
                                   self.bins)
        self.positives.assign_add(keras.ops.sum(binned * truth[..., None], axis=0))
        self.negatives.assign_add(keras.ops.sum(binned * (1.0 - truth[..., None]), axis=0))

    def result(self):
        true_positives = keras.ops.diagonal(self.confusion)
        precision = true_positives / keras.ops.maximum(keras.ops.sum(self.confusion, 0), 1.0)
        recall = true_positives / keras.ops.maximum(keras.ops.sum(self.confusion, 1), 1.0)
        return keras.ops.mean(2 * precision * recall / keras.ops.maximum(precision + recall, 1e-12))

    def reset_state(self):
        for variable in (self.confusion, self.positives, self.negatives):
            variable.assign(keras.ops.zeros_like(variable))

    def curves(self) -> dict[str, np.ndarray]:
        """Per class [classes, bins + 1], at thresholds 0, 1/bins, ..., 1 (score >= threshold is "positive"):
        tp, fp, tn, fn counts and precision, recall (precision 1 where nothing is predicted positive)."""
        positives, negatives = np.asarray(self.positives), np.asarray(self.negatives)
        # at or above each threshold: reversed cumulative sums, with 0 above the last bin
        tp = np.concatenate([np.cumsum(positives[:, ::-1], 1)[:, ::-1], np.zeros((self.num_classes, 1))], 1)
        fp = np.concatenate([np.cumsum(negatives[:, ::-1], 1)[:, ::-1], np.zeros((self.num_classes, 1))], 1)
        fn = positives.sum(1, keepdims=True) - tp
        tn = negatives.sum(1, keepdims=True) - fp
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / np.maximum(tp + fn, 1)
        return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": precision, "recall": recall}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "bins": self.bins}
