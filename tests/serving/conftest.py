"""Fixtures for the serving tests: models built here and one server shared by most tests.

Servers run as real subprocesses (`serving.launch.ModelServerProcess`) on free ports of 127.0.0.1;
starting one imports TensorFlow (seconds), so tests share them per module or per session.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from savedmodels import broken_export, keras_default_export, keras_image_classifier, tf1_linear_model  # noqa: E402
from serving_helpers import MONITORING, write_config  # noqa: E402

from serving.launch import ModelServerProcess  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: starts real subprocesses (model server, ...)")


@pytest.fixture(scope="session")
def own_models(tmp_path_factory) -> Path:
    """<root>/<model>/<version>: TF1 linear, two versions, Keras image classifiers, a broken export."""
    root = tmp_path_factory.mktemp("models")
    tf1_linear_model(root / "linear" / "1")
    (root / "linear" / "not-a-version").mkdir()  # ignored, as by TF Serving
    tf1_linear_model(root / "two_versions" / "1", intercept=2.0)
    tf1_linear_model(root / "two_versions" / "2", intercept=3.0)
    tf1_linear_model(root / "rolling" / "1", intercept=2.0)
    keras_image_classifier(root / "image" / "1")
    keras_default_export(root / "keras_default" / "1")
    broken_export(root / "broken" / "1")
    return root


@pytest.fixture(scope="session")
def own_server(own_models, tmp_path_factory):
    """One server for most tests: every own model, a Unix socket, Prometheus metrics, CORS, 1 s polling."""
    files = tmp_path_factory.mktemp("own_server")
    (files / "monitoring.txt").write_text(MONITORING)
    models = {name: own_models / name for name in ("linear", "two_versions", "rolling", "image",
                                                    "keras_default", "broken")}
    path = write_config(files / "models.config", models, {
        "two_versions": 'model_version_policy { all {} } version_labels { key: "stable" value: 1 } '
                        'version_labels { key: "canary" value: 2 }'})
    socket_path = files / "grpc.sock"
    with ModelServerProcess(embedded=True, extra_args=[
        f"--model_config_file={path}", "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0",
        f"--grpc_socket_path={socket_path}", f"--monitoring_config_file={files / 'monitoring.txt'}",
        "--rest_api_enable_cors_support",
    ]) as process:
        process.socket_path = socket_path
        yield process
