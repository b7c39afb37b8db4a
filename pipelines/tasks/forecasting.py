"""Forecasting: windows of a real series, MAE loss, forecast-vs-truth plots, and the `forecast` signature.

Signatures:
  forecast (also serving_default)   history float32 [N, input_length], raw values, oldest first
                                    ->  forecast float32 [N, horizon], the next `horizon` values
A history of another length is refused by the server (INVALID_ARGUMENT, the expected shape in the
message); NaN or infinite values are refused in the graph (INVALID_ARGUMENT).
"""
from __future__ import annotations

import os

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from pipelines import tasks
from pipelines.data import timeseries
from pipelines.tasks import plots, sequences
from zoo import ModelSpec

PLOTTED_WINDOWS = 4


def load_splits(spec: ModelSpec, recipe: dict, dataset: str, *, data_dir: str | os.PathLike | None,
                seed: int) -> tasks.Splits:
    """Chronological train/validation/test windows of series `dataset` (see `pipelines.data.timeseries`)."""
    shape = dict(input_length=spec.hparams["input_length"], horizon=spec.hparams["horizon"],
                 batch_size=recipe["batch_size"])
    train = timeseries.load(dataset, "train", shuffle=True, seed=seed, **shape)
    validation = timeseries.load(dataset, "validation", **shape)
    history, targets = (np.concatenate(parts) for parts in zip(*validation.as_numpy_iterator(), strict=True))
    picked = np.linspace(0, len(history) - 1, PLOTTED_WINDOWS).astype(int)
    return tasks.Splits(
        train=train, validation=validation, test=timeseries.load(dataset, "test", **shape),
        sample_batch=(history[picked], targets[picked]), steps_per_epoch=int(train.cardinality()),
        names={split: f"{split} ({lo:.0%}-{hi:.0%} of the series)"
               for split, (lo, hi) in timeseries.SPLIT_FRACTIONS.items()},
    )


def compile(model: keras.Model, spec: ModelSpec, recipe: dict, steps_per_epoch: int) -> None:
    """AdamW with cosine decay over the run; MAE loss (in the series' units), MAE and RMSE metrics."""
    model.compile(optimizer=sequences.cosine_adamw(recipe, steps_per_epoch),
                  loss=keras.losses.MeanAbsoluteError(),
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError("rmse")],
                  jit_compile=bool(recipe["jit_compile"]))


class ForecastPlot(keras.callbacks.Callback):
    """Logs validation histories with their true future and the model's forecast, once per epoch."""

    def __init__(self, log_dir: str, history: np.ndarray, targets: np.ndarray):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.history, self.targets = history, targets

    def on_epoch_end(self, epoch, logs=None):
        forecast = self.model.predict(self.history, verbose=0)
        figure, axes = plt.subplots(1, len(self.history), figsize=(4 * len(self.history), 3), squeeze=False)
        past, future = np.arange(-self.history.shape[1], 0), np.arange(self.targets.shape[1])
        for ax, history, truth, predicted in zip(axes[0], self.history, self.targets, forecast, strict=True):
            ax.plot(past, history, color="gray", label="history")
            ax.plot(future, truth, color="black", label="truth")
            ax.plot(future, predicted, color="tab:red", label="forecast")
        axes[0, 0].legend(loc="upper left")
        with self.writer.as_default():
            tf.summary.image("forecast_vs_truth", plots.figure_to_image(figure), step=epoch)
        self.writer.flush()


def callbacks(spec: ModelSpec, run_dir: str, sample_batch) -> list[keras.callbacks.Callback]:
    """TensorBoard extras: forecast-vs-truth plots of a few validation windows."""
    history, targets = sample_batch
    return [ForecastPlot(f"{run_dir}/validation", history, targets)]


def signatures(model: keras.Model, spec: ModelSpec, hparams: dict) -> dict:
    """`forecast` (= `serving_default`): history [N, input_length] -> the next `horizon` values."""

    @tf.function(input_signature=[tf.TensorSpec([None, hparams["input_length"]], tf.float32, name="history")])
    def forecast(history):
        history = tf.debugging.assert_all_finite(history, "history must not contain NaN or infinite values")
        return {"forecast": model(history, training=False)}

    return {"serving_default": forecast, "forecast": forecast}


def warmup_requests(spec: ModelSpec, sample_batch) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Two real validation histories for `forecast`."""
    return [("forecast", {"history": np.asarray(sample_batch[0][:2], np.float32)})]


def load_evaluation(dataset: str, split: str, *, batch_size: int, data_dir=None, cache: bool = True):
    """The whole series with the bounds of `split` and its season: windows depend on the exported model."""
    series = timeseries.load_series(dataset)
    timeseries.split_bounds(len(series.values), split)  # an unknown split fails here, with the known ones
    return tf.data.Dataset.from_tensors({"values": series.values, "split": split, "period": series.period,
                                         "batch_size": batch_size})


def evaluate_export(loaded, ds) -> dict:
    """MAE of the exported `forecast` on every window of the split, beside the seasonal-naive baseline's."""
    fn = loaded.signatures["forecast"]
    input_length = int(fn.structured_input_signature[1]["history"].shape[1])
    horizon = int(fn.structured_outputs["forecast"].shape[1])
    element = next(iter(ds))
    values, period = element["values"].numpy(), int(element["period"])
    origins = timeseries.window_origins(len(values), element["split"].numpy().decode(), input_length, horizon)
    history, targets = timeseries.windows(values, origins, input_length, horizon)
    batch = int(element["batch_size"])
    forecast = np.concatenate([fn(history=tf.constant(history[i : i + batch]))["forecast"].numpy()
                               for i in range(0, len(history), batch)])
    mae = float(np.mean(np.abs(forecast - targets)))
    naive = float(np.mean(np.abs(timeseries.seasonal_naive(history, horizon, period) - targets)))
    return {"mae": mae, "seasonal_naive_mae": naive, "beats_seasonal_naive": mae < naive, "windows": len(origins),
            "input_length": input_length, "horizon": horizon, "period": period}

