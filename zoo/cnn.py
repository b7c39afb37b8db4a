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
    hparams={"num_classes": 10, "image_size": 28, "channels": 1, "dropout": 0.0},
    input_spec={"image": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}},
    labels=FASHION_MNIST_LABELS,
    train={"epochs": 10, "batch_size": 128, "learning_rate": 2e-3},
)
def cnn(num_classes: int, image_size: int, channels: int, dropout: float) -> keras.Model:
    """Conv2D 32 -> MaxPool -> Conv2D 64 -> MaxPool -> Dense 64 -> softmax: the seed classifier."""
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")
