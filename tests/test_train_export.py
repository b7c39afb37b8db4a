"""Training and export: a run directory with logs and metrics, and a SavedModel a server can use."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import zoo
from pipelines import export as exporter
from pipelines import tasks, train
from zoo.labels import FASHION_MNIST_LABELS


def test_run_dir_holds_config_metrics_logs_and_checkpoints(trained_cnn):
    run = trained_cnn.run_dir
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "cnn" and config["dataset"] == "synthetic_fashion_mnist"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_split"] == "test" and metrics["epochs"] == 2
    assert metrics["test_accuracy"] > 0.5  # 10 classes: well above chance on the learnable synthetic data
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert list((run / "train").glob("events.out.tfevents.*"))
    assert list((run / "validation").glob("events.out.tfevents.*"))


def test_export_is_version_1_in_tf_serving_layout_with_card_and_warmup(trained_cnn):
    version_dir = trained_cnn.export_dir
    assert version_dir.name == "1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    card = exporter.read_model_card(version_dir)
    assert card["name"] == "cnn" and card["version"] == 1 and card["labels"] == list(FASHION_MNIST_LABELS)
    assert card["metrics"]["test_accuracy"] == trained_cnn.metrics["test_accuracy"]
    records = list(tf.data.TFRecordDataset(str(version_dir / "assets.extra" / exporter.WARMUP_FILE)))
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {"serving_default", "encoded_image"}
    assert oct(os.stat(version_dir).st_mode & 0o777) == oct(0o755)


def test_serving_default_returns_class_probabilities(trained_cnn):
    fn = tf.saved_model.load(str(trained_cnn.export_dir)).signatures["serving_default"]
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probabilities = fn(image=tf.constant(images))["probabilities"].numpy()
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_encoded_image_signature_decodes_png_and_jpeg_and_agrees_with_the_tensor_signature(trained_cnn):
    loaded = tf.saved_model.load(str(trained_cnn.export_dir))
    image = np.zeros((28, 28, 1), np.uint8)
    image[10:13, 2:26] = 230
    png = tf.io.encode_png(image).numpy()
    rgb_jpeg_56 = tf.io.encode_jpeg(tf.image.resize(tf.tile(image, [1, 1, 3]), [56, 56], "nearest")
                                    .numpy().astype(np.uint8), quality=100).numpy()
    out = loaded.signatures["encoded_image"](image_bytes=tf.constant([png, rgb_jpeg_56]))
    assert out["top_k_labels"].shape == (2, 3) and out["top_k_scores"].shape == (2, 3)
    assert out["top_k_labels"][0, 0].numpy().decode() in FASHION_MNIST_LABELS
    probabilities = loaded.signatures["serving_default"](image=tf.constant(image[None] / 255.0, tf.float32))
    np.testing.assert_allclose(out["top_k_scores"][0, 0], np.max(probabilities["probabilities"]), rtol=1e-5)
    assert int(out["top_k_ids"][0, 0]) == int(np.argmax(probabilities["probabilities"]))
    assert int(out["top_k_ids"][1, 0]) == int(out["top_k_ids"][0, 0])  # same picture, RGB and twice the size


def test_encoded_image_signature_rejects_bytes_that_are_not_an_image(trained_cnn):
    fn = tf.saved_model.load(str(trained_cnn.export_dir)).signatures["encoded_image"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(image_bytes=tf.constant([b"definitely not a png"]))


def test_a_new_export_takes_the_next_version_and_leaves_no_staging_dirs(trained_cnn, tmp_path):
    import zoo

    model = zoo.build("cnn")
    signatures = {"serving_default": tf.function(lambda image: {"probabilities": model(image)},
                                                 input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])}
    first = exporter.export(model, signatures, tmp_path / "cnn", model_card={"name": "cnn"})
    second = exporter.export(model, signatures, tmp_path / "cnn", model_card={"name": "cnn"})
    assert (first.name, second.name) == ("1", "2")
    assert sorted(p.name for p in (tmp_path / "cnn").iterdir()) == ["1", "2"]
    assert exporter.versions(tmp_path / "cnn") == [1, 2]


def test_set_overrides_split_into_model_hyperparameters_and_recipe():
    import zoo

    model, recipe = train.parse_sets(zoo.get("cnn"), ["dropout=0.5", "epochs=3", "augment=true"])
    assert model == {"dropout": "0.5"} and recipe == {"epochs": 3, "augment": True}
    with pytest.raises(ValueError, match="no hyperparameter or recipe entry 'depth'"):
        train.parse_sets(zoo.get("cnn"), ["depth=56"])


class Interrupt(Exception):
    pass


class InterruptAtEpoch(__import__("keras").callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"interrupted at epoch {epoch}")


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path, data_dir):
    common = dict(dataset="synthetic_fashion_mnist", recipe_overrides={"epochs": 3, "batch_size": 128},
                  run_id="resume-me", runs_dir=tmp_path, data_dir=data_dir, export=False, verbose=0)
    with pytest.raises(Interrupt):
        train.train("cnn", extra_callbacks=(InterruptAtEpoch(2),), **common)
    assert (tmp_path / "cnn" / "resume-me" / "backup").is_dir()
    result = train.train("cnn", **common)
    assert result.metrics["epochs"] == 3 and result.metrics["epochs_this_session"] == 1
    assert not (tmp_path / "cnn" / "resume-me" / "backup").exists()  # removed once the run completes


def test_a_runs_checkpoint_exports_as_the_next_version(trained_cnn, data_dir, tmp_path):
    runs_dir = trained_cnn.run_dir.parent.parent
    first = train.export_checkpoint("cnn", trained_cnn.run_dir.name, epoch=1, runs_dir=runs_dir,
                                    models_dir=tmp_path, data_dir=data_dir)
    last = train.export_checkpoint("cnn", trained_cnn.run_dir.name, runs_dir=runs_dir, models_dir=tmp_path,
                                   data_dir=data_dir)
    assert (first.name, last.name) == ("1", "2")
    assert exporter.read_model_card(first)["epoch"] == 1 and exporter.read_model_card(last)["epoch"] == 2
    images = tf.constant(np.random.default_rng(1).random((2, 28, 28, 1), dtype=np.float32))
    from_checkpoint = tf.saved_model.load(str(last)).signatures["serving_default"](image=images)
    from_training = tf.saved_model.load(str(trained_cnn.export_dir)).signatures["serving_default"](image=images)
    np.testing.assert_allclose(from_checkpoint["probabilities"], from_training["probabilities"], rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="no checkpoint of epoch 7"):
        train.export_checkpoint("cnn", trained_cnn.run_dir.name, epoch=7, runs_dir=runs_dir, models_dir=tmp_path)


@pytest.mark.parametrize("task", zoo.TASKS)
def test_every_task_has_a_pipeline_with_the_hooks_the_trainer_and_exporter_call(task):
    module = tasks.get(task)
    for hook in ("compile", "callbacks", "signatures", "warmup_requests", "evaluate_export"):
        assert callable(getattr(module, hook, None)), f"{task} has no {hook}"
    assert callable(getattr(module, "load_splits", None) or getattr(module, "preprocess", None))


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown task 'poetry'; one of image_classification"):
        tasks.get("poetry")
