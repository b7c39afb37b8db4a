"""Segmentation and detection metrics, implemented once: mean IoU and mAP@0.5 (PASCAL VOC all-point AP).

`MeanIoU` is the Keras metric logged during training; `mean_iou` and `mean_average_precision`
score exported models (`tfzoo evaluate`, bench/vision.py).
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
