"""The `tfzoo` command line: helpful --help, and one-line errors instead of tracebacks."""
import json
import subprocess
import sys

import pytest

from pipelines import cli


def run(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, **env})


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in ["list", "info", "train", "export", "evaluate", "serve", "predict", "export-config", "tensorboard",
                 "data"]:
        assert verb in out


def test_train_help_explains_the_overrides(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--set KEY=VALUE" in out and "--run-id" in out and "TF_CONFIG" in out


def test_list_and_info(capsys):
    assert cli.main(["list"]) == 0
    assert "cnn" in capsys.readouterr().out
    assert cli.main(["info", "cnn"]) == 0
    assert '"task": "image_classification"' in capsys.readouterr().out


def test_unknown_model_is_a_one_line_error_with_exit_code_2():
    result = run("train", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tfzoo train: error: unknown model 'nope'")
    assert "Traceback" not in result.stderr


def test_missing_dataset_is_a_one_line_actionable_error(tmp_path):
    result = run("train", "cnn", "--data-dir", str(tmp_path), TFZOO_FASHION_MNIST_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "apt-get install -y dataset-fashion-mnist" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_evaluate_without_an_export_says_how_to_make_one(tmp_path):
    result = run("evaluate", "cnn", "--models-dir", str(tmp_path))
    assert result.returncode == 2
    assert "run `tfzoo train cnn` first" in result.stderr


def test_predict_prints_text_outputs_as_text_and_binary_ones_as_b64():
    row = {"top_k_labels": [b"Shirt"], "mask_png_bytes": b"\x89PNG\r\n\x1a\n"}
    assert json.loads(json.dumps(row, default=cli.json_bytes)) == {
        "top_k_labels": ["Shirt"], "mask_png_bytes": {"b64": "iVBORw0KGgo="}}
