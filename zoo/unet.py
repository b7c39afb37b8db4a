"""`unet`: U-Net semantic segmentation (Ronneberger et al., 2015), sized for small images.

An encoder of `depth` stages (two 3x3 conv-BN-ReLU, then 2x2 max-pool, filters doubling), a
bottleneck, and a decoder that upsamples (2x2 transposed conv), concatenates the encoder's
feature map of the same size (the skip connection) and convolves again; a 1x1 conv gives per-pixel
class probabilities. Padding is "same", so the output has the input's height and width.
"""
from __future__ import annotations

import keras
from keras import layers

from zoo.labels import SHAPES_IMAGE_SIZE, SHAPES_SEGMENTATION_LABELS
from zoo.registry import register_model


def conv_block(x, filters: int):
    """Two 3x3 conv -> BatchNorm -> ReLU."""
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return x


@register_model(
    "unet",
    task="segmentation",
    default_dataset="shapes",
    hparams={"num_classes": len(SHAPES_SEGMENTATION_LABELS), "image_size": SHAPES_IMAGE_SIZE, "channels": 3,
             "filters": 16, "depth": 3},
    input_spec={"image": {"shape": [SHAPES_IMAGE_SIZE, SHAPES_IMAGE_SIZE, 3], "dtype": "float32",
                          "range": [0.0, 1.0]}},
    labels=SHAPES_SEGMENTATION_LABELS,
    train={"epochs": 12, "batch_size": 32, "learning_rate": 3e-3, "warmup_epochs": 1},
)
def unet(num_classes: int, image_size: int, channels: int, filters: int, depth: int) -> keras.Model:
    """U-Net: `depth` down/up stages with skip connections -> per-pixel class probabilities."""
    if image_size % 2**depth:
        raise ValueError(f"image_size {image_size} must be divisible by 2**depth = {2**depth}")
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = conv_block(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = conv_block(x, filters * 2**depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = conv_block(layers.Concatenate()([x, skips[level]]), filters * 2**level)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="unet")
