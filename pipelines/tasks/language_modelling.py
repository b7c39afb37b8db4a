"""Language modelling: next-character cross-entropy, step-based training, and generation inside the SavedModel.

Data: a dataset whose splits hold text (`tfzoo_shakespeare_char`, or any TFDS dataset with a "text"
feature and train/validation splits), tokenized by the model's vocabulary (its spec's `labels`).
Training batches are windows at random offsets of the train text, as nanoGPT's get_batch draws them;
validation is `eval_batches` fixed random batches of the validation text (nanoGPT's eval: mean loss over
20 batches); the test is every non-overlapping window of the validation text. The recipe is step-based:
`steps_per_epoch` x `epochs` iterations; the learning rate warms up linearly for `warmup_steps`, then decays
by a cosine to `min_learning_rate` (AdamW; no weight decay on biases and LayerNorm; global-norm clipping).
TensorBoard: loss and learning rate every `steps_per_execution` steps (train/step_loss: the mean of those
steps; train/learning_rate), a generated sample per epoch (validation/sample, a text summary), the character
embedding in the projector (embeddings/).

Signatures (the whole decoding loop runs inside the graph: one request generates the whole text):
  generate            prompt string [N], max_new_tokens int32 [N], temperature float32 [N], top_k int32 [N],
                      seed int64 [N]  ->  generated string [N], prompt_tokens int32 [N]
                      With a key/value cache (gpt) or the recurrent state (char_rnn).
  generate_no_cache   (models with a context limit) the same, recomputing the whole context at every step.
  score               text string [N] -> loss float32 [N] (mean next-character cross-entropy), tokens int32 [N]
Generation rules (also in the model card, `generation`):
  - the prompt must be valid UTF-8 made of vocabulary characters (else INVALID_ARGUMENT); an empty prompt
    starts from "\\n", as nanoGPT's sampler does;
  - a prompt longer than the context keeps its last `context` characters (truncated from the left;
    `prompt_tokens` says how many were read); char_rnn's context is `MAX_PROMPT_TOKENS`;
  - 0 <= max_new_tokens <= MAX_NEW_TOKENS, temperature > 0, top_k >= 0 (0 = the whole vocabulary; above the
    vocabulary size = the whole vocabulary), else INVALID_ARGUMENT; the same seed gives the same text;
  - past the context: with the cache, when all `block_size` slots are full the cache is rebuilt from the last
    block_size/2 tokens (one re-prefill every block_size/2 tokens); without it, every step reads the last
    block_size tokens (nanoGPT's crop).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from typing_extensions import override

from pipelines import data
from pipelines.data.shakespeare import split_text
from pipelines.errors import UserError
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import Embedding, EpochSummaries, Projector, metadata_text, warmup_cosine

MAX_NEW_TOKENS = 1024
MAX_PROMPT_TOKENS = 4096  # the prompt cap of models without a context limit (char_rnn)
SAMPLE_TOKENS = 200  # per epoch, in TensorBoard
EVAL_CHUNK_CHARS = 4096  # `tfzoo evaluate` scores the split in chunks of this many characters
DEFAULT_PROMPT = "\n"


def encode(text: str, chars: str) -> np.ndarray:
    """Token ids of `text` (int32), or a ValueError naming the characters outside `chars`."""
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise UserError(f"the text has {len(unknown)} characters outside the model's vocabulary: {unknown[:10]}; "
                         "train on a dataset within the vocabulary or register a model with its characters")
    return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))


def windows(ids: tf.Tensor, starts: tf.Tensor, length: int):
    """(inputs, targets) [B, length] from the windows of `ids` starting at `starts` [B]."""
    tokens = tf.gather(ids, tf.cast(starts, tf.int32)[:, None] + tf.range(length + 1)[None, :])
    return tokens[:, :-1], tokens[:, 1:]


class StepSummaries(keras.callbacks.Callback):
    """Loss and learning rate as TensorBoard scalars over the global step, one point per call into TensorFlow.

    Keras calls the batch hooks once per `steps_per_execution` steps (the trainer makes it divide the epoch),
    with the epoch's running mean loss after the call's last step: the mean loss of the call's own steps is
    recovered from two consecutive means, (mean_b * b - mean_a * a) / (b - a) with b and a the batches done; with
    one step per call it is that step's loss. The learning rate is the schedule's at the call's last step.
    Written `FLUSH_POINTS` points at a time by one compiled call: eager writes and reading the optimizer's
    learning rate after every step cost ~2 ms of a ~30 ms gpt step (bench/results/training-speed.md).
    """

    FLUSH_POINTS = 100

    def __init__(self, log_dir: str, schedule: keras.optimizers.schedules.LearningRateSchedule):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.schedule = schedule
        self.previous, self.done, self.step = 0.0, 0, 0  # last running mean, batches done in the epoch, global step
        self.steps: list[int] = []
        self.losses: list[float] = []

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32)])
        def write(steps, losses):
            for i in tf.range(tf.size(steps)):
                with tf.name_scope("/"):  # the tags as they are, not under the loop's "while/" scope
                    tf.summary.scalar("step_loss", losses[i], step=steps[i])
                    # The rate step k (1-based) trained with: the schedule at k - 1 optimizer iterations.
                    tf.summary.scalar("learning_rate", self.schedule(steps[i] - 1), step=steps[i])

        self.write = write

    @override
    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())  # not 0 after a resume
        with self.writer.as_default():
            self.write.get_concrete_function()  # traced now, not at the first epoch's end (a boundary)

    @override
    def on_epoch_begin(self, epoch, logs=None):
        self.previous, self.done = 0.0, 0

    @override
    def on_train_batch_end(self, batch, logs=None):
        mean, done = float(logs["loss"]), batch + 1  # Keras has made it a float already; `batch` is the call's last
        steps = done - self.done
        self.step += steps
        self.steps.append(self.step)
        self.losses.append((mean * done - self.previous * self.done) / steps)
        self.previous, self.done = mean, done
        if len(self.steps) >= self.FLUSH_POINTS:
            self.flush()

    @override
    def on_epoch_end(self, epoch, logs=None):
        self.flush()

    @override
    def on_train_end(self, logs=None):
        self.flush()
        self.writer.flush()

    def flush(self) -> None:
        """Write the buffered steps."""
        if self.steps:
            with self.writer.as_default():
                self.write(tf.constant(self.steps, tf.int64), tf.constant(self.losses, tf.float32))
            self.steps, self.losses = [], []


class SampleText(EpochSummaries):
    """A generated sample per epoch (prompt from the validation data), as a TensorBoard text summary.

    Sampled by `sample_tokens`: a Python loop around the model's one-token `decode_step`, XLA-compiled and called
    as a concrete function that takes the weights as inputs (`keras.StatelessScope`), so a sample reads a copy of
    the weights taken at its epoch's end: it is drawn on a thread of its own while the next epoch trains, and the
    boundary costs only the copy. The step is traced and compiled at the start of training, before the train
    step (about 0.7 s; beside the first train call it cost that call twice as much, beside the second epoch it
    slowed its first steps: bench/results/training-speed.md); a sample then takes ~0.1 s. Nothing of it is
    exported. `on_train_end` waits for the last sample."""

    def __init__(self, log_dir: str, chars: str, prompt: str):
        super().__init__(log_dir)
        self.chars, self.prompt = chars, prompt
        self.step = self.empty = None

    @override
    def on_train_begin(self, logs=None):
        self.compile()

    def compile(self) -> None:
        """The XLA decode step (token, position, state, weights), traced for the empty state's shapes and
        compiled by a first token."""
        model, weights = self.model, self.model.weights

        def step(token, position, state, values):
            with keras.StatelessScope(state_mapping=list(zip(weights, values, strict=True))):
                return model.decode_step(token, position, state)

        _, state = model.prefill(tf.zeros([1, 1], tf.int32))
        self.empty = tf.nest.map_structure(tf.zeros_like, state)
        self.step = tf.function(step, jit_compile=True).get_concrete_function(
            tf.TensorSpec([1], tf.int32), tf.TensorSpec([], tf.int32),
            tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), self.empty),
            [tf.TensorSpec(w.shape, w.dtype) for w in weights])
        self.sample(self.snapshot(), -1, 1)

    def snapshot(self) -> list[tf.Tensor]:
        """A copy of the model's weights now, which training does not change."""
        return [tf.constant(w) for w in self.model.get_weights()]

    def sample(self, weights: list[tf.Tensor], seed: int, tokens: int = SAMPLE_TOKENS) -> str:
        """`tokens` characters after the prompt, sampled at temperature 0.8 from the model with `weights`."""
        ids = sample_tokens(lambda token, position, state: self.step(token, position, state, weights), self.empty,
                            encode(self.prompt, self.chars), tokens, temperature=0.8,
                            rng=np.random.default_rng(seed + 1), context=getattr(self.model, "context_size", None))
        return "".join(self.chars[i] for i in ids)

    @override
    def summarize(self):
        self.in_background(self.write, self.snapshot(), self.epoch)

    def write(self, weights: list[tf.Tensor], epoch: int) -> None:
        text = self.sample(weights, epoch)
        # Markdown: a code block keeps the play's line breaks.
        tf.summary.text("sample", f"prompt: `{self.prompt!r}`\n\n```\n{self.prompt}{text}\n```")


