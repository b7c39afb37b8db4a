"""`seq2seq`: a character-level GRU encoder-decoder with attention (Bahdanau-style additive scores).

The model works on raw strings. Tokenization is part of it (lower-casing, one token per character,
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


class Seq2Seq(keras.Model):
    """Encoder: embedding -> bidirectional GRU; decoder: GRU -> additive attention -> softmax over chars."""

    def __init__(self, source_chars: str, target_chars: str, embedding_dim: int, units: int,
                 max_source_chars: int, max_target_length: int, **kwargs):
        super().__init__(**kwargs)
        self.max_source_chars, self.max_target_length = max_source_chars, max_target_length
        self.source_lookup = layers.StringLookup(vocabulary=list(source_chars), mask_token="")
        self.target_vocabulary = [*SPECIAL, *target_chars]
        self.target_lookup = layers.StringLookup(vocabulary=self.target_vocabulary[2:], mask_token="")
        self.source_embedding = layers.Embedding(self.source_lookup.vocabulary_size(), embedding_dim)
        self.encoder = layers.Bidirectional(layers.GRU(units, return_sequences=True, return_state=True),
                                            merge_mode="sum")
        self.bridge = layers.Dense(units, activation="tanh")
        self.target_embedding = layers.Embedding(len(self.target_vocabulary), embedding_dim)
        self.decoder = layers.GRU(units, return_sequences=True, return_state=True)
        self.attention = layers.AdditiveAttention()
        self.head = layers.Dense(len(self.target_vocabulary))

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

    # --- the network ----------------------------------------------------------------------------------

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
        batch = tf.shape(encoded)[0]
        token = tf.fill([batch, 1], tf.constant(START, tf.int64))
        generated = tf.zeros([batch, 0], tf.int64)
        done = tf.zeros([batch], tf.bool)

        def step(i, token, state, done, generated):
            logits, state = self.decode(token, encoded, mask, state)
            token = tf.where(done, tf.constant(PAD, tf.int64), tf.argmax(logits[:, -1], axis=-1))
            return i + 1, token[:, None], state, done | (token == END), tf.concat([generated, token[:, None]], 1)

        _, _, _, _, generated = tf.while_loop(
            lambda i, token, state, done, generated: (i < self.max_target_length) & ~tf.reduce_all(done),
            step, (tf.constant(0), token, state, done, generated),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, 1]), state.shape, tf.TensorShape([None]),
                              tf.TensorShape([None, None])))
        return self.detokenize(generated)


@register_model(
    "seq2seq",
    task="translation",
    default_dataset="dates",
    hparams={"source_chars": "abcdefghijklmnopqrstuvwxyz0123456789 ,.-'/", "target_chars": "0123456789-",
             "embedding_dim": 32, "units": 128, "max_source_chars": 64, "max_target_length": 16},
    input_spec={"text": {"shape": [], "dtype": "string", "meaning": "a date in English, any phrasing"}},
    train={"epochs": 2, "batch_size": 64, "learning_rate": 3e-3, "weight_decay": 0.0},
)
def seq2seq(source_chars: str, target_chars: str, embedding_dim: int, units: int, max_source_chars: int,
            max_target_length: int) -> keras.Model:
    """Character GRU encoder-decoder with additive attention, greedy decoding in-graph: dates -> ISO 8601."""
    model = Seq2Seq(source_chars, target_chars, embedding_dim, units, max_source_chars, max_target_length,
                    name="seq2seq")
    model((ops.ones((1, 2), "int64"), ops.ones((1, 2), "int64")))  # build, so that weights can be loaded
    return model
