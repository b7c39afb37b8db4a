"""The generative zoo (autoencoder, vae, dcgan, cgan): trained by the one trainer, exported, served, queried.

One tiny run per model on the synthetic dataset, shared by the module; one model server serves all four.
Signatures are checked in process (shapes, PNGs, determinism) and through the server over REST and gRPC
(same answers; bad input is INVALID_ARGUMENT / HTTP 400 and the server keeps serving). The autoencoder and
cgan train long enough (seconds) to learn the data: their quality is held to bounds the same model untrained
fails.
"""
from __future__ import annotations

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import zoo
from pipelines import data, evaluate, fid, train
from pipelines import export as exporter
from serving import config
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.launch import ModelServerProcess
from tests.random_tensors import assert_random_tensors_never_break
from tests.untrained import export_untrained

GENERATIVE = [name for name in zoo.list_models() if zoo.get(name).task == "image_generation"]
TINY = {"filters": 4}
# ~170 steps: enough for the autoencoder and cgan to learn the synthetic data (one epoch of 9 steps leaves them
# where they started: the bounds below fail); the vae and dcgan only need to run.
RECIPES = {"autoencoder": {"epochs": 10, "batch_size": 32, "learning_rate": 3e-3},
           "cgan": {"epochs": 8, "batch_size": 32, "learning_rate": 1e-3}}
ONE_EPOCH = {"epochs": 1, "batch_size": 64}
LABELS = zoo.get("cgan").labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, trained_cnn):
    """name -> RunResult: RECIPES (else one epoch) on the synthetic data, FD-cnn per epoch from the session's cnn."""
    root = tmp_path_factory.mktemp("generative")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(fid.CLASSIFIER_ENV, str(trained_cnn.run_dir))
        return {name: train.train(name, dataset="synthetic_fashion_mnist", overrides=TINY,
                                  recipe_overrides=RECIPES.get(name, ONE_EPOCH), runs_dir=root / "runs",
                                  models_dir=root / "models", data_dir=data_dir, verbose=0)
                for name in GENERATIVE}


def test_every_export_needs_no_xla_and_only_stock_tensorflow_ops(runs):
    """What the stock tensorflow_model_server runs with its defaults (tests/export_graph.py)."""
    from tests import export_graph

    for run in runs.values():
        export_graph.assert_stock_serving_graph(run.export_dir)


@pytest.fixture(scope="module")
def loaded(runs):
    """name -> the exported SavedModel, loaded in process."""
    return {name: tf.saved_model.load(str(run.export_dir)) for name, run in runs.items()}


@pytest.fixture(scope="module")
def server(runs):
    """tfzoo-model-server serving every exported generative model from one config file."""
    path = config.write_models_config(next(iter(runs.values())).export_dir.parent.parent)
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}"]) as process:
        yield process


def request_for(name: str, kind: str) -> dict[str, np.ndarray]:
    """A valid request of 3 images for a signature kind of model `name`."""
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    count_seed = {"count": np.int32(3), "seed": np.int64(7)}
    return {
        "reconstruct": {"image": images},
        "encode": {"image": images},
        "decode": {"latent": np.random.default_rng(1).standard_normal((3, zoo.get(name).hparams.get("latent_dim", 0)),
                                                           np.float32)},
        "sample": count_seed,
        "sample_label": {"label": np.int32(7), **count_seed},
        "sample_class_name": {"class_name": np.array(b"sneaker", object), **count_seed},
    }[kind]


def served_signatures() -> list[tuple[str, str, str]]:
    """(model, signature, kind) for every signature of every generative model."""
    return [(name, signature, kind) for name in GENERATIVE
            for signature, kind in zoo.get(name).builder.SIGNATURES.items()]


