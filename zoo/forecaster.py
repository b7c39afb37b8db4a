"""`forecaster`: an LSTM that reads a window of a univariate series and predicts its next `horizon` values.

Normalization lives in the model, per window: the history is shifted by its last value and scaled by
its standard deviation, the network predicts the future in those units, and the output is mapped
back. A window of a trending series (CO2 rises ~1.5 ppm a year) thus looks like every other window,
and the model takes and returns raw values.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from zoo.registry import register_model

EPSILON = 1e-3  # floor of a window's scale, so that a flat history does not divide by zero


class WindowNormalization(layers.Layer):
    """history [N, T] -> (normalized [N, T, 1], shift [N, 1], scale [N, 1])."""

    def call(self, history):
        shift = history[:, -1:]
        scale = ops.maximum(ops.std(history, axis=-1, keepdims=True), EPSILON)
        return ops.expand_dims((history - shift) / scale, -1), shift, scale


@register_model(
    "forecaster",
    task="forecasting",
    default_dataset="co2",
    hparams={"input_length": 104, "horizon": 13, "units": 64, "num_layers": 1, "dropout": 0.0},
    input_spec={"history": {"shape": [104], "dtype": "float32", "meaning": "the last input_length values"}},
    train={"epochs": 30, "batch_size": 32, "learning_rate": 3e-3, "weight_decay": 0.0},
)
def forecaster(input_length: int, horizon: int, units: int, num_layers: int, dropout: float) -> keras.Model:
    """Window normalization -> LSTM x num_layers -> Dense(horizon): a direct multi-step forecaster."""
    history = keras.Input((input_length,), name="history")
    x, shift, scale = WindowNormalization(name="normalize")(history)
    for i in range(num_layers):
        x = layers.LSTM(units, return_sequences=i < num_layers - 1, dropout=dropout, name=f"lstm_{i}")(x)
    change = layers.Dense(horizon, name="change")(x)
    forecast = layers.Add(name="forecast")([layers.Multiply()([change, scale]), shift])
    return keras.Model(history, forecast, name="forecaster")
