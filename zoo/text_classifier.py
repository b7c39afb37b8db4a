"""`text_classifier`: the seed's Embedding -> LSTM(64) -> Dense(3) classifier, on raw strings.

Text vectorization is the model's first layer (lower-casing, punctuation stripped, word tokens,
sequences cut or padded to `sequence_length`), so the exported model takes strings. Its vocabulary
is adapted on the train split before training (`pipelines.tasks.text_classification.adapt`).
"""
from __future__ import annotations

import keras
from keras import layers

from zoo.labels import PLAY_GENRES
from zoo.registry import register_model

VECTORIZE = "vectorize"  # the name of the TextVectorization layer, which the task adapts


@register_model(
    "text_classifier",
    task="text_classification",
    default_dataset="shakespeare_plays",
    hparams={"labels": PLAY_GENRES, "max_tokens": 20_000, "sequence_length": 48, "embedding_dim": 64,
             "lstm_units": 64, "dropout": 0.2},
    input_spec={"text": {"shape": [], "dtype": "string", "meaning": "raw UTF-8 text"}},
    labels=PLAY_GENRES,
    train={"epochs": 2, "batch_size": 64, "learning_rate": 2e-3},
)
def text_classifier(labels: tuple[str, ...], max_tokens: int, sequence_length: int, embedding_dim: int,
                    lstm_units: int, dropout: float) -> keras.Model:
    """TextVectorization -> Embedding -> LSTM -> Dense softmax over `labels` (one class per label)."""
    text = keras.Input((), dtype="string", name="text")
    x = layers.TextVectorization(max_tokens, output_sequence_length=sequence_length, name=VECTORIZE)(text)
    x = layers.Embedding(max_tokens, embedding_dim, mask_zero=True)(x)
    x = layers.LSTM(lstm_units, dropout=dropout)(x)
    probabilities = layers.Dense(len(labels), activation="softmax", name="probabilities")(x)
    return keras.Model(text, probabilities, name="text_classifier")
