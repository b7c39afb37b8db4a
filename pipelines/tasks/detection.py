"""Object detection: boxes from TFDS `objects`, the model's own loss, mAP@0.5, and two serving signatures.

A detection model (e.g. zoo's `detector`) computes its loss from y = {"boxes": [N, M, 4] normalized
(ymin, xmin, ymax, xmax), "classes": [N, M] int, -1 for padding} in `compute_loss`, and provides
`decode(predictions) -> (boxes [N, K, 4], class scores [N, K, classes])`. The signatures apply
non-max suppression (`tf.image.combined_non_max_suppression`) inside the SavedModel and answer as the
TensorFlow Object Detection API does:
  serving_default   image float32 [N, H, W, C] in [0, 1]
  encoded_image     image_bytes string [N] (PNG/JPEG/GIF/BMP of any size; converted to C channels and
                    resized to H x W inside the graph; boxes are normalized, so they hold for the original)
  ->  detection_boxes float32 [N, K, 4] (normalized ymin, xmin, ymax, xmax), detection_scores [N, K],
      detection_classes float32 [N, K] (1-based: label = labels[class - 1]), num_detections float32 [N]
      (the first num_detections rows are real, the rest zero padding)
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines import metrics
from pipelines.tasks.common import EpochSummaries, to_unit_range
from pipelines.tasks.image_classification import ImageTask, decode_images

MAX_BOXES = 16  # ground-truth boxes kept per training image (padded to this many)
IOU_THRESHOLD = 0.5  # non-max suppression
SCORE_THRESHOLD = 0.05  # lowest score returned: low, so that mAP sees the whole precision-recall curve
SAMPLE_IMAGES = 8


def example_fn(features: dict):
    """A TFDS example with `objects` (bbox, label) -> (image, {"boxes", "classes"}) padded to MAX_BOXES."""
    objects = features["objects"]
    n = tf.minimum(tf.shape(objects["label"])[0], MAX_BOXES)
    boxes = tf.pad(objects["bbox"][:n], [[0, MAX_BOXES - n], [0, 0]])
    classes = tf.pad(tf.cast(objects["label"][:n], tf.int32), [[0, MAX_BOXES - n]], constant_values=-1)
    return features["image"], {"boxes": tf.ensure_shape(boxes, [MAX_BOXES, 4]),
                               "classes": tf.ensure_shape(classes, [MAX_BOXES])}


def detect(model: keras.Model, images: tf.Tensor) -> dict:
    """The Object Detection API's output dict for float images, with non-max suppression."""
    boxes, scores = model.decode(model(images, training=False))
    k = model.max_detections
    nms = tf.image.combined_non_max_suppression(boxes[:, :, None, :], scores, max_output_size_per_class=k,
                                                max_total_size=k, iou_threshold=IOU_THRESHOLD,
                                                score_threshold=SCORE_THRESHOLD, clip_boxes=True)
    real = tf.range(k)[None, :] < nms.valid_detections[:, None]
    return {"detection_boxes": nms.nmsed_boxes, "detection_scores": nms.nmsed_scores,
            "detection_classes": tf.where(real, nms.nmsed_classes + 1.0, 0.0),
            "num_detections": tf.cast(nms.valid_detections, tf.float32)}


class SampleDetections(EpochSummaries):
    """Logs validation images with their predicted boxes (scores above 0.3) drawn on, once per epoch."""

    def __init__(self, log_dir: str, images: np.ndarray):
        super().__init__(log_dir)
        self.images = tf.constant(images)

    @override
    def summarize(self):
        found = detect(self.model, self.images)
        boxes = tf.where(found["detection_scores"][..., None] > 0.3, found["detection_boxes"], 0.0)
        colours = tf.constant([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
        tf.summary.image("predicted boxes", tf.image.draw_bounding_boxes(self.images, boxes, colours),
                         max_outputs=len(self.images))


class Detection(ImageTask):
    """The model's own loss, mAP@0.5 of the exported model, box summaries, two signatures (module doc)."""

    name = "detection"
    example_fn = staticmethod(example_fn)

    @override
    def preprocess(self, training: bool):
        """Batch mapper: uint8 images -> float32 in [0, 1]; random horizontal flips of images with their boxes."""
        augment = training and self.recipe["augment"]

        def fn(images, targets):
            images = to_unit_range(images)
            if augment:
                flip = tf.random.uniform([tf.shape(images)[0]]) < 0.5
                boxes = targets["boxes"]
                flipped = tf.stack([boxes[..., 0], 1 - boxes[..., 3], boxes[..., 2], 1 - boxes[..., 1]], axis=-1)
                padding = targets["classes"][..., None] < 0
                targets = {**targets, "boxes": tf.where(flip[:, None, None] & ~padding, flipped, boxes)}
                images = tf.where(flip[:, None, None, None], images[:, :, ::-1], images)
            return images, targets

        return fn

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW + warmup/cosine; the loss is the model's own `compute_loss`."""
        model.compile(optimizer=self.optimizer(steps_per_epoch), jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: sample images with their predicted boxes."""
        return [SampleDetections(f"{run_dir}/validation", np.asarray(sample_batch[0][:SAMPLE_IMAGES]))]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`serving_default` (float images) and `encoded_image` (bytes), both -> the detection dict."""
        height, width, channels = self.image_shape

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="image")])
        def serving_default(image):
            return detect(model, image)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def encoded_image(image_bytes):
            return detect(model, decode_images(image_bytes, height, width, channels)[0])

        return {"serving_default": serving_default, "encoded_image": encoded_image}

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """mAP@0.5 of an exported detector's `serving_default` on raw (image, {"boxes", "classes"}) batches."""
        fn = loaded.signatures["serving_default"]
        found, truths = [], []
        for images, targets in ds:
            out = {k: v.numpy() for k, v in fn(image=to_unit_range(images)).items()}
            for i, classes in enumerate(targets["classes"].numpy()):
                n = int(out["num_detections"][i])
                found.append({"boxes": out["detection_boxes"][i, :n], "scores": out["detection_scores"][i, :n],
                              "classes": out["detection_classes"][i, :n].astype(int) - 1})
                truths.append({"boxes": targets["boxes"].numpy()[i][classes >= 0], "classes": classes[classes >= 0]})
        num_classes = 1 + max(int(t["classes"].max(initial=-1)) for t in truths)  # classes without truth: no AP
        result = metrics.mean_average_precision(found, truths, num_classes, iou_threshold=0.5)
        return {"map50": result["map"], "ap50_per_class": result["ap"], "examples": len(truths)}
