"""`detector`: a single-stage, anchor-free detector in the style of CenterNet ("Objects as Points", 2019).

Why CenterNet rather than YOLO or FCOS: an object is the peak of its class's heatmap at the box
centre, with the box size and the centre's sub-cell offset regressed at that one cell. There are no
anchors to fit to the data's box shapes and no IoU-based assignment of targets (YOLO), and one output
map at stride 4 rather than a feature pyramid with per-level size ranges (FCOS): the smallest design
that detects small, dense objects well, and whose decoding (a 3x3 max-pool peak search and a top-k)
is a handful of graph ops inside a SavedModel.

The model maps images [N, H, W, 3] in [0, 1] to one tensor [N, H/4, W/4, classes + 4]: per-class
centre probabilities, then box height and width (in output cells) and the centre's offset within its
cell. `compute_loss` encodes padded ground-truth boxes into those targets in-graph (penalty-reduced
focal loss on the heatmap, L1 on size and offset) so Keras `fit` trains it as is; `decode` turns
predictions into candidate boxes and per-class scores, to which the detection task applies
non-max suppression in the exported signatures.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from zoo.labels import SHAPES_IMAGE_SIZE, SHAPES_LABELS
from zoo.registry import register_model

SIZE_LOSS_WEIGHT = 0.1  # CenterNet's weight for the size regression (in output cells)
PRIOR = 0.01  # initial centre probability everywhere: a stable start for the focal loss


def conv_bn(x, filters: int, strides: int = 1):
    """3x3 conv -> BatchNorm -> ReLU."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization()(x))


