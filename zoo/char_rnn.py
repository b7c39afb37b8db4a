"""`char_rnn`: Karpathy's char-rnn in Keras: a multi-layer LSTM (or GRU) predicting the next character.

Defaults are char-rnn's (2 layers of 128 LSTM units, sequences of 50, batch 50, lr 2e-3, clipping at 5).
Two code paths over the same layers and weights:
  call(tokens)                                the training forward pass: logits for every position
  prefill(tokens) -> (logits, state)          a prompt, keeping every layer's final recurrent state
  decode_step(token, position, state)         one more token from that state (`position` is unused:
                                              a recurrent state has no context limit)
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from zoo.labels import SHAKESPEARE_CHARS
from zoo.registry import register_model

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}


class CharRNN(keras.Model):
    """Embedding -> n recurrent layers (dropout between) -> Dense logits over the vocabulary."""

    context_size = None  # unbounded: the recurrent state carries the whole past

    def __init__(self, vocab_size: int, cell: str, units: int, n_layer: int, embedding_dim: int, dropout: float,
                 **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.rnns = [CELLS[cell](units, return_sequences=True, return_state=True, name=f"{cell}{i}")
                     for i in range(n_layer)]
        self.dropouts = [layers.Dropout(dropout) for _ in range(n_layer)]
        self.head = layers.Dense(vocab_size, name="logits")

    def run(self, tokens, state=None, training=False):
        """Logits [B, T, vocab] and every layer's final state, starting from `state` (zeros if None)."""
        x = self.embedding(tokens)
        states, offset = [], 0
        for rnn, dropout in zip(self.rnns, self.dropouts, strict=True):
            size = len(rnn.cell.state_size) if isinstance(rnn.cell.state_size, (list, tuple)) else 1
            initial = None if state is None else list(state[offset:offset + size])
            x, *final = rnn(x, initial_state=initial, training=training)
            x = dropout(x, training=training)
            states += final
            offset += size
        return self.head(x), tuple(states)

    def call(self, tokens, training=False):
        """Logits [B, T, vocab] for every position of `tokens` [B, T]."""
        return self.run(tokens, training=training)[0]

    def prefill(self, tokens):
        """Logits [B, T, vocab] of a prompt and the recurrent state after it."""
        return self.run(tokens)

    def decode_step(self, token, position, state):
        """Logits [B, vocab] of one more token [B] and the updated state."""
        logits, state = self.run(token[:, None], state)
        return logits[:, 0], state


@register_model(
    "char_rnn",
    task="language_modelling",
    default_dataset="shakespeare_char",
    hparams={"vocab_size": len(SHAKESPEARE_CHARS), "cell": "lstm", "units": 128, "n_layer": 2,
             "embedding_dim": 64, "dropout": 0.0},
    input_spec={"tokens": {"shape": [None], "dtype": "int32", "vocabulary": "labels"}},
    labels=SHAKESPEARE_CHARS,
    train={"epochs": 8, "steps_per_epoch": 250, "batch_size": 50, "sequence_length": 50, "learning_rate": 2e-3,
           "min_learning_rate": 2e-4, "warmup_steps": 0, "weight_decay": 0.0, "beta_2": 0.999, "clipnorm": 5.0,
           "eval_batches": 20, "jit_compile": False},
)
def char_rnn(vocab_size: int, cell: str, units: int, n_layer: int, embedding_dim: int, dropout: float) -> keras.Model:
    """Multi-layer LSTM/GRU character model (Karpathy's char-rnn)."""
    model = CharRNN(vocab_size, cell, units, n_layer, embedding_dim, dropout, name="char_rnn")
    model(np.zeros((1, 1), "int32"))  # build every weight now (checkpoints load into a built model)
    return model
