"""Training and export: a run directory with logs and metrics, and a SavedModel a server can use."""
import argparse
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import zoo
from pipelines import config as run_config
from pipelines import export as exporter
from pipelines import tasks, train
from pipelines.errors import UserError
from zoo.labels import FASHION_MNIST_LABELS

REPO = Path(__file__).resolve().parent.parent


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


def test_run_ids_made_in_one_second_by_one_process_differ_and_sort_in_order():
    """Two runs in one second (a tiny run, a sweep in a notebook) must not share a directory: the second would
    resume the first's backup (it once made test_reinforcement_learning's sarsa run return q-learning's path)."""
    ids = [train.make_run_id() for _ in range(3)]
    assert len(set(ids)) == 3
    assert ids == sorted(ids) and all(f"-{os.getpid()}" in i for i in ids)


def test_set_overrides_split_into_model_hyperparameters_and_recipe_typed_by_their_defaults():
    run = run_config.resolve("cnn", sets=["dropout=0.5", "epochs=3", "augment=true"])
    assert run.hparams["dropout"] == 0.5 and run.recipe["epochs"] == 3 and run.recipe["augment"] is True
    assert zoo.get("cnn").hparams["dropout"] != 0.5 and "augment" not in zoo.get("cnn").train  # the spec is unchanged
    with pytest.raises(UserError, match="no hyperparameter or recipe entry 'depth'"):
        run_config.resolve("cnn", sets=["depth=56"])


def test_a_key_that_nothing_reads_is_refused_with_the_valid_keys():
    with pytest.raises(UserError, match="'label_smoothing': neither the model nor its task .* valid keys: .*beta_2"):
        run_config.resolve("gpt", sets=["label_smoothing=0.1"])
    with pytest.raises(UserError, match="expects KEY=VALUE"):
        run_config.resolve("cnn", sets=["epochs"])
    with pytest.raises(UserError, match="cnn: .*invalid literal"):
        run_config.resolve("cnn", sets=["epochs=many"])


@pytest.mark.parametrize("argv, epochs", [
    (["--set", "epochs=30"], 30),  # a --set is never undone by an unset flag
    (["--epochs", "5"], 5),
    (["--set", "epochs=30", "--epochs", "5"], 5),  # flag > --set > recipe
    ([], 10),
])
def test_one_precedence_rule_flag_over_set_over_recipe(argv, epochs):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    assert train.config_from_arguments(parser.parse_args(["cnn", *argv])).recipe["epochs"] == epochs


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_zoo_entry_sets_only_recipe_keys_its_task_or_the_trainer_reads(name):
    run = run_config.resolve(name)  # raises if the registry sets a key nothing reads
    assert set(zoo.get(name).train) <= set(run.recipe)
    assert run_config.RunConfig.from_json(json.loads(json.dumps(run.to_json()))) == run


def test_early_stopping_is_reachable_and_stops_a_run_that_stopped_improving(tmp_path, data_dir):
    class Plateau(__import__("keras").callbacks.Callback):
        """Reports a validation loss that never improves after the first epoch."""

        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = 1.0 + epoch

    result = train.train("cnn", dataset="synthetic_fashion_mnist", recipe_overrides={
        "epochs": 6, "batch_size": 256, "early_stopping_patience": 1}, runs_dir=tmp_path, data_dir=data_dir,
        export=False, verbose=0, extra_callbacks=(Plateau(),))
    assert result.metrics["epochs_this_session"] == 2 and result.metrics["stopped_early"]


def test_every_command_printed_in_the_results_and_readme_resolves_to_the_config_its_figure_recorded():
    """Every `tfzoo train ...` in README.md and bench/results/*.md, parsed by the real command line (a key nothing
    reads, or a bad flag, fails here); where the command sits above the hyperparameters and recipe its figure
    recorded (`- hyperparameters: `{json}`` and `- recipe: `{json}`` lines), the command gives the same values."""
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    checked = compared = 0
    for path in [REPO / "README.md", *sorted((REPO / "bench" / "results").glob("*.md"))]:
        for command, recorded in printed_commands(path.read_text()):
            run = train.config_from_arguments(parser.parse_args(shlex.split(command)[2:]))
            checked += 1
            for key, values in (("hyperparameters", run.hparams), ("recipe", run.recipe)):
                if key in recorded:
                    shared = set(recorded[key]) & set(values)  # recipes recorded before a key moved to its task
                    assert {k: recorded[key][k] for k in shared} == {k: json_value(values[k]) for k in shared}, \
                        (path.name, command)
                    compared += 1
    assert checked >= 10 and compared >= 8


def json_value(value):
    return list(value) if isinstance(value, tuple) else value


def printed_commands(text: str):
    """(command, {"hyperparameters": ..., "recipe": ...} as recorded below it) for every `tfzoo train MODEL ...`
    in backticks or on a code line (placeholders such as `tfzoo train MODEL` skipped)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        for found in re.findall(r"tfzoo train [a-z][^`#&]*", line):
            recorded = {}
            for later in lines[i + 1:]:
                if later.startswith("#") or "tfzoo train " in later:
                    break
                if match := re.match(r"- (hyperparameters|recipe): `(\{.*\})`", later):
                    recorded[match[1]] = json.loads(match[2])
            yield found.strip(), recorded


@pytest.mark.parametrize("task", zoo.TASKS)
def test_every_task_is_one_task_subclass_that_writes_the_required_hooks(task):
    cls = tasks.get(task)
    assert issubclass(cls, tasks.Task) and cls.name == task
    for hook in ("compile", "signatures", "evaluate_export"):  # the hooks without a default
        assert getattr(cls, hook) is not getattr(tasks.Task, hook), f"{task} does not write {hook}"


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(zoo.ZooError, match="unknown task 'poetry'; one of image_classification"):
        tasks.get("poetry")
