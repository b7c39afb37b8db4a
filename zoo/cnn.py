"""`cnn`: the seed's small convolutional classifier for 28x28 grayscale images."""
from __future__ import annotations

import keras
from keras import layers

from zoo.labels import FASHION_MNIST_LABELS
from zoo.registry import register_model


@register_model(
    "cnn",
    task="image_classification",
    default_dataset="fashion_mnist",
    hparams={"num_classes": 10, "image_size": 28, "channels": 1, "dropout": 0.0, "width": 1.0},
    input_spec={"image": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}},
    labels=FASHION_MNIST_LABELS,
    train={"epochs": 10, "batch_size": 128, "learning_rate": 2e-3},
)
def cnn(num_classes: int, image_size: int, channels: int, dropout: float, width: float) -> keras.Model:
    """Conv2D 32 -> MaxPool -> Conv2D 64 -> MaxPool -> Dense 64 -> softmax: the seed classifier. `width` scales
    the three layers' units (0.25: 8, 16, 16 — a narrow student for distillation)."""
    if width <= 0:
        raise ValueError(f"cnn: width must be positive, got {width}")
    units = [max(1, round(n * width)) for n in (32, 64, 64)]
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Conv2D(units[0], 3, activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(units[1], 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(units[2], activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")
