"""`gpt`: a decoder-only Transformer in the style of Karpathy's nanoGPT, at the character level.

Pre-LayerNorm blocks of causal self-attention and a GELU MLP, learned positions, the output projection
tied to the token embedding, nanoGPT's initialisation (normal 0.02, residual projections scaled by
1/sqrt(2 * n_layer)). Defaults are nanoGPT's documented CPU configuration for Shakespeare characters.

Two code paths over the same layers and weights:
  call(tokens)                                 the training forward pass: logits for every position
  prefill(tokens) -> (logits, cache)           a prompt, keeping each layer's keys/values in a cache of
                                               `block_size` slots
  decode_step(token, position, cache)          one new token at `position`: its keys/values go into the
                                               cache, attention reads the filled slots only
Attention is written with keras.ops (one fused q/k/v projection, masked softmax) rather than
keras.layers.MultiHeadAttention because the cache path needs the projections. Measured by bench/language.py on
the default configuration with XLA (one run of 300 steps each, bench/results/language.md): 38.2 CPU ms per
training step against 34.8 for MultiHeadAttention (9% less; an earlier run had them tied, 42.6 and 43.1), and
61.6 without XLA.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from zoo.labels import SHAKESPEARE_CHARS
from zoo.registry import register_model

INIT_STD = 0.02


class CausalSelfAttention(layers.Layer):
    """Multi-head causal self-attention with a fused q/k/v projection."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, residual_std: float, **kwargs):
        super().__init__(**kwargs)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not a multiple of n_head={n_head}")
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.qkv = layers.Dense(3 * n_embd, use_bias=bias, kernel_initializer=keras.initializers.RandomNormal(
            stddev=INIT_STD), name="qkv")
        self.proj = layers.Dense(n_embd, use_bias=bias, kernel_initializer=keras.initializers.RandomNormal(
            stddev=residual_std), name="proj")
        self.attn_dropout = layers.Dropout(dropout)
        self.resid_dropout = layers.Dropout(dropout)

    def heads(self, x):
        """[B, T, C] -> q, k, v, each [B, heads, T, head_dim]."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.n_head, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q, k, v, mask, training):
        """Softmax(q k^T / sqrt(d)) v where `mask` is true, projected back to [B, T, C]."""
        scores = ops.einsum("bhqd,bhkd->bhqk", q, k) * (1.0 / math.sqrt(self.head_dim))
        scores = ops.where(mask, scores, ops.cast(-1e9, scores.dtype))
        weights = self.attn_dropout(ops.softmax(scores, axis=-1), training=training)
        y = ops.transpose(ops.einsum("bhqk,bhkd->bhqd", weights, v), (0, 2, 1, 3))
        y = ops.reshape(y, (ops.shape(y)[0], ops.shape(y)[1], self.n_head * self.head_dim))
        return self.resid_dropout(self.proj(y), training=training)

    def call(self, x, training=False):
        """Causal attention over `x`; also returns its keys and values [B, heads, T, head_dim]."""
        q, k, v = self.heads(x)
        length = ops.shape(x)[1]
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        return self.attend(q, k, v, causal, training), k, v

    def step(self, x, cache_k, cache_v, position):
        """Attention of one token `x` [B, 1, C] at `position`, writing its key/value into the cache slot."""
        q, k, v = self.heads(x)
        slots = ops.shape(cache_k)[2]
        slot = ops.reshape(ops.one_hot(position, slots, dtype=cache_k.dtype), (1, 1, slots, 1))
        cache_k = cache_k * (1.0 - slot) + k * slot
        cache_v = cache_v * (1.0 - slot) + v * slot
        filled = ops.reshape(ops.arange(slots) <= position, (1, 1, 1, slots))
        return self.attend(q, cache_k, cache_v, filled, False), cache_k, cache_v


class Block(layers.Layer):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)): the pre-LayerNorm Transformer block."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, residual_std: float, **kwargs):
        super().__init__(**kwargs)
        self.ln_1 = layers.LayerNormalization(epsilon=1e-5, center=bias, name="ln_1")
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, residual_std, name="attn")
        self.ln_2 = layers.LayerNormalization(epsilon=1e-5, center=bias, name="ln_2")
        self.fc = layers.Dense(4 * n_embd, use_bias=bias, activation="gelu",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=INIT_STD), name="fc")
        self.fc_proj = layers.Dense(n_embd, use_bias=bias, name="fc_proj",
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=residual_std))
        self.mlp_dropout = layers.Dropout(dropout)

    def mlp(self, x, training):
        return self.mlp_dropout(self.fc_proj(self.fc(self.ln_2(x))), training=training)

    def call(self, x, training=False):
        """The block over a sequence; also returns the attention's keys and values."""
        y, k, v = self.attn(self.ln_1(x), training=training)
        x = x + y
        return x + self.mlp(x, training), k, v

    def step(self, x, cache_k, cache_v, position):
        """The block on one token at `position`, reading and updating the key/value cache."""
        y, cache_k, cache_v = self.attn.step(self.ln_1(x), cache_k, cache_v, position)
        x = x + y
        return x + self.mlp(x, False), cache_k, cache_v


