"""Character-level encoder-decoders on raw strings: `seq2seq` (GRU with additive attention) and
`seq2seq_transformer` (a pre-LayerNorm Transformer encoder-decoder).

Both work on raw strings. Tokenization is part of it (lower-casing, one token per character,
characters outside `source_chars` map to one unknown token), so that training, evaluation and the
exported `translate` signature share it. Training is teacher forcing: `train_step` turns a batch of
(source, target) strings into decoder inputs `<s> t1 .. tn` and outputs `t1 .. tn </s>`, padding
masked. `translate` decodes greedily with a `tf.while_loop`, stopping when every row has emitted
`</s>` or after `max_target_length` steps, so the whole loop runs inside an exported SavedModel.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from zoo.registry import register_model

SPECIAL = ("", "[UNK]", "<s>", "</s>")  # padding, unknown, start, end: ids 0-3 of the target vocabulary
PAD, UNK, START, END = range(len(SPECIAL))
SOURCE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 ,.-'/"  # after lower-casing; others are unknown
TARGET_CHARS = "0123456789-"
TRAIN = {"epochs": 2, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.0}
INPUT_SPEC = {"text": {"shape": [], "dtype": "string", "meaning": "a date in English, any phrasing"}}


class EncoderDecoder(keras.Model):
    """Strings in, strings out: tokenization, teacher-forced training and greedy `translate`.

    A subclass defines `encode` (source ids -> encoded, mask, decoder state) and `decode` (decoder ids
    -> logits, state), and `next_logits` (the logits of the next token after a prefix).
    """

    def __init__(self, source_chars: str, target_chars: str, max_source_chars: int, max_target_length: int,
                 **kwargs):
        super().__init__(**kwargs)
        self.max_source_chars, self.max_target_length = max_source_chars, max_target_length
        self.source_lookup = layers.StringLookup(vocabulary=list(source_chars), mask_token="")
        self.target_vocabulary = [*SPECIAL, *target_chars]
        self.target_lookup = layers.StringLookup(vocabulary=self.target_vocabulary[2:], mask_token="")

    def build(self, input_shape):
        """Nothing to do: the layers build on the first call (the builder makes one)."""

    # --- tokenization (TensorFlow string ops: they are exported with the model) -----------------------

    def tokenize_source(self, text):
        """Strings [N] -> character ids [N, longest], 0-padded."""
        chars = tf.strings.unicode_split(tf.strings.lower(text, encoding="utf-8"), "UTF-8")
        return self.source_lookup(chars.to_tensor(default_value=""))

    def tokenize_target(self, text):
        """Strings [N] -> ids [N, longest + 2] of `<s> chars </s>`, 0-padded."""
        chars = tf.strings.unicode_split(text, "UTF-8")
        batch = tf.shape(text, out_type=tf.int64)[:1]
        ids = tf.concat([tf.fill(tf.concat([batch, [1]], 0), tf.constant(START, tf.int64)),
                         tf.ragged.map_flat_values(self.target_lookup, chars),
                         tf.fill(tf.concat([batch, [1]], 0), tf.constant(END, tf.int64))], axis=1)
        return ids.to_tensor(default_value=PAD)

    def detokenize(self, ids):
        """Ids [N, T] -> strings [N]; special tokens (padding, start, end, unknown) are dropped."""
        return tf.strings.reduce_join(tf.gather(tf.constant(["", "", "", "", *self.target_vocabulary[4:]]), ids),
                                      axis=-1)

    def call(self, inputs, training=False):
        """Teacher-forced logits [N, T, vocabulary] for (source ids [N, S], decoder input ids [N, T])."""
        source_ids, decoder_ids = inputs
        encoded, mask, state = self.encode(source_ids)
        return self.decode(decoder_ids, encoded, mask, state)[0]

    # --- training on strings --------------------------------------------------------------------------

    def teacher_forcing(self, data):
        """(source, target) strings -> ((source ids, decoder inputs), decoder outputs, padding weights)."""
        source, target = data
        target_ids = self.tokenize_target(target)
        outputs = target_ids[:, 1:]
        return (self.tokenize_source(source), target_ids[:, :-1]), outputs, ops.cast(outputs != PAD, "float32")

    def train_step(self, data):
        return super().train_step(self.teacher_forcing(data))

    def test_step(self, data):
        return super().test_step(self.teacher_forcing(data))

    # --- inference --------------------------------------------------------------------------------------

    def translate(self, text):
        """Strings [N] -> greedy translations [N], decoded in a tf.while_loop (exportable)."""
        encoded, mask, state = self.encode(self.tokenize_source(text))
        prefix = tf.fill([tf.shape(encoded)[0], 1], tf.constant(START, tf.int64))
        done = tf.zeros([tf.shape(encoded)[0]], tf.bool)

        def step(i, prefix, state, done):
            logits, state = self.next_logits(prefix, encoded, mask, state)
            token = tf.where(done, tf.constant(PAD, tf.int64), tf.argmax(logits, axis=-1))
            return i + 1, tf.concat([prefix, token[:, None]], 1), state, done | (token == END)

        _, prefix, _, _ = tf.while_loop(
            lambda i, prefix, state, done: (i < self.max_target_length) & ~tf.reduce_all(done),
            step, (tf.constant(0), prefix, state, done),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None]), state.shape, tf.TensorShape([None])))
        return self.detokenize(prefix[:, 1:])


class Seq2Seq(EncoderDecoder):
    """Encoder: embedding -> bidirectional GRU; decoder: GRU -> additive attention -> softmax over chars."""

    def __init__(self, source_chars: str, target_chars: str, embedding_dim: int, units: int,
                 max_source_chars: int, max_target_length: int, **kwargs):
        super().__init__(source_chars, target_chars, max_source_chars, max_target_length, **kwargs)
        self.source_embedding = layers.Embedding(self.source_lookup.vocabulary_size(), embedding_dim)
        self.encoder = layers.Bidirectional(layers.GRU(units, return_sequences=True, return_state=True),
                                            merge_mode="sum")
        self.bridge = layers.Dense(units, activation="tanh")
        self.target_embedding = layers.Embedding(len(self.target_vocabulary), embedding_dim)
        self.decoder = layers.GRU(units, return_sequences=True, return_state=True)
        self.attention = layers.AdditiveAttention()
        self.head = layers.Dense(len(self.target_vocabulary))

    def encode(self, source_ids):
        """(encoder outputs [N, S, units], source mask [N, S], initial decoder state [N, units])."""
        mask = ops.not_equal(source_ids, PAD)
        outputs, forward, backward = self.encoder(self.source_embedding(source_ids), mask=mask)
        return outputs, mask, self.bridge(ops.concatenate([forward, backward], axis=-1))

    def decode(self, decoder_ids, encoded, mask, state):
        """(logits [N, T, vocabulary], last state) for decoder inputs [N, T]."""
        outputs, state = self.decoder(self.target_embedding(decoder_ids), initial_state=state)
        context = self.attention([outputs, encoded], mask=[None, mask])
        return self.head(ops.concatenate([outputs, context], axis=-1)), state

    def next_logits(self, prefix, encoded, mask, state):
        """The recurrent state carries the prefix: one GRU step on its last token."""
        logits, state = self.decode(prefix[:, -1:], encoded, mask, state)
        return logits[:, -1], state


class TransformerBlock(layers.Layer):
    """Pre-LayerNorm block: self-attention (causal in the decoder), cross-attention (decoder only), GELU MLP."""

    def __init__(self, dim: int, heads: int, decoder: bool, **kwargs):
        super().__init__(**kwargs)
        self.decoder = decoder
        self.self_norm, self.mlp_norm = layers.LayerNormalization(), layers.LayerNormalization()
        self.self_attention = layers.MultiHeadAttention(heads, dim // heads)
        if decoder:
            self.cross_norm = layers.LayerNormalization()
            self.cross_attention = layers.MultiHeadAttention(heads, dim // heads)
        self.mlp_in, self.mlp_out = layers.Dense(4 * dim, activation="gelu"), layers.Dense(dim)

    def call(self, x, mask, encoded=None):
        """x [N, T, dim]; `mask` [N, S]: the source positions that are not padding."""
        h = self.self_norm(x)
        if self.decoder:
            x = x + self.self_attention(h, h, use_causal_mask=True)
            h = self.cross_norm(x)
            x = x + self.cross_attention(h, encoded, attention_mask=mask[:, None, :])
        else:
            x = x + self.self_attention(h, h, attention_mask=mask[:, None, :])
        return x + self.mlp_out(self.mlp_in(self.mlp_norm(x)))


class TransformerSeq2Seq(EncoderDecoder):
    """Encoder and decoder of `num_layers` pre-LayerNorm blocks, learned positions, greedy decoding."""

    def __init__(self, source_chars: str, target_chars: str, dim: int, heads: int, num_layers: int,
                 max_source_chars: int, max_target_length: int, **kwargs):
        super().__init__(source_chars, target_chars, max_source_chars, max_target_length, **kwargs)
        self.source_embedding = layers.Embedding(self.source_lookup.vocabulary_size(), dim)
        self.source_positions = layers.Embedding(max_source_chars, dim)
        self.target_embedding = layers.Embedding(len(self.target_vocabulary), dim)
        self.target_positions = layers.Embedding(max_target_length + 1, dim)
        self.encoder = [TransformerBlock(dim, heads, decoder=False) for _ in range(num_layers)]
        self.decoder = [TransformerBlock(dim, heads, decoder=True) for _ in range(num_layers)]
        self.encoder_norm, self.decoder_norm = layers.LayerNormalization(), layers.LayerNormalization()
        self.head = layers.Dense(len(self.target_vocabulary))

    def encode(self, source_ids):
        """(encoder outputs [N, S, dim], source mask [N, S], an empty state: the decoder reads the prefix)."""
        mask = ops.not_equal(source_ids, PAD)
        x = self.source_embedding(source_ids) + self.source_positions(ops.arange(ops.shape(source_ids)[1]))
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_norm(x), mask, ops.zeros((ops.shape(source_ids)[0], 0))

    def decode(self, decoder_ids, encoded, mask, state):
        """(logits [N, T, vocabulary], state) for decoder inputs [N, T]."""
        x = self.target_embedding(decoder_ids) + self.target_positions(ops.arange(ops.shape(decoder_ids)[1]))
        for block in self.decoder:
            x = block(x, mask, encoded)
        return self.head(self.decoder_norm(x)), state

    def next_logits(self, prefix, encoded, mask, state):
        """The whole prefix again (at most `max_target_length` tokens: no cache needed)."""
        logits, state = self.decode(prefix, encoded, mask, state)
        return logits[:, -1], state


@register_model(
    "seq2seq",
    task="translation",
    default_dataset="dates",
    hparams={"source_chars": SOURCE_CHARS, "target_chars": TARGET_CHARS, "embedding_dim": 32, "units": 128,
             "max_source_chars": 64, "max_target_length": 16},
    input_spec=INPUT_SPEC,
    train=TRAIN,
)
def seq2seq(source_chars: str, target_chars: str, embedding_dim: int, units: int, max_source_chars: int,
            max_target_length: int) -> keras.Model:
    """Character GRU encoder-decoder with additive attention, greedy decoding in-graph: dates -> ISO 8601."""
    return built(Seq2Seq(source_chars, target_chars, embedding_dim, units, max_source_chars, max_target_length,
                         name="seq2seq"))


@register_model(
    "seq2seq_transformer",
    task="translation",
    default_dataset="dates",
    hparams={"source_chars": SOURCE_CHARS, "target_chars": TARGET_CHARS, "dim": 64, "heads": 4, "num_layers": 2,
             "max_source_chars": 64, "max_target_length": 16},
    input_spec=INPUT_SPEC,
    train={**TRAIN, "epochs": 6, "learning_rate": 1e-3},  # still learning after 2 (validation exact match 0.89)
)
def seq2seq_transformer(source_chars: str, target_chars: str, dim: int, heads: int, num_layers: int,
                        max_source_chars: int, max_target_length: int) -> keras.Model:
    """Character Transformer encoder-decoder (pre-LayerNorm, GELU, learned positions), greedy decoding in-graph."""
    return built(TransformerSeq2Seq(source_chars, target_chars, dim, heads, num_layers, max_source_chars,
                                    max_target_length, name="seq2seq_transformer"))


def built(model: EncoderDecoder) -> EncoderDecoder:
    """`model` after one call, so that its weights exist (and a checkpoint can be loaded into it)."""
    model((ops.ones((1, 2), "int64"), ops.ones((1, 2), "int64")))
    return model
