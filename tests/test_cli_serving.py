"""`tfzoo export-config`, `tfzoo serve` and `tfzoo predict`: the user's path from models/ to answers."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf

from serving import config
from serving.launch import free_port

pytestmark = pytest.mark.integration


def tfzoo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, trained_cnn):
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(trained_cnn.export_dir, root / "cnn" / "1")
    return root


def test_export_config_writes_a_model_server_config_for_every_model(models_dir):
    result = tfzoo("export-config", "--models-dir", str(models_dir))
    assert result.returncode == 0, result.stderr
    parsed = config.read_model_server_config(models_dir / "models.config")
    assert [(c.name, c.base_path) for c in parsed.model_config_list.config] == [("cnn", str(models_dir / "cnn"))]


def test_export_config_on_an_empty_dir_says_what_to_do(tmp_path):
    result = tfzoo("export-config", "--models-dir", str(tmp_path))
    assert result.returncode == 2 and "train or export one first" in result.stderr


def test_serve_says_which_server_and_predict_queries_it(models_dir, tmp_path):
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--models-dir", str(models_dir),
                               "--port", str(grpc_port), "--rest-api-port", str(rest_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            try:
                if requests.get(f"http://127.0.0.1:{rest_port}/v1/models/cnn", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        image = np.zeros((28, 28, 1), np.uint8)
        image[2:26, 11:14] = 230
        (tmp_path / "bar.png").write_bytes(tf.io.encode_png(image).numpy())
        for protocol, port in (("rest", rest_port), ("grpc", grpc_port)):
            result = tfzoo("predict", "cnn", str(tmp_path / "bar.png"), "--protocol", protocol, "--port", str(port))
            assert result.returncode == 0, result.stderr
            row = json.loads(result.stdout.split(" ", 1)[1])
            assert len(row["top_k_labels"]) == 3 and row["top_k_scores"][0] >= row["top_k_scores"][1]
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0
    assert "tfzoo-model-server (embedded; tensorflow_model_server is not on PATH)" in output
