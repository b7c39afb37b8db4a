"""Matplotlib figures as TensorBoard images (confusion matrices, forecast plots)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: render to memory

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def figure_to_image(figure) -> tf.Tensor:
    """A matplotlib figure as a [1, H, W, 4] uint8 image for `tf.summary.image`; closes the figure (if pyplot's)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return tf.image.decode_png(buffer.getvalue(), channels=4)[None]


def confusion_matrix_figure(matrix: np.ndarray, labels: list[str]):
    """A labelled confusion matrix (rows: true class, columns: predicted), counts in the cells. Drawn on a
    Figure of its own, not pyplot's: safe to draw off the main thread."""
    figure = Figure(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
             xlabel="predicted", ylabel="true")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, int(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    return figure
