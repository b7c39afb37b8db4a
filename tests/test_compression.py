"""Compression: the session's trained `cnn` compressed by every method that applies to it, measured with the
source's own evaluation, and served (TFLite under --prefer_tflite_model, Keras int8 as a SavedModel) over REST
and gRPC with the answers of the in-process runtimes."""
from __future__ import annotations

import dataclasses
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf

from pipelines import compress, distillation, evaluate, export, pruning
from pipelines import config as run_config
from pipelines.errors import UserError
from pipelines.tasks import TRAIN_SPLIT, get
from serving import config
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.launch import ModelServerProcess
from tests.random_tensors import assert_random_tensors_never_break

pytestmark = pytest.mark.integration
CHANCE = 0.1  # ten balanced classes


@pytest.fixture(scope="module")
def models(trained_cnn, tmp_path_factory):
    """A models root holding the session's cnn export as cnn/1."""
    root = tmp_path_factory.mktemp("compression") / "models"
    shutil.copytree(trained_cnn.export_dir, root / "cnn" / "1")
    return root


@pytest.fixture(scope="module")
def compressed(models, data_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("compression-runs")
    settings = {"tflite_int8": {"calibration_examples": 50},
                "prune": {"prune_epochs": 10, "prune_learning_rate": 1e-3}}  # the synthetic set: 14 steps an epoch
    return {method: compress.compress("cnn", method, models_dir=models, data_dir=data_dir, runs_dir=runs,
                                      settings=settings.get(method))
            for method in ("tflite_dynamic", "tflite_float16", "tflite_int8", "keras_int8", "prune")}


def test_every_method_writes_a_servable_version_with_its_card(compressed, trained_cnn):
    source = trained_cnn.metrics["test_accuracy"]
    assert source > 2 * CHANCE  # the source learned something for the copies to keep
    for method, path in compressed.items():
        card = export.read_model_card(path)
        assert path.parent.name == f"cnn_{method}" and path.name == "1" and card["name"] == f"cnn_{method}"
        assert (path / "saved_model.pb").is_file()
        assert card["compression"]["source"] == {"model": "cnn", "version": 1,
                                                 "path": str(path.parent.parent / "cnn" / "1")}
        assert card["compression"]["method"] == method and card["source_metrics"]["test_accuracy"] == source
        # Measured on the source's test split with its evaluation: close to the float model, far above chance
        # (pruning 80% of the weights in 140 fine-tuning steps on the small synthetic set costs a few points more).
        allowed = 0.1 if method == "prune" else 0.05
        assert card["metrics"]["examples"] == 200 and abs(card["metrics"]["accuracy"] - source) <= allowed, card
    for method in ("tflite_dynamic", "tflite_float16", "tflite_int8"):
        card = export.read_model_card(compressed[method])
        size = (compressed[method] / "model.tflite").stat().st_size
        assert card["compression"]["bytes"]["tflite"] == size and card["compression"]["format"] == "tflite"
    sizes = {m: (compressed[m] / "model.tflite").stat().st_size for m in ("tflite_dynamic", "tflite_float16")}
    float32_weights = 4 * trained_cnn_parameters()
    assert sizes["tflite_dynamic"] < 0.4 * float32_weights < sizes["tflite_float16"] < 0.7 * float32_weights
    # `tfzoo evaluate cnn_tflite_int8` runs the TFLite file through LiteRT, not the float SavedModel beside it.
    int8 = export.read_model_card(compressed["tflite_int8"])
    assert evaluate.evaluate(compressed["tflite_int8"])["accuracy"] == int8["metrics"]["accuracy"]


def trained_cnn_parameters() -> int:
    import zoo

    return zoo.build("cnn").count_params()


def test_full_integer_quantization_is_calibrated_on_train_images(data_dir):
    examples = get("image_classification").calibration_inputs("synthetic_fashion_mnist", count=5, data_dir=data_dir)
    first = get("image_classification").load_evaluation("synthetic_fashion_mnist", TRAIN_SPLIT, batch_size=5,
                                                        data_dir=data_dir)
    images = next(iter(first))[0].numpy()
    np.testing.assert_array_equal(np.concatenate([e["image"] for e in examples]), images / np.float32(255.0))


def test_the_int8_tflite_model_computes_in_int8(compressed):
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(compressed["tflite_int8"] / "model.tflite")).get_tensor_details()
    kernels = [d for d in details if len(d["shape"]) >= 2 and d["dtype"] == np.int8]
    assert len(kernels) >= 4 and not [d for d in details if d["dtype"] == np.float32 and len(d["shape"]) == 4
                                      and d["shape"][0] == 32]  # conv kernels are int8, none float


def test_keras_int8_quantizes_the_dense_head_with_standard_ops_only(compressed):
    card = export.read_model_card(compressed["keras_int8"])
    layers = card["compression"]["quantized_layers"]  # the two Dense layers; the convolutions stay float
    assert len(layers) == 2 and "probabilities" in layers and layers[0].startswith("dense"), layers
    assert all(hasattr(tf.raw_ops, op) for op in card["compression"]["ops"])  # no custom op TF Serving lacks
    assert card["compression"]["bytes"]["variables"] < 0.5 * card["compression"]["bytes"]["source_variables"]


