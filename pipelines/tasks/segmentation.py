"""Semantic segmentation: per-pixel cross-entropy, mean IoU, mask summaries, and two serving signatures.

Data: (image uint8 [H, W, C], mask uint8 [H, W, 1] of class ids) pairs, the dataset's supervised keys.
Signatures (see `signatures`):
  serving_default   image float32 [N, H, W, C] in [0, 1]  ->  probabilities float32 [N, H, W, classes],
                    mask int32 [N, H, W] (the most probable class of each pixel)
  encoded_image     image_bytes string [N] (PNG/JPEG/GIF/BMP of any size; converted to C channels and
                    resized to H x W inside the graph)  ->  mask_png_bytes string [N] (a grayscale PNG of the
                    input's own size whose pixel values are class ids), class_pixel_counts int32
                    [N, classes] (pixels of each class in that mask), class_labels string [N, classes]
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines import metrics
from pipelines.tasks.common import EpochSummaries, to_unit_range
from pipelines.tasks.image_classification import ImageTask, decode_images

SAMPLE_IMAGES = 8
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]], np.uint8)


def colorize(masks: np.ndarray) -> np.ndarray:
    """Class-id masks [N, H, W] -> float RGB [N, H, W, 3] in [0, 1], one colour per class (background black)."""
    return PALETTE[np.asarray(masks) % len(PALETTE)] / 255.0


class SampleMasks(EpochSummaries):
    """Logs validation images beside their true and predicted masks, once per epoch."""

    def __init__(self, log_dir: str, images: np.ndarray, masks: np.ndarray):
        super().__init__(log_dir)
        self.images, self.masks = images, masks

    @override
    def summarize(self):
        probabilities = self.model.predict(self.images, verbose=0)
        rows = [self.images, colorize(self.masks), colorize(np.argmax(probabilities, -1))]
        tf.summary.image("image | true mask | predicted mask", np.concatenate(rows, axis=2),
                         max_outputs=len(self.images))


class Segmentation(ImageTask):
    """Per-pixel cross-entropy, pixel accuracy and mean IoU, mask summaries, two signatures (module doc)."""

    name = "segmentation"

    @override
    def preprocess(self, training: bool):
        """Batch mapper: uint8 images -> float32 in [0, 1]; masks -> int32 class ids [N, H, W]; random flips."""
        augment = training and self.recipe["augment"]

        def fn(images, masks):
            images, masks = to_unit_range(images), tf.cast(masks, tf.int32)
            if augment:  # the same flip for an image and its mask
                flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
                images, masks = tf.where(flip, images[:, :, ::-1], images), tf.where(flip, masks[:, :, ::-1], masks)
            return images, masks[..., 0]

        return fn

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW + warmup/cosine; per-pixel sparse cross-entropy; pixel accuracy and mean IoU."""
        model.compile(
            optimizer=self.optimizer(steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
                     metrics.MeanIoU(model.output_shape[-1])],
            jit_compile=bool(self.recipe["jit_compile"]),
        )

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: sample images with true and predicted masks."""
        images, masks = sample_batch
        return [SampleMasks(f"{run_dir}/validation", np.asarray(images[:SAMPLE_IMAGES]),
                            np.asarray(masks[:SAMPLE_IMAGES]))]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`serving_default` (float images -> probabilities, mask), `encoded_image` (bytes -> PNG mask, counts)."""
        height, width, channels = self.image_shape
        num_classes = model.output_shape[-1]
        labels = tf.constant(list(self.run.labels) or [str(i) for i in range(num_classes)])

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="image")])
        def serving_default(image):
            probabilities = model(image, training=False)
            return {"probabilities": probabilities, "mask": tf.argmax(probabilities, -1, output_type=tf.int32)}

        def full_size_mask(args):
            probabilities, size = args
            mask = tf.argmax(tf.image.resize(probabilities, size), -1, output_type=tf.int32)
            counts = tf.math.bincount(mask, minlength=num_classes, maxlength=num_classes)
            return tf.io.encode_png(tf.cast(mask, tf.uint8)[..., None]), counts

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def encoded_image(image_bytes):
            images, sizes = decode_images(image_bytes, height, width, channels)
            pngs, counts = tf.map_fn(full_size_mask, (model(images, training=False), sizes), fn_output_signature=(
                tf.TensorSpec([], tf.string), tf.TensorSpec([num_classes], tf.int32)))
            return {"mask_png_bytes": pngs, "class_pixel_counts": counts,
                    "class_labels": tf.tile(labels[None], [tf.shape(image_bytes)[0], 1])}

        return {"serving_default": serving_default, "encoded_image": encoded_image}

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """Mean IoU and pixel accuracy of an exported model's `serving_default` on raw (image, mask) batches."""
        fn = loaded.signatures["serving_default"]
        confusion, examples = None, 0
        for images, masks in ds:
            out = fn(image=to_unit_range(images))
            batch = metrics.confusion_matrix(tf.cast(masks[..., 0], tf.int32), out["mask"],
                                             out["probabilities"].shape[-1])
            confusion = batch if confusion is None else confusion + batch
            examples += int(tf.shape(images)[0])
        confusion = confusion.numpy()
        return {"mean_iou": float(metrics.mean_iou(confusion)),
                "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)), "examples": examples}
