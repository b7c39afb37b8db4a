"""Real univariate time series shipped by `statsmodels`, split chronologically into windows, as tf.data pipelines.

    co2        Mauna Loa atmospheric CO2 (ppm), weekly, March 1958 - December 2001: 2,284 weeks,
               the 59 missing weeks filled by linear interpolation. Seasonal period 52 weeks.
    sunspots   Yearly mean sunspot numbers, 1700 - 2008: 309 years. Seasonal period 11 years (solar cycle).

Splits are chronological: train = first 70%, validation = next 15%, test = last 15%. A window's
targets lie inside its split; its history may reach back into the splits before (as it would when
forecasting for real), never forward.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from pipelines.errors import UserError

SPLIT_FRACTIONS = {"train": (0.0, 0.70), "validation": (0.70, 0.85), "test": (0.85, 1.0)}


@dataclasses.dataclass(frozen=True)
class Series:
    """One series: values, seasonal period (in steps), what a step is, and where it comes from."""

    values: np.ndarray
    period: int
    step: str
    source: str


def _co2() -> Series:
    from statsmodels.datasets import co2

    values = co2.load_pandas().data["co2"].interpolate(method="linear").to_numpy(np.float32)
    return Series(values, period=52, step="week", source="statsmodels.datasets.co2 (Mauna Loa, NOAA)")


def _sunspots() -> Series:
    from statsmodels.datasets import sunspots

    values = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float32)
    return Series(values, period=11, step="year", source="statsmodels.datasets.sunspots (SIDC)")


SERIES: dict[str, Callable[[], Series]] = {"co2": _co2, "sunspots": _sunspots}


def load_series(name: str) -> Series:
    """The series called `name` (one of `SERIES`)."""
    if name not in SERIES:
        raise UserError(f"unknown time series {name!r}; forecasting datasets: {', '.join(sorted(SERIES))}")
    try:
        return SERIES[name]()
    except ImportError:
        raise ImportError(f"time series {name!r} ships with statsmodels: pip install statsmodels") from None


def split_bounds(length: int, split: str) -> tuple[int, int]:
    """[start, end) of `split`'s targets in a series of `length` steps."""
    if split not in SPLIT_FRACTIONS:
        raise UserError(f"unknown split {split!r}; one of {', '.join(SPLIT_FRACTIONS)}")
    lo, hi = SPLIT_FRACTIONS[split]
    return round(lo * length), round(hi * length)


def window_origins(length: int, split: str, input_length: int, horizon: int) -> np.ndarray:
    """First target index of every window whose targets lie in `split` and whose history fits before it."""
    start, end = split_bounds(length, split)
    origins = np.arange(max(start, input_length), end - horizon + 1)
    if not len(origins):
        raise UserError(f"split {split!r} ({end - start} steps) has no window of {input_length} history steps "
                         f"and {horizon} targets: shorten input_length or horizon")
    return origins


def windows(values: np.ndarray, origins: np.ndarray, input_length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(history [N, input_length], targets [N, horizon]) for each origin."""
    history = np.stack([values[t - input_length : t] for t in origins])
    targets = np.stack([values[t : t + horizon] for t in origins])
    return history, targets


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """The last observed season repeated: y[t + h] predicted by y[t - period + (h mod period)]."""
    if period > history.shape[1]:
        raise ValueError(f"seasonal-naive needs a history of at least one period ({period}); got {history.shape[1]}")
    return history[:, history.shape[1] - period + np.arange(horizon) % period]


def load(name: str, split: str, *, input_length: int, horizon: int, batch_size: int, shuffle: bool = False,
         seed: int = 0) -> tf.data.Dataset:
    """Batched (history, targets) windows of `split` of series `name`."""
    series = load_series(name)
    history, targets = windows(series.values, window_origins(len(series.values), split, input_length, horizon),
                               input_length, horizon)
    ds = tf.data.Dataset.from_tensor_slices((history, targets)).cache()
    if shuffle:
        ds = ds.shuffle(len(history), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
