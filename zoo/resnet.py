"""`resnet`: pre-activation ResNet for small images (He et al., "Identity Mappings in Deep Residual Networks").

The CIFAR-style network of depth 6n + 2 (20, 32, 56, ...): a 3x3 stem, three stages of n basic
blocks at 16, 32 and 64 filters (times `width`), the second and third starting with stride 2, then
BN-ReLU, global average pooling and a softmax. Each block is BN-ReLU-conv-BN-ReLU-conv with an
identity shortcut (a strided 1x1 conv when the shape changes): the shortcut path stays clean of
activations, which is what lets deep stacks train. Optimizer, weight decay, schedule, augmentation
and test-time flip averaging are the recipe's (`pipelines.tasks.image_classification`).
"""
from __future__ import annotations

import keras
from keras import layers

from zoo.labels import FASHION_MNIST_LABELS
from zoo.registry import register_model


def preact_block(x, filters: int, strides: int):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the (projected, if the shape changes) input."""
    activated = layers.ReLU()(layers.BatchNormalization()(x))
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(activated)
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(activated)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    return layers.Add()([shortcut, y])


@register_model(
    "resnet",
    task="image_classification",
    default_dataset="fashion_mnist",
    hparams={"num_classes": 10, "image_size": 28, "channels": 1, "depth": 20, "width": 1},
    input_spec={"image": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}},
    labels=FASHION_MNIST_LABELS,
    # The sweep's run with the highest validation accuracy (bench/results/resnet-recipe.md: 19 thirty-epoch runs
    # of this network on a GPU, chosen on train[90%:] only); the flip-averaged prediction adds ~0.3 points at
    # twice the inference compute. Test accuracy over seeds: bench/results/resnet-seeds.md.
    train={"epochs": 30, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 5e-3,
           "warmup_epochs": 2, "label_smoothing": 0.1, "augment": True, "test_time_flip": True},
)
def resnet(num_classes: int, image_size: int, channels: int, depth: int, width: int) -> keras.Model:
    """Pre-activation ResNet-`depth` (6n + 2): three stages of n blocks, 16/32/64 x `width` filters."""
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 56, ...), got {depth}")
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Conv2D(16 * width, 3, padding="same", use_bias=False)(inputs)
    for stage in range(3):
        for block in range((depth - 2) // 6):
            x = preact_block(x, 16 * width * 2**stage, strides=2 if stage and not block else 1)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")