class GPT(keras.Model):
    """Token + position embeddings -> blocks -> LayerNorm -> logits through the token embedding (tied)."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float, bias: bool, **kwargs):
        super().__init__(**kwargs)
        self.context_size = block_size
        init = keras.initializers.RandomNormal(stddev=INIT_STD)
        residual_std = INIT_STD / math.sqrt(2 * n_layer)
        # Keras's tied embedding: `reverse=True` projects back through the same matrix, and stays right when
        # the layer is quantized (its int8 `embeddings` are scaled in both directions).
        self.token_embedding = layers.ReversibleEmbedding(vocab_size, n_embd, embeddings_initializer=init, name="wte")
        self.position_embedding = layers.Embedding(block_size, n_embd, embeddings_initializer=init, name="wpe")
        self.embedding_dropout = layers.Dropout(dropout)
        self.blocks = [Block(n_embd, n_head, dropout, bias, residual_std, name=f"h{i}") for i in range(n_layer)]
        self.ln_f = layers.LayerNormalization(epsilon=1e-5, center=bias, name="ln_f")

    def embed(self, tokens, start=0, training=False):
        positions = ops.arange(ops.shape(tokens)[1]) + start
        x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
        return self.embedding_dropout(x, training=training)

    def head(self, x):
        """Logits through the transposed token embedding (weight tying)."""
        return self.token_embedding(self.ln_f(x), reverse=True)

    def call(self, tokens, training=False):
        """Logits [B, T, vocab] for every position of `tokens` [B, T], T <= block_size."""
        x = self.embed(tokens, training=training)
        for block in self.blocks:
            x, _, _ = block(x, training=training)
        return self.head(x)

    def prefill(self, tokens):
        """Logits [B, T, vocab] of a prompt and its key/value cache, each layer's [B, heads, block_size, d]."""
        x = self.embed(tokens)
        pad = [[0, 0], [0, 0], [0, self.context_size - ops.shape(tokens)[1]], [0, 0]]
        cache = []
        for block in self.blocks:
            x, k, v = block(x)
            cache += [ops.pad(k, pad), ops.pad(v, pad)]
        return self.head(x), tuple(cache)

    def decode_step(self, token, position, cache):
        """Logits [B, vocab] of one more token [B] at `position` (< block_size), and the updated cache."""
        x = self.embed(token[:, None], start=position)
        updated = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, cache[2 * i], cache[2 * i + 1], position)
            updated += [k, v]
        return self.head(x)[:, 0], tuple(updated)


@register_model(
    "gpt",
    task="language_modelling",
    default_dataset="shakespeare_char",
    hparams={"vocab_size": len(SHAKESPEARE_CHARS), "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128,
             "dropout": 0.0, "bias": False},
    input_spec={"tokens": {"shape": [None], "dtype": "int32", "vocabulary": "labels"}},
    labels=SHAKESPEARE_CHARS,
    # nanoGPT's CPU recipe: 2000 iterations of batch 12, AdamW (beta2 0.99, weight decay 0.1), lr 1e-3 with
    # 100 warmup iterations and cosine decay to 1e-4, gradient clipping at 1.0; eval = 20 random batches.
    train={"epochs": 8, "steps_per_epoch": 250, "batch_size": 12, "sequence_length": 64, "learning_rate": 1e-3,
           "min_learning_rate": 1e-4, "warmup_steps": 100, "weight_decay": 0.1, "beta_2": 0.99, "clipnorm": 1.0,
           "eval_batches": 20, "jit_compile": True},
)
def gpt(vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float,
        bias: bool) -> keras.Model:
    """nanoGPT-style decoder-only Transformer: causal self-attention, pre-LayerNorm, GELU, tied embeddings."""
    model = GPT(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias, name="gpt")
    model(np.zeros((1, block_size), "int32"))  # build every weight now (checkpoints load into a built model)
    return model
