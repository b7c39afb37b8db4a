"""Forecasting: windows of a real series, MAE loss, forecast-vs-truth plots, and the `forecast` signature.

Signatures:
  forecast (also serving_default)   history float32 [N, input_length], raw values, oldest first
                                    ->  forecast float32 [N, horizon], the next `horizon` values
A history of another length is refused by the server (INVALID_ARGUMENT, the expected shape in the
message); NaN or infinite values are refused in the graph (INVALID_ARGUMENT).
"""
from __future__ import annotations

import dataclasses

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines.data import timeseries
from pipelines.tasks import plots
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import EpochSummaries
from pipelines.tasks.sequences import cosine_adamw

PLOTTED_WINDOWS = 4


class ForecastPlot(EpochSummaries):
    """Logs validation histories with their true future and the model's forecast, once per epoch."""

    def __init__(self, log_dir: str, history: np.ndarray, targets: np.ndarray):
        super().__init__(log_dir)
        self.history, self.targets = history, targets

    @override
    def summarize(self):
        forecast = self.model.predict(self.history, verbose=0)
        figure, axes = plt.subplots(1, len(self.history), figsize=(4 * len(self.history), 3), squeeze=False)
        past, future = np.arange(-self.history.shape[1], 0), np.arange(self.targets.shape[1])
        for ax, history, truth, predicted in zip(axes[0], self.history, self.targets, forecast, strict=True):
            ax.plot(past, history, color="gray", label="history")
            ax.plot(future, truth, color="black", label="truth")
            ax.plot(future, predicted, color="tab:red", label="forecast")
        axes[0, 0].legend(loc="upper left")
        tf.summary.image("forecast_vs_truth", plots.figure_to_image(figure))


@dataclasses.dataclass(frozen=True)
class SeriesSplit:
    """What evaluating a forecaster reads: the whole series, the split to score, its season, the batch size
    (windows depend on the exported model's input length and horizon, so they are cut at evaluation)."""

    values: np.ndarray
    split: str
    period: int
    batch_size: int


class Forecasting(Task):
    """Chronological windows of a real series, MAE loss, forecast-vs-truth plots, `forecast` (module doc)."""

    name = "forecasting"
    recipe_defaults = {"weight_decay": 1e-4}

    @override
    def load_splits(self, data_dir) -> Splits:
        """Chronological train/validation/test windows of the series (see `pipelines.data.timeseries`)."""
        shape = dict(input_length=self.hparams["input_length"], horizon=self.hparams["horizon"],
                     batch_size=self.recipe["batch_size"])
        dataset = self.run.dataset
        train = timeseries.load(dataset, "train", shuffle=True, seed=self.run.seed, **shape)
        validation = timeseries.load(dataset, "validation", **shape)
        history, targets = (np.concatenate(parts) for parts in zip(*validation.as_numpy_iterator(), strict=True))
        picked = np.linspace(0, len(history) - 1, PLOTTED_WINDOWS).astype(int)
        return Splits(
            train=train.repeat(), validation=validation, test=timeseries.load(dataset, "test", **shape),
            sample_batch=(history[picked], targets[picked]), steps_per_epoch=int(train.cardinality()),
            names={split: f"{split} ({lo:.0%}-{hi:.0%} of the series)"
                   for split, (lo, hi) in timeseries.SPLIT_FRACTIONS.items()},
        )

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW with cosine decay over the run; MAE loss (in the series' units), MAE and RMSE metrics."""
        model.compile(optimizer=cosine_adamw(self.recipe, steps_per_epoch),
                      loss=keras.losses.MeanAbsoluteError(),
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae"),
                               keras.metrics.RootMeanSquaredError("rmse")],
                      jit_compile=bool(self.recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: forecast-vs-truth plots of a few validation windows."""
        history, targets = sample_batch
        return [ForecastPlot(f"{run_dir}/validation", history, targets)]

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`forecast` (= `serving_default`): history [N, input_length] -> the next `horizon` values."""

        @tf.function(input_signature=[tf.TensorSpec([None, self.hparams["input_length"]], tf.float32,
                                                    name="history")])
        def forecast(history):
            history = tf.debugging.assert_all_finite(history, "history must not contain NaN or infinite values")
            return {"forecast": model(history, training=False)}

        return {"serving_default": forecast, "forecast": forecast}

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """Two real validation histories for `forecast`."""
        return [("forecast", {"history": np.asarray(sample_batch[0][:2], np.float32)})]

    @classmethod
    @override
    def load_evaluation(cls, dataset: str, split: str, *, batch_size: int, data_dir=None) -> SeriesSplit:
        """The whole series with the split to score and its season."""
        series = timeseries.load_series(dataset)
        timeseries.split_bounds(len(series.values), split)  # an unknown split fails here, with the known ones
        return SeriesSplit(series.values, split, series.period, batch_size)

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds: SeriesSplit, card) -> dict:
        """MAE of the exported `forecast` on every window of the split, beside the seasonal-naive baseline's."""
        fn = loaded.signatures["forecast"]
        input_length = int(fn.structured_input_signature[1]["history"].shape[1])
        horizon = int(fn.structured_outputs["forecast"].shape[1])
        origins = timeseries.window_origins(len(ds.values), ds.split, input_length, horizon)
        history, targets = timeseries.windows(ds.values, origins, input_length, horizon)
        forecast = np.concatenate([fn(history=tf.constant(history[i : i + ds.batch_size]))["forecast"].numpy()
                                   for i in range(0, len(history), ds.batch_size)])
        mae = float(np.mean(np.abs(forecast - targets)))
        naive = float(np.mean(np.abs(timeseries.seasonal_naive(history, horizon, ds.period) - targets)))
        return {"mae": mae, "seasonal_naive_mae": naive, "beats_seasonal_naive": mae < naive,
                "windows": len(origins), "input_length": input_length, "horizon": horizon, "period": ds.period}