def test_pruning_reaches_its_sparsity_and_the_zeros_compress(compressed, data_dir):
    card = export.read_model_card(compressed["prune"])
    assert card["compression"]["sparsity_reached"] >= 0.8
    assert 0 < card["compression"]["validation_metrics"]["accuracy"] <= 1  # what settings are chosen on
    model, *_ = compress.keras_model(compressed["prune"], data_dir)
    assert pruning.sparsity(pruning.prunable(model)) >= 0.8
    sizes = card["compression"]["bytes"]
    assert sizes["variables_zipped"] < 0.5 * sizes["source_variables_zipped"]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_prefer_tflite_model_serves_the_tflite_file_and_keras_int8_its_saved_model(models, compressed, protocol):
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    tflite = compress.LiteRTModule(compressed["tflite_int8"] / "model.tflite").signatures["serving_default"]
    keras_int8 = tf.saved_model.load(str(compressed["keras_int8"])).signatures["serving_default"]
    float_cnn = tf.saved_model.load(str(models / "cnn" / "1")).signatures["serving_default"]
    path = config.write_models_config(models)
    for prefer, expected in ((True, tflite), (False, float_cnn)):
        with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}", "--num_tflite_pools=2",
                                                           *(["--prefer_tflite_model"] if prefer else [])]) as server:
            client = (RestClient("127.0.0.1", server.rest_port) if protocol == "rest"
                      else GrpcClient("127.0.0.1", server.grpc_port))
            answer = client.predict("cnn_tflite_int8", {"image": images})["probabilities"]
            np.testing.assert_allclose(answer, expected(image=tf.constant(images))["probabilities"].numpy(), atol=1e-6)
            np.testing.assert_allclose(client.predict("cnn_keras_int8", {"image": images})["probabilities"],
                                       keras_int8(image=tf.constant(images))["probabilities"].numpy(), atol=1e-6)
            signatures = client.metadata("cnn_tflite_int8")["metadata"]["signature_def"]["signature_def"]
            assert ("encoded_image" in signatures) is not prefer  # the TFLite model has serving_default only
            with pytest.raises(ServingClientError) as bad:
                client.predict("cnn_tflite_int8", {"image": images[..., 0]})
            assert bad.value.code in (400, grpc.StatusCode.INVALID_ARGUMENT)
            if prefer and protocol == "rest":
                assert_random_tensors_never_break(server, ["cnn_tflite_int8", "cnn_tflite_dynamic"])


def test_compressing_what_does_not_apply_is_a_one_line_error_and_a_failed_write_leaves_nothing(models, tmp_path):
    with pytest.raises(UserError, match="unknown method 'zip'; methods: tflite_dynamic"):
        compress.compress("cnn", "zip", models_dir=models)
    with pytest.raises(UserError, match="tflite_int8 does not apply to gpt: .* it applies to .*cnn.*resnet"):
        compress.compress("gpt", "tflite_int8", models_dir=models)
    with pytest.raises(UserError, match="no exported version under"):
        compress.compress("resnet", "tflite_dynamic", models_dir=models)
    with pytest.raises(UserError, match="tflite_dynamic has no setting 'sparsity'"):
        compress.compress("cnn", "tflite_dynamic", models_dir=models, settings={"sparsity": 0.5})

    def failing(staging):
        (staging / "half-written").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        export.write_version(tmp_path / "m", failing)
    assert list((tmp_path / "m").iterdir()) == []


def test_distillation_trains_a_student_on_the_exported_teachers_probabilities(models, data_dir, tmp_path):
    path = compress.compress("cnn", "distill", models_dir=models, data_dir=data_dir, runs_dir=tmp_path,
                             settings={"student": "cnn", "student_set": "width=0.5", "temperature": 4.0})
    card = export.read_model_card(path)
    assert path.parent.name == "cnn_distill" and card["zoo_model"] == "cnn" and card["recipe"]["epochs"] == 10
    assert card["compression"]["settings"] == {"student": "cnn", "student_set": "width=0.5", "temperature": 4.0,
                                               "alpha": 0.5}
    assert card["hparams"]["width"] == 0.5  # a narrower student than the teacher's cnn
    assert card["compression"]["teacher_metrics"]["test_accuracy"] > 2 * CHANCE
    assert card["metrics"]["accuracy"] > 0.5, card["metrics"]  # 10 epochs of the student's recipe
    assert card["compression"]["validation_metrics"]["accuracy"] > 0.5
    model, *_ = compress.keras_model(path, data_dir)  # the student, rebuilt from the card
    assert model.name == "cnn" and model.layers[1].filters == 16
    with pytest.raises(UserError, match="cnn has no hyperparameter or recipe entry 'depth'"):
        compress.compress("cnn", "distill", models_dir=models, data_dir=data_dir, settings={"student_set": "depth=8"})


def test_the_teacher_answers_each_fixed_train_image_once_beside_it(models, data_dir):
    """cnn's recipe does not augment: the teacher's probabilities are computed before training, one per image,
    and ride with it through the shuffle; and `--no-test` leaves the test split unread."""
    run = run_config.resolve("cnn", dataset="synthetic_fashion_mnist")
    task = get(run.task)(run)
    teacher = distillation.exported_teacher(models / "cnn" / "1")
    (images, probabilities), labels = next(iter(distillation.with_teacher(task, teacher, data_dir)))
    assert images.shape[0] == labels.shape[0] == probabilities.shape[0] == run.recipe["batch_size"]
    np.testing.assert_allclose(probabilities, teacher(images), atol=1e-5)
    augmenting = get(run.task)(dataclasses.replace(run, recipe={**run.recipe, "augment": True}))
    with pytest.raises(ValueError, match="augmenting recipe"):
        distillation.with_teacher(augmenting, teacher, data_dir)
    untested = compress.compress("cnn", "tflite_dynamic", models_dir=models, data_dir=data_dir, test=False)
    assert export.read_model_card(untested)["metrics"] == {}
    shutil.rmtree(untested)  # the other tests read the newest cnn_tflite_dynamic version
    with pytest.raises(UserError, match="distill does not apply to gpt"):
        compress.compress("gpt", "distill", models_dir=models)