class CenterNet(keras.Model):
    """A functional model with CenterNet's loss (`compute_loss`) and decoding (`decode`)."""

    def __init__(self, inputs, outputs, num_classes: int, max_detections: int, **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self.num_classes, self.max_detections = num_classes, max_detections
        self.heatmap_loss = keras.metrics.Mean(name="heatmap_loss")
        self.box_loss = keras.metrics.Mean(name="box_loss")

    def targets(self, boxes, classes, grid: int):
        """Heatmaps [N, g, g, C], box targets [N, g, g, 4] and their mask [N, g, g] from padded boxes.

        `boxes` [N, M, 4] normalized (ymin, xmin, ymax, xmax); `classes` [N, M] int, -1 for padding.
        """
        valid = ops.cast(classes >= 0, "float32")
        size = (boxes[..., 2:] - boxes[..., :2]) * grid  # [N, M, 2] height, width in cells
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2 * grid
        cell = ops.clip(ops.floor(centre), 0, grid - 1)
        sigma = ops.maximum(size / 6.0, 0.5)  # a Gaussian as wide as a sixth of the box
        distance = ops.arange(grid, dtype="float32")[None, None, :, None] - cell[:, :, None, :]  # [N, M, g, 2]
        spread = ops.exp(-(distance**2) / (2 * sigma[:, :, None, :] ** 2))
        gaussian = spread[:, :, :, None, 0] * spread[:, :, None, :, 1] * valid[:, :, None, None]  # [N, M, g, g]
        one_hot = ops.one_hot(ops.maximum(classes, 0), self.num_classes) * valid[..., None]
        heatmap = ops.max(gaussian[..., None] * one_hot[:, :, None, None, :], axis=1)
        at_cell = ops.cast(distance == 0, "float32")
        is_centre = at_cell[:, :, :, None, 0] * at_cell[:, :, None, :, 1] * valid[:, :, None, None]
        box = ops.concatenate([size, centre - cell], axis=-1)  # [N, M, 4]
        count = ops.sum(is_centre, axis=1)
        box_map = ops.sum(is_centre[..., None] * box[:, :, None, None, :], axis=1) / ops.maximum(count, 1)[..., None]
        return heatmap, box_map, ops.minimum(count, 1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Penalty-reduced focal loss on the heatmaps + L1 on box size and offset at object centres."""
        heatmap, box_map, mask = self.targets(y["boxes"], y["classes"], ops.shape(y_pred)[1])
        p = ops.clip(y_pred[..., : self.num_classes], 1e-6, 1 - 1e-6)
        positive = ops.cast(heatmap > 0.999, "float32")
        focal = -positive * (1 - p) ** 2 * ops.log(p) - (1 - positive) * (1 - heatmap) ** 4 * p**2 * ops.log(1 - p)
        objects = ops.maximum(ops.sum(mask), 1.0)
        heatmap_loss = ops.sum(focal) / objects
        error = ops.abs(y_pred[..., self.num_classes :] - box_map) * mask[..., None]
        box_loss = (SIZE_LOSS_WEIGHT * ops.sum(error[..., :2]) + ops.sum(error[..., 2:])) / objects
        self.heatmap_loss.update_state(heatmap_loss)
        self.box_loss.update_state(box_loss)
        return heatmap_loss + box_loss

    def decode(self, predictions):
        """Top `max_detections` heatmap peaks -> boxes [N, K, 4] (normalized) and class scores [N, K, C]."""
        grid = ops.shape(predictions)[1]
        heatmap = predictions[..., : self.num_classes]
        peaks = heatmap * ops.cast(heatmap == ops.max_pool(heatmap, 3, strides=1, padding="same"), "float32")
        scores, index = ops.top_k(ops.reshape(peaks, [ops.shape(peaks)[0], -1]), self.max_detections)
        cell, label = index // self.num_classes, index % self.num_classes
        box = ops.take_along_axis(ops.reshape(predictions[..., self.num_classes :], [ops.shape(peaks)[0], -1, 4]),
                                  cell[..., None], axis=1)
        cell_yx = ops.cast(ops.stack([cell // grid, cell % grid], axis=-1), "float32")
        centre, size = (cell_yx + box[..., 2:]) / ops.cast(grid, "float32"), box[..., :2] / ops.cast(grid, "float32")
        boxes = ops.clip(ops.concatenate([centre - size / 2, centre + size / 2], axis=-1), 0.0, 1.0)
        return boxes, ops.one_hot(label, self.num_classes) * scores[..., None]


@register_model(
    "detector",
    task="detection",
    default_dataset="shapes",
    hparams={"num_classes": len(SHAPES_LABELS), "image_size": SHAPES_IMAGE_SIZE, "channels": 3, "filters": 32,
             "max_detections": 20},
    input_spec={"image": {"shape": [SHAPES_IMAGE_SIZE, SHAPES_IMAGE_SIZE, 3], "dtype": "float32",
                          "range": [0.0, 1.0]}},
    labels=SHAPES_LABELS,
    train={"epochs": 20, "batch_size": 32, "learning_rate": 3e-3, "warmup_epochs": 1, "augment": True},
)
def detector(num_classes: int, image_size: int, channels: int, filters: int, max_detections: int) -> keras.Model:
    """CenterNet-style detector: stride-8 encoder, one upsampling stage, heatmap + box heads at stride 4."""
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = conv_bn(conv_bn(inputs, filters, strides=2), filters)  # stride 2
    stride4 = conv_bn(conv_bn(x, 2 * filters, strides=2), 2 * filters)
    x = conv_bn(conv_bn(stride4, 4 * filters, strides=2), 4 * filters)  # stride 8: context for large shapes
    x = layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(x), stride4])
    x = conv_bn(x, 2 * filters)
    heatmap = layers.Conv2D(num_classes, 1, activation="sigmoid", name="heatmap",
                            bias_initializer=keras.initializers.Constant(-math.log((1 - PRIOR) / PRIOR)))(
        conv_bn(x, filters))
    box = layers.Conv2D(4, 1, name="box")(conv_bn(x, filters))
    outputs = layers.Concatenate(name="predictions")([heatmap, box])
    return CenterNet(inputs, outputs, num_classes=num_classes, max_detections=max_detections, name="detector")