def sample_tokens(step, empty, ids, count: int, *, temperature: float, rng: np.random.Generator,
                  context: int | None) -> list[int]:
    """`count` token ids sampled after prompt `ids` by `step` (a model's `decode_step`: token [1], position,
    state -> logits [1, V], state) from the `empty` state, one call per token; past the context, the state is
    rebuilt from the last context/2 tokens, as `decode` does."""
    def feed(tokens):
        state = empty
        for position, token in enumerate(tokens):
            logits, state = step(tf.constant([token], tf.int32), tf.constant(position, tf.int32), state)
        return logits, state, len(tokens)

    history = [int(i) for i in ids]
    logits, state, length = feed(history if context is None else history[-context:])
    for _ in range(count):
        scaled = np.asarray(logits[0], np.float64) / temperature
        probabilities = np.exp(scaled - scaled.max())
        history.append(int(rng.choice(len(probabilities), p=probabilities / probabilities.sum())))
        if context is not None and length == context:
            logits, state, length = feed(history[-(context // 2):])
        else:
            logits, state = step(tf.constant(history[-1:], tf.int32), tf.constant(length, tf.int32), state)
            length += 1
    return history[len(ids):]


def sample(logits, temperature, top_k, seed, step):
    """One token id from logits [V]: temperature, then the top_k most likely (0 = all), stateless in (seed, step)."""
    logits = logits / temperature
    size = tf.shape(logits)[0]
    k = tf.where(top_k > 0, tf.minimum(top_k, size), size)
    kth = tf.math.top_k(logits, k).values[-1]
    logits = tf.where(logits < kth, tf.constant(-np.inf, logits.dtype), logits)
    draw = tf.random.stateless_categorical(logits[None], 1, seed=tf.stack([seed, tf.cast(step, tf.int64)]))
    return tf.cast(draw[0, 0], tf.int32)


def decode(model: keras.Model, ids, max_new_tokens, temperature, top_k, seed, use_cache: bool, xla: bool):
    """`max_new_tokens` token ids [T] after prompt ids [n] (n <= context), sampled by a tf.while_loop."""
    context = getattr(model, "context_size", None)
    prompt_length = tf.shape(ids)[0]
    # The incremental step and the re-prefill have fixed shapes (one token; a half-block window), so XLA can
    # compile each once (several times faster cached decoding here: bench/results/language.md). Only with `xla`:
    # TensorFlow Serving compiles XLA on CPU only with --xla_cpu_compilation_enabled (off by default).
    decode_step = tf.function(model.decode_step, jit_compile=True) if xla else model.decode_step
    refill_prefill = tf.function(model.prefill, jit_compile=True) if xla else model.prefill
    history = tf.concat([ids, tf.zeros([max_new_tokens], tf.int32)], 0)  # prompt, then each new token
    if use_cache:
        logits, state = model.prefill(ids[None])
    else:
        logits, state = model(ids[None]), ()
    last, length = logits[0, -1], prompt_length

    def refill(window):
        logits, state = refill_prefill(window[None])
        return logits[0, -1], tf.shape(window)[0], state

    def body(i, last, length, history, state):
        token = sample(last, temperature, top_k, seed, i)
        end = prompt_length + i + 1
        history = tf.tensor_scatter_nd_update(history, [[end - 1]], [token])
        if not use_cache:
            start = 0 if context is None else tf.maximum(0, end - context)
            return i + 1, model(history[None, start:end])[0, -1], end - start, history, state

        def step():
            logits, new_state = decode_step(token[None], length, state)
            return logits[0], length + 1, new_state

        if context is None:
            last, length, state = step()
        else:  # all slots full: rebuild the cache from the last context/2 tokens
            last, length, state = tf.cond(length < context, step,
                                          lambda: refill(history[end - context // 2:end]))
        return i + 1, last, length, history, state

    loop = (tf.constant(0), last, length, history, state)
    _, _, _, history, _ = tf.while_loop(lambda i, *_: i < max_new_tokens, body, loop)
    return history[prompt_length:]


def text_codec(chars: str):
    """(to_ids, to_text) graph functions between UTF-8 strings and token ids of `chars`."""
    codepoints = np.array([ord(c) for c in chars], np.int32)
    order = np.argsort(codepoints).astype(np.int32)
    sorted_codepoints = tf.constant(codepoints[order])

    def to_ids(text):
        """Token ids [n] of a scalar string; INVALID_ARGUMENT if not UTF-8 or outside the vocabulary."""
        valid = tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"), text)
        with tf.control_dependencies([tf.debugging.Assert(valid, ["the text is not valid UTF-8"])]):
            points = tf.strings.unicode_decode(text, "UTF-8")
        slot = tf.minimum(tf.searchsorted(sorted_codepoints, points), len(chars) - 1)
        known = tf.reduce_all(tf.equal(tf.gather(sorted_codepoints, slot), points))
        with tf.control_dependencies([tf.debugging.Assert(known, [
                "the text has characters outside the vocabulary of the model (the labels of its model card)"])]):
            return tf.gather(tf.constant(order), slot)

    def to_text(ids):
        return tf.strings.unicode_encode(tf.gather(tf.constant(codepoints), ids), "UTF-8")

    return to_ids, to_text


def generation_function(model: keras.Model, chars: str, *, use_cache: bool = True,
                        xla: bool = False) -> tf.types.experimental.Function:
    """The `generate` signature: prompts and sampling settings [N] -> generated text [N] (see the module doc);
    with `xla`, the decoding step and re-prefill are XLA-compiled (must-compile functions in the export)."""
    to_ids, to_text = text_codec(chars)
    context = getattr(model, "context_size", None) or MAX_PROMPT_TOKENS
    default_prompt = to_ids(tf.constant(DEFAULT_PROMPT))

    def one(args):
        prompt, max_new_tokens, temperature, top_k, seed = args
        ids = to_ids(prompt)
        ids = tf.cond(tf.size(ids) > 0, lambda: ids, lambda: default_prompt)[-context:]
        tokens = decode(model, ids, max_new_tokens, temperature, top_k, seed, use_cache, xla)
        return to_text(tokens), tf.size(ids)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="prompt"), tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
        tf.TensorSpec([None], tf.float32, name="temperature"), tf.TensorSpec([None], tf.int32, name="top_k"),
        tf.TensorSpec([None], tf.int64, name="seed")])
    def generate(prompt, max_new_tokens, temperature, top_k, seed):
        n = tf.size(prompt)
        checks = [
            tf.debugging.assert_equal(tf.stack([tf.size(max_new_tokens), tf.size(temperature), tf.size(top_k),
                                                tf.size(seed)]), n,
                                      message="prompt, max_new_tokens, temperature, top_k and seed need one "
                                              "value per prompt"),
            tf.debugging.assert_non_negative(max_new_tokens, message="max_new_tokens must be >= 0"),
            tf.debugging.assert_less_equal(max_new_tokens, MAX_NEW_TOKENS,
                                           message=f"max_new_tokens must be at most {MAX_NEW_TOKENS}"),
            tf.debugging.assert_positive(temperature, message="temperature must be > 0"),
            tf.debugging.assert_non_negative(top_k, message="top_k must be >= 0 (0: the whole vocabulary)"),
        ]
        with tf.control_dependencies(checks):
            generated, read = tf.map_fn(one, (prompt, max_new_tokens, temperature, top_k, seed),
                                        fn_output_signature=(tf.string, tf.int32))
        return {"generated": generated, "prompt_tokens": read}

    return generate


def score_function(model: keras.Model, chars: str) -> tf.types.experimental.Function:
    """The `score` signature: texts [N] -> mean next-character cross-entropy [N], over context-sized windows."""
    to_ids, _ = text_codec(chars)
    window = getattr(model, "context_size", None) or MAX_PROMPT_TOKENS

    def one(text):
        ids = to_ids(text)
        predicted = tf.size(ids) - 1
        with tf.control_dependencies([tf.debugging.assert_positive(
                predicted, message="score needs texts of at least 2 characters")]):
            count = (predicted + window - 1) // window
        padded = tf.pad(ids, [[0, count * window + 1 - tf.size(ids)]])
        inputs = tf.reshape(padded[:-1], [count, window])
        targets = tf.reshape(padded[1:], [count, window])
        losses = keras.losses.sparse_categorical_crossentropy(targets, model(inputs), from_logits=True)
        mask = tf.reshape(tf.range(count * window) < predicted, [count, window])
        return tf.reduce_sum(tf.where(mask, losses, 0.0)) / tf.cast(predicted, tf.float32), predicted

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(text):
        loss, tokens = tf.map_fn(one, text, fn_output_signature=(tf.float32, tf.int32))
        return {"loss": loss, "tokens": tokens}

    return score


class LanguageModelling(Task):
    """Next-character cross-entropy, step-based training, generation inside the SavedModel (module doc)."""

    name = "language_modelling"
    # serve_xla: XLA-compile the exported decoding step (faster generation; TF Serving then needs
    # --xla_cpu_compilation_enabled=true, and the model card says so).
    # 10 steps per call into TensorFlow: with one, a gpt step took ~21.8 ms on 2 cores against 20.3 with ten (one
    # sitting, 3 runs each): the Python work of the batch hooks (StepSummaries) is then paid once per ten steps.
    # The loss is logged per call, as nanoGPT logs every 10 iterations.
    recipe_defaults = {"steps_per_epoch": 250, "sequence_length": 64, "eval_batches": 20, "warmup_steps": 0,
                       "min_learning_rate": 0.0, "weight_decay": 0.0, "beta_2": 0.999, "clipnorm": 1.0,
                       "serve_xla": False, "steps_per_execution": 10}

    @property
    def vocabulary(self) -> str:
        """The model's characters, in token-id order."""
        return "".join(self.run.labels)

    @override
    def load_splits(self, data_dir) -> Splits:
        """Random-offset train windows (repeating), fixed random validation batches, every test window."""
        builder = data.builder(self.run.dataset, data_dir)
        train_ids = tf.constant(encode(split_text(builder, "train"), self.vocabulary))
        validation = encode(split_text(builder, "validation"), self.vocabulary)
        length, batch, eval_batches = self.recipe["sequence_length"], self.recipe["batch_size"], \
            self.recipe["eval_batches"]
        validation_ids = tf.constant(validation)

        def draw(starts):
            return windows(train_ids, tf.math.floormod(starts, int(train_ids.shape[0]) - length), length)

        train = tf.data.Dataset.random(seed=self.run.seed).batch(batch).map(draw).prefetch(tf.data.AUTOTUNE)
        rng = np.random.default_rng(self.run.seed + 1)
        eval_starts = rng.integers(0, len(validation) - length, (eval_batches, batch))
        # Batched by `batch` as the test is (element shape [None, length]), so that validation and test share
        # one traced test function: validated on [batch, length], the test's trace would be a second one.
        val = tf.data.Dataset.from_tensor_slices(eval_starts.reshape(-1)).batch(batch).map(
            lambda s: windows(validation_ids, s, length))
        test_starts = np.arange(0, len(validation) - length, length)
        test = tf.data.Dataset.from_tensor_slices(test_starts).batch(batch).map(
            lambda s: windows(validation_ids, s, length))
        return Splits(
            train=train, validation=val.cache(), test=test.cache(), sample_batch=next(iter(val)),
            steps_per_epoch=self.recipe["steps_per_epoch"],
            names={"train": f"train (random windows of {length})",
                   "validation": f"validation ({eval_batches} fixed random batches of {batch})",
                   "test": f"validation (all {len(test_starts)} non-overlapping windows of {length})"},
        )

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:
        """AdamW, linear warmup then cosine decay to min_learning_rate, clipping; next-token cross-entropy."""
        recipe = self.recipe
        context = getattr(model, "context_size", None)
        if context is not None and recipe["sequence_length"] > context:
            raise UserError(f"sequence_length={recipe['sequence_length']} exceeds the model's context of {context}: "
                            f"--set sequence_length={context} (or a larger block_size)")
        schedule = warmup_cosine(recipe["learning_rate"], max(1, recipe["epochs"] * steps_per_epoch),
                                 warmup_steps=recipe["warmup_steps"], final=recipe["min_learning_rate"])
        self.schedule = schedule  # StepSummaries logs it
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe["weight_decay"], beta_2=recipe["beta_2"],
                                           global_clipnorm=recipe["clipnorm"])
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=bool(recipe["jit_compile"]))

    @override
    def callbacks(self, run_dir, sample_batch) -> list[keras.callbacks.Callback]:
        """TensorBoard extras: loss and learning rate per step, a generated sample per epoch."""
        prompt = "".join(self.vocabulary[i] for i in np.asarray(sample_batch[0][0][:16]))
        return [StepSummaries(f"{run_dir}/train", self.schedule),
                SampleText(f"{run_dir}/validation", self.vocabulary, prompt),
                Projector(f"{run_dir}/embeddings", self.token_embeddings)]

    def token_embeddings(self, model: keras.Model) -> Embedding:
        """The model's character embedding (gpt's `wte`, char_rnn's `embedding`), one point per character."""
        layer = getattr(model, "token_embedding", None) or model.embedding
        return Embedding(keras.ops.convert_to_numpy(layer.embeddings), [metadata_text(c) for c in self.vocabulary])

    @override
    def signatures(self, model: keras.Model) -> dict:
        """`generate` (cached decoding), `generate_no_cache` (models with a context limit) and `score`."""
        out = {"generate": generation_function(model, self.vocabulary, xla=bool(self.recipe["serve_xla"])),
               "score": score_function(model, self.vocabulary)}
        if getattr(model, "context_size", None) is not None:
            out["generate_no_cache"] = generation_function(model, self.vocabulary, use_cache=False)
        return out

    @override
    def model_card(self, model: keras.Model) -> dict:
        """The generation rules a client needs: context, truncation, caps, defaults."""
        context = getattr(model, "context_size", None)
        return {"generation": {
            "context_tokens": context or MAX_PROMPT_TOKENS,
            "prompt_truncation": "a prompt longer than the context keeps its last context_tokens characters "
                                 "(truncated from the left); the output prompt_tokens says how many were read",
            "empty_prompt": f"starts from {DEFAULT_PROMPT!r}",
            "max_new_tokens": {"min": 0, "max": MAX_NEW_TOKENS},
            "temperature": "> 0", "top_k": ">= 0; 0 or above the vocabulary size = the whole vocabulary",
            "past_context": ("the key/value cache is rebuilt from the last context_tokens/2 tokens when full"
                             if context else "the recurrent state carries the whole past"),
            "invalid_input": "non-UTF-8 bytes or characters outside `labels`: INVALID_ARGUMENT",
        }, "serving_xla": {
            "enabled": bool(self.recipe["serve_xla"]),
            "note": ("the decoding step is XLA-compiled: TensorFlow Serving needs --xla_cpu_compilation_enabled=true "
                     "(CPU) to serve this version; tfzoo-model-server serves it as is" if self.recipe["serve_xla"]
                     else "no XLA-compiled function: the stock tensorflow_model_server serves it with its defaults"),
        }}

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        """A short generation and a score from the validation text, replayed before a version serves."""
        text = "".join(self.vocabulary[i] for i in np.asarray(sample_batch[0][0]))
        prompt = np.array([text[:8].encode("utf-8")], dtype=object)
        return [("generate", {"prompt": prompt, "max_new_tokens": np.array([4], np.int32),
                              "temperature": np.array([1.0], np.float32), "top_k": np.array([0], np.int32),
                              "seed": np.array([0], np.int64)}),
                ("score", {"text": np.array([text.encode("utf-8")], dtype=object)})]

    evaluation_split = "validation"  # the character corpus has train and validation only (nanoGPT's split)

    @classmethod
    @override
    def load_evaluation(cls, dataset: str, split: str, *, batch_size: int, data_dir=None) -> tf.data.Dataset:
        """The split's text in chunks of `EVAL_CHUNK_CHARS` characters, batched: what `evaluate_export` scores."""
        text = split_text(data.builder(dataset, data_dir), split)
        chunks = [text[i:i + EVAL_CHUNK_CHARS] for i in range(0, len(text), EVAL_CHUNK_CHARS)]
        return tf.data.Dataset.from_tensor_slices([c for c in chunks if len(c) > 1]).batch(batch_size)

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds, card) -> dict:
        """Mean next-character loss (nats and bits) of an exported model's `score` on text chunks."""
        fn = loaded.signatures["score"]
        total = tokens = 0.0
        for chunks in ds:
            out = fn(text=chunks)
            total += float(tf.reduce_sum(out["loss"] * tf.cast(out["tokens"], tf.float32)))
            tokens += float(tf.reduce_sum(out["tokens"]))
        loss = total / max(tokens, 1.0)
        return {"loss": loss, "bits_per_character": loss / np.log(2.0), "tokens": int(tokens)}