def call(loaded, name: str, signature: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(outputs, inputs) of a valid in-process call of an exported signature."""
    inputs = request_for(name, kind)
    outputs = loaded[name].signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}, inputs


@pytest.mark.parametrize("name, signature, kind", served_signatures())
def test_every_signature_returns_its_documented_shapes_and_png_bytes(loaded, name, signature, kind):
    outputs, _ = call(loaded, name, signature, kind)
    if kind == "encode":
        assert {k: v.shape for k, v in outputs.items()} == (
            {"code": (3, 32)} if name == "autoencoder" else {"mean": (3, 16), "log_variance": (3, 16)})
        return
    assert sorted(outputs) == ["images", "png_bytes"]
    images, png = outputs["images"], outputs["png_bytes"]
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    decoded = np.stack([tf.io.decode_png(p).numpy() for p in png])
    np.testing.assert_array_equal(decoded, np.round(images * 255).astype(np.uint8))


@pytest.mark.parametrize("name, signature, kind",
                         [s for s in served_signatures() if s[2].startswith("sample")])
def test_sampling_is_a_function_of_the_seed(loaded, name, signature, kind):
    fn = loaded[name].signatures[signature]
    extra = {"sample": {}, "sample_label": {"label": tf.constant(2)},
             "sample_class_name": {"class_name": tf.constant("Pullover")}}[kind]

    def images(count, seed):
        return fn(count=tf.constant(count), seed=tf.constant(seed, tf.int64), **extra)["images"].numpy()

    first = images(4, 11)
    np.testing.assert_array_equal(first, images(4, 11))
    # the same latents, row by row (to float rounding: kernels may sum in another order for another batch size)
    np.testing.assert_allclose(first[:2], images(2, 11), rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, images(4, 12))


def test_a_class_by_name_is_the_class_by_label(loaded):
    signatures = loaded["cgan"].signatures
    count_seed = {"count": tf.constant(5), "seed": tf.constant(3, tf.int64)}
    by_label = signatures["generate"](label=tf.constant(LABELS.index("Bag")), **count_seed)["images"]
    by_name = signatures["generate_by_name"](class_name=tf.constant("bAG"), **count_seed)["images"]
    np.testing.assert_array_equal(by_label.numpy(), by_name.numpy())


@pytest.mark.integration
@pytest.mark.parametrize("name, signature, kind", served_signatures())
def test_the_server_answers_over_rest_and_grpc_like_the_in_process_call(server, loaded, name, signature, kind):
    expected, inputs = call(loaded, name, signature, kind)
    for client in (RestClient("127.0.0.1", server.rest_port), GrpcClient("127.0.0.1", server.grpc_port)):
        outputs = client.predict(name, inputs, signature_name=signature)
        assert sorted(outputs) == sorted(expected)
        for key, value in expected.items():
            if key == "png_bytes":
                assert list(outputs[key]) == list(value)  # the same PNG files, byte for byte
            else:
                np.testing.assert_allclose(outputs[key], value, rtol=1e-5, atol=1e-6)


BAD_REQUESTS = [
    ("dcgan", "generate", {"count": 0, "seed": 1}, "count must be between 1 and 256"),
    ("dcgan", "generate", {"count": -5, "seed": 1}, "count must be between 1 and 256"),
    ("vae", "sample", {"count": 2_000_000_000, "seed": 1}, "count must be between 1 and 256"),
    ("cgan", "generate", {"label": 10, "count": 2, "seed": 1}, "label must be a class id in [0, 10)"),
    ("cgan", "generate", {"label": -1, "count": 2, "seed": 1}, "label must be a class id in [0, 10)"),
    ("cgan", "generate_by_name", {"class_name": "spaceship", "count": 2, "seed": 1}, "unknown class_name; one of"),
    ("cgan", "generate_by_name", {"class_name": "Bag", "count": 300, "seed": 1}, "count must be between 1 and 256"),
    ("vae", "decode", {"latent": [[0.0] * 5]}, "latent must be [N, 16]"),
    ("dcgan", "decode", {"latent": [[0.0] * 64] * 257}, "at most 256 latent rows"),
]


@pytest.mark.integration
@pytest.mark.parametrize("name, signature, inputs, message", BAD_REQUESTS)
def test_bad_input_is_invalid_argument_with_a_clear_message_and_the_server_keeps_serving(
        server, name, signature, inputs, message):
    arrays = {k: np.array(v, np.float32 if k == "latent" else object if k == "class_name"
                          else np.int64 if k == "seed" else np.int32) for k, v in inputs.items()}
    rest, grpc_client = RestClient("127.0.0.1", server.rest_port), GrpcClient("127.0.0.1", server.grpc_port)
    with pytest.raises(ServingClientError) as rest_error:
        rest.predict(name, arrays, signature_name=signature)
    assert rest_error.value.code == 400 and message in rest_error.value.message
    with pytest.raises(ServingClientError) as grpc_error:
        grpc_client.predict(name, arrays, signature_name=signature)
    assert grpc_error.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in grpc_error.value.message
    assert server.process.poll() is None
    ok = rest.predict("dcgan", {"count": np.int32(1), "seed": np.int64(0)}, signature_name="generate")
    assert ok["images"].shape == (1, 28, 28, 1)


def test_runs_log_losses_grids_and_fd_cnn_per_epoch(runs):
    metrics = {name: run.metrics for name, run in runs.items()}
    assert {"loss", "val_loss", "test_loss"} <= set(metrics["autoencoder"])
    assert {"reconstruction_loss", "kl_loss", "val_loss", "test_loss"} <= set(metrics["vae"])
    assert metrics["vae"]["loss"] == pytest.approx(metrics["vae"]["reconstruction_loss"] + metrics["vae"]["kl_loss"],
                                                   rel=1e-4)
    for gan in ("dcgan", "cgan"):
        assert {"d_loss", "g_loss", "val_d_loss", "val_g_loss", "val_fd_cnn"} <= set(metrics[gan])
        assert metrics[gan]["epochs_this_session"] == runs[gan].config.recipe["epochs"]
        assert metrics[gan]["train_examples_per_second"] > 0
    # chance is 1/10, what an untrained generator's samples score (the evaluation test below shows it); 0.9 measured
    assert metrics["cgan"]["val_class_accuracy"] > CLASS_ACCURACY_BOUND
    expected_images = {"autoencoder": {"reconstructions"}, "vae": {"reconstructions", "samples"},
                       "dcgan": {"samples"}, "cgan": {"samples"}}
    for name, run in runs.items():
        tags = {value.tag for path in (run.run_dir / "validation").glob("events.out.tfevents.*")
                for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}
        assert expected_images[name] <= tags
        assert ("epoch_fd_cnn" in tags) == (name != "autoencoder")


def test_every_signature_has_a_warmup_request(runs):
    for name, run in runs.items():
        records = tf.data.TFRecordDataset(str(run.export_dir / "assets.extra" / exporter.WARMUP_FILE))
        warmed = {prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request.model_spec.signature_name
                  for r in records}
        assert warmed == set(zoo.get(name).builder.SIGNATURES)


def test_a_gan_checkpoint_exports_as_the_same_generator(runs, data_dir, tmp_path, loaded):
    run = runs["cgan"]
    version = exporter.export_checkpoint("cgan", run.run_dir.name, runs_dir=run.run_dir.parent.parent,
                                      models_dir=tmp_path, data_dir=data_dir)
    inputs = {"label": tf.constant(4), "count": tf.constant(3), "seed": tf.constant(5, tf.int64)}
    from_checkpoint = tf.saved_model.load(str(version)).signatures["generate"](**inputs)["images"]
    np.testing.assert_allclose(from_checkpoint, loaded["cgan"].signatures["generate"](**inputs)["images"], atol=1e-6)


CLASS_ACCURACY_BOUND = 0.5  # cgan's share of samples classified as their class; chance is 1/10


@pytest.mark.parametrize("name", ["autoencoder", "cgan"])
def test_evaluating_an_export_measures_reconstruction_or_fd_cnn_through_its_signatures(runs, data_dir, trained_cnn,
                                                                                     monkeypatch, tmp_path, name):
    monkeypatch.setenv(fid.CLASSIFIER_ENV, str(trained_cnn.run_dir))
    result = evaluate.evaluate(runs[name].export_dir, data_dir=data_dir)
    untrained = evaluate.evaluate(export_untrained(runs[name], tmp_path, data_dir), data_dir=data_dir)
    assert result["examples"] == untrained["examples"] == 200
    if name == "autoencoder":
        # A model that ignores its input does at best as well as the test images' per-pixel mean, whose MSE is their
        # per-pixel variance (0.052; measured: trained 0.03, untrained 0.15).
        (images, _), = data.load("synthetic_fashion_mnist", "test", batch_size=200, data_dir=data_dir, cache=False)
        mean_image_mse = float(np.mean(np.var(images.numpy() / 255.0, axis=0)))
        assert result["reconstruction_mse_clean"] < mean_image_mse < untrained["reconstruction_mse_clean"]
    else:
        # measured: trained 0.9 of the samples are their class and FD-cnn 3; untrained 0.1 (chance) and 35
        assert result["class_accuracy"] > CLASS_ACCURACY_BOUND > untrained["class_accuracy"]
        assert 0.0 < result["fd_cnn"] < untrained["fd_cnn"] / 4


def test_frechet_distance_matches_the_closed_form():
    a = np.random.default_rng(0).standard_normal((500, 6)) @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(6.0)
    assert fid.frechet_distance(a, a + shift) == pytest.approx(np.sum(shift ** 2), rel=1e-9)
    # b = 2a: |mu|^2 + Tr(S) + Tr(4S) - 2 Tr(2S) = |mu|^2 + Tr(S)
    expected = np.sum(a.mean(0) ** 2) + np.trace(np.cov(a, rowvar=False))
    assert fid.frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-9)



def test_a_gan_checkpoint_restores_both_optimizers(tmp_path):
    def compiled():
        model = zoo.build("cgan", **TINY)
        model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5))
        return model

    model = compiled()
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    model.train_on_batch(images, np.arange(8) % 10)
    model.save_weights(str(tmp_path / "gan.weights.h5"))
    restored = compiled()
    restored.load_weights(str(tmp_path / "gan.weights.h5"))
    for optimizer in ("optimizer", "generator_optimizer"):
        saved, loaded_ = getattr(model, optimizer).variables, getattr(restored, optimizer).variables
        assert int(loaded_[0].numpy()) == 1  # iterations
        for a, b in zip(saved, loaded_, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.integration
def test_random_tensors_to_every_signature_never_break_the_server(runs, server):
    assert_random_tensors_never_break(server, list(runs))
