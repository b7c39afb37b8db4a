"""Keras applications as zoo entries: `mobilenet_v2`, `efficientnet_b0`, `resnet50`, `vgg16`, `inception_v3`.

The architectures are `keras.applications`' own (without their ImageNet top). The zoo adds the
input adaptation (images of any size and 1 or 3 channels in [0, 1], as the datasets give them, are
resized to `backbone_size`, made RGB and put through the application's own `preprocess_input`), a
head (dropout + softmax), and the transfer-learning recipe: with pretrained `weights` the backbone
starts frozen (and its BatchNorm layers stay in inference mode) while the head trains; for the last
`fine_tune_epochs` the top `fine_tune_layers` layers of the backbone train too, at a lower rate
(`pipelines.tasks.image_classification`). With `weights=none` everything trains from the start.

`weights`: "none" (random, the default, as timm's `pretrained=False`), "imagenet" (Keras downloads and
caches the file; needs a network), or the path of a weights file of the same application without its
top (e.g. Keras's `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`).
"""
from __future__ import annotations

import os

import keras
from keras import layers

from zoo.labels import FASHION_MNIST_LABELS
from zoo.registry import register_model

BACKBONE = "backbone"  # the application's layer name inside the zoo model
BATCHNORM_MOMENTUM = 0.99  # Keras's default, for backbones trained from random weights

# name -> (keras.applications constructor, its preprocessing module, smallest input it takes, layers to fine-tune)
APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 32, 20),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet", 32, 20),
    "resnet50": ("ResNet50", "resnet50", 32, 12),
    "vgg16": ("VGG16", "vgg16", 32, 4),
    "inception_v3": ("InceptionV3", "inception_v3", 75, 30),
}


class WeightsUnavailableError(ValueError):
    """Pretrained weights were asked for but cannot be had; the message says what to pass instead."""


def load_backbone(name: str, input_size: int, weights: str) -> keras.Model:
    """The application `name` without its top, on [input_size, input_size, 3] inputs, with `weights`."""
    constructor = getattr(keras.applications, APPLICATIONS[name][0])
    instead = f"pass a local weights file with `--set weights=/path/to/{name}_no_top.h5` or train from random " \
              "weights with `--set weights=none`"
    if weights.lower() == "none":
        weights = None
    elif weights != "imagenet" and not os.path.isfile(weights):
        raise WeightsUnavailableError(f"weights file {weights!r} not found for {name}: {instead}")
    try:
        return constructor(include_top=False, weights=weights, input_shape=(input_size, input_size, 3),
                           pooling="avg", name=BACKBONE)
    except Exception as e:
        if weights != "imagenet":
            raise
        raise WeightsUnavailableError(f"could not get ImageNet weights for {name} ({e}): {instead}") from e


def transfer_classifier(name: str, *, num_classes: int, image_size: int, channels: int, backbone_size: int,
                        weights: str, dropout: float) -> keras.Model:
    """Input adaptation -> the application `name` (frozen if pretrained) -> dropout -> softmax."""
    _, module, smallest, _ = APPLICATIONS[name]
    if backbone_size < smallest:
        raise ValueError(f"{name} needs backbone_size >= {smallest}, got {backbone_size}")
    backbone = load_backbone(name, backbone_size, weights)
    pretrained = weights.lower() != "none"
    backbone.trainable = not pretrained
    if not pretrained:  # MobileNetV2's BatchNorm momentum 0.999 leaves the moving statistics behind a short run
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = BATCHNORM_MOMENTUM
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Resizing(backbone_size, backbone_size)(inputs)
    if channels == 1:
        x = layers.Concatenate()([x, x, x])
    x = layers.Rescaling(255.0)(x)  # the applications' preprocess_input expects 0-255 RGB
    x = layers.Lambda(getattr(keras.applications, module).preprocess_input, name="preprocess_input")(x)
    # Pretrained: BatchNorm in inference mode, also when fine-tuning (Keras's transfer-learning advice).
    x = backbone(x, training=False) if pretrained else backbone(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def register(name: str) -> None:
    """Register the application `name` as a Fashion-MNIST classifier with the transfer recipe."""
    constructor, _, smallest, fine_tune_layers = APPLICATIONS[name]

    def builder(**hparams) -> keras.Model:
        return transfer_classifier(name, **hparams)

    builder.__doc__ = f"keras.applications.{constructor} backbone + input adaptation + softmax head (transfer)."
    register_model(
        name,
        task="image_classification",
        default_dataset="fashion_mnist",
        hparams={"num_classes": 10, "image_size": 28, "channels": 1, "backbone_size": max(smallest, 96),
                 "weights": "none", "dropout": 0.2},
        input_spec={"image": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}},
        labels=FASHION_MNIST_LABELS,
        train={"epochs": 6, "batch_size": 64, "learning_rate": 1e-3, "fine_tune_epochs": 2,
               "fine_tune_layers": fine_tune_layers, "fine_tune_rate": 0.1},
    )(builder)


for _name in APPLICATIONS:
    register(_name)
