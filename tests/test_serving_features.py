"""Batching, Prometheus monitoring, warmup, config-file polling and TLS, as TF Serving's flags set them up."""
from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from serving import client, config
from serving.launch import ModelServerProcess
from tests.saved_models import tf1_linear_model

pytestmark = pytest.mark.integration

BATCHING = """
max_batch_size {{ value: 4 }}
batch_timeout_micros {{ value: {timeout} }}
max_enqueued_batches {{ value: {queue} }}
num_batch_threads {{ value: 1 }}
allowed_batch_sizes: 2
allowed_batch_sizes: 4
"""
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }'


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear")
    tf1_linear_model(root / "1")
    return root


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, linear_dir, trained_cnn):
    files = tmp_path_factory.mktemp("config")
    (files / "batching.txt").write_text(BATCHING.format(timeout=20_000, queue=100))
    (files / "monitoring.txt").write_text(MONITORING)
    models = files / "models"
    shutil.copytree(trained_cnn.export_dir, models / "cnn" / "1")
    shutil.copytree(linear_dir, models / "linear")
    path = config.write_models_config(models)
    with ModelServerProcess(embedded=True, extra_args=[
        f"--model_config_file={path}", "--enable_batching",
        f"--batching_parameters_file={files / 'batching.txt'}",
        f"--monitoring_config_file={files / 'monitoring.txt'}",
    ]) as process:
        yield process


def predict(server, model: str, body: dict) -> tuple[int, dict]:
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/{model}:predict",
                             data=json.dumps(body), timeout=60)
    return response.status_code, response.json()


def metric(server, name: str, **labels) -> float:
    text = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_merged_into_fewer_model_calls_and_split_back(batching_server):
    runs_before = metric(batching_server, ":tensorflow:serving:runtime_latency_count", model_name="linear")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: predict(batching_server, "linear", {"instances": [float(x)]}), range(8)))
    assert answers == [(200, {"predictions": [0.5 * x + 2]}) for x in range(8)]
    runs = metric(batching_server, ":tensorflow:serving:runtime_latency_count", model_name="linear") - runs_before
    assert runs < 8  # 8 one-row requests, batches of up to 4 rows
    assert metric(batching_server, ":tensorflow:serving:batching_session:queuing_latency_count") >= 8


def test_a_full_batch_queue_answers_unavailable(tmp_path, linear_dir):
    (tmp_path / "batching.txt").write_text(BATCHING.format(timeout=1_500_000, queue=1))
    with ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(linear_dir), extra_args=[
            "--enable_batching", f"--batching_parameters_file={tmp_path / 'batching.txt'}"]) as server:
        first = {}
        thread = threading.Thread(target=lambda: first.setdefault("answer", predict(
            server, "linear", {"instances": [1.0, 2.0, 3.0]})))
        thread.start()
        time.sleep(0.5)  # the first batch (3 of 4 rows) is waiting for its 1.5 s timeout
        code, body = predict(server, "linear", {"instances": [1.0, 2.0, 3.0]})
        thread.join()
    assert code == 503 and "queue" in body["error"]
    assert first["answer"] == (200, {"predictions": [2.5, 3.0, 3.5]})


def test_a_request_larger_than_max_batch_size_is_invalid(batching_server):
    code, body = predict(batching_server, "linear", {"instances": [1.0] * 5})
    assert code == 400 and "larger than maximum batch size 4" in body["error"]


def test_prometheus_metrics_use_tf_serving_names(batching_server):
    predict(batching_server, "linear", {"instances": [1.0]})
    predict(batching_server, "nope", {"instances": [1.0]})
    assert metric(batching_server, ":tensorflow:serving:request_count", model_name="linear", status="OK") >= 1
    assert metric(batching_server, ":tensorflow:serving:request_count", model_name="nope", status="NOT_FOUND") == 1
    assert metric(batching_server, ":tensorflow:serving:request_latency_count", model_name="linear",
                  API="predict", entrypoint="REST") >= 1
    assert metric(batching_server, ":tfzoo:serving:signature_request_count", model_name="linear", version="1",
                  signature_name="serving_default", status="OK") >= 1


def test_warmup_records_are_replayed_before_the_version_is_available(batching_server):
    log = batching_server.log_text()
    warmed = log.index("Number of warmup records read: 2")
    loaded = log.index("Successfully loaded servable version {name: cnn version: 1}")
    assert warmed < loaded


def test_batching_file_without_enable_batching_is_a_startup_error(tmp_path):
    (tmp_path / "b.txt").write_text(BATCHING.format(timeout=0, queue=1))
    console_script = Path(sys.executable).parent / "tfzoo-model-server"
    result = subprocess.run([str(console_script), "--model_base_path=/nonexistent",
                             f"--batching_parameters_file={tmp_path / 'b.txt'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--enable_batching" in result.stderr


def test_config_file_changes_are_polled_and_applied(tmp_path, linear_dir):
    path = tmp_path / "models.config"
    path.write_text(f'model_config_list {{ config {{ name: "a" base_path: "{linear_dir}" }} }}')
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}",
                                                       "--model_config_file_poll_wait_seconds=1"]) as server:
        assert predict(server, "a", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
        path.write_text(f'model_config_list {{ config {{ name: "b" base_path: "{linear_dir}" }} }}')
        deadline = time.monotonic() + 60
        while predict(server, "b", {"instances": [1.0]})[0] != 200:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.5)
        assert predict(server, "a", {"instances": [1.0]})[0] == 404  # a reload serves exactly the new config


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=tfzoo test CA", cwd=d)
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={'localhost' if name == 'server' else 'tfzoo client'}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".key", ".crt")}


def test_grpc_with_mutual_tls_from_ssl_config_file(tmp_path, linear_dir, certificates):
    ssl = (f'server_key: {json.dumps(certificates["server.key"].decode())}\n'
           f'server_cert: {json.dumps(certificates["server.crt"].decode())}\n'
           f'custom_ca: {json.dumps(certificates["ca.crt"].decode())}\nclient_verify: true\n')
    (tmp_path / "ssl.txt").write_text(ssl)
    with ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(linear_dir),
                            extra_args=[f"--ssl_config_file={tmp_path / 'ssl.txt'}"]) as server:
        target = f"localhost:{server.grpc_port}"
        mutual = grpc.ssl_channel_credentials(certificates["ca.crt"], certificates["client.key"],
                                              certificates["client.crt"])
        outputs = client.GrpcClient(channel=grpc.secure_channel(target, mutual)).predict(
            "linear", {"x": np.array([2.0], np.float32)})
        assert outputs["y"].tolist() == [3.0]
        anonymous = grpc.secure_channel(target, grpc.ssl_channel_credentials(certificates["ca.crt"]))
        with pytest.raises(client.ServingClientError):  # no client certificate: refused
            client.GrpcClient(channel=anonymous, timeout=10).predict("linear", {"x": np.array([2.0], np.float32)})
