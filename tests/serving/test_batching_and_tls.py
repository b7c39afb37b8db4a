"""--enable_batching with --batching_parameters_file, and --ssl_config_file (TLS and mutual TLS for gRPC)."""
from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import MONITORING, post, write_config

from serving import client
from serving.launch import ModelServerProcess

pytestmark = pytest.mark.integration

BATCHING = """
max_batch_size {{ value: 4 }}
batch_timeout_micros {{ value: {timeout} }}
max_enqueued_batches {{ value: {queue} }}
num_batch_threads {{ value: 1 }}
allowed_batch_sizes: 2
allowed_batch_sizes: 4
"""


def batching_server(tmp_path, own_models, timeout_micros: int, queue: int) -> ModelServerProcess:
    (tmp_path / "batching.txt").write_text(BATCHING.format(timeout=timeout_micros, queue=queue))
    (tmp_path / "monitoring.txt").write_text(MONITORING)
    flags = ["--enable_batching", f"--batching_parameters_file={tmp_path / 'batching.txt'}",
             f"--monitoring_config_file={tmp_path / 'monitoring.txt'}"]
    return ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(own_models / "linear"),
                              extra_args=flags)


@pytest.fixture(scope="module")
def batching(own_models, tmp_path_factory):
    with batching_server(tmp_path_factory.mktemp("batching"), own_models, 20_000, 100) as server:
        yield server


def metric(server, name: str, **labels) -> float:
    text = requests.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_concurrent_requests_are_merged_into_fewer_model_runs_and_split_back(batching):
    runs_before = metric(batching, ":tensorflow:serving:runtime_latency_count", model_name="linear")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda x: post(batching, "linear:predict", {"instances": [float(x)]}), range(8)))
    assert answers == [(200, {"predictions": [0.5 * x + 2]}) for x in range(8)]
    runs = metric(batching, ":tensorflow:serving:runtime_latency_count", model_name="linear") - runs_before
    assert runs < 8  # eight one-row requests, batches of up to four rows
    assert metric(batching, ":tensorflow:serving:batching_session:queuing_latency_count") >= 8


def test_grpc_requests_are_batched_too(batching):
    c = client.GrpcClient("127.0.0.1", batching.grpc_port)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: c.predict("linear", {"x": np.array([x, x], np.float32)})["y"].tolist(),
                                range(4)))
    assert answers == [[0.5 * x + 2] * 2 for x in range(4)]


def test_with_batching_every_grpc_api_answers_and_fails_as_without(batching):
    """With batching the gRPC front-end runs on grpc.aio; answers and status codes stay TF Serving's."""
    c = client.GrpcClient("127.0.0.1", batching.grpc_port, timeout=30)
    assert c.status("linear")["model_version_status"][0]["state"] == "AVAILABLE"
    assert "classify_x_to_y" in c.metadata("linear")["metadata"]["signature_def"]["signature_def"]
    assert c.regress("linear", [{"x": [4.0]}], signature_name="regress_x_to_y") == [4.0]
    assert c.predict("linear", {"x": np.array([2.0], np.float32)}, output_filter=["y"])["y"].tolist() == [3.0]
    failures = {
        grpc.StatusCode.NOT_FOUND: lambda: c.predict("nope", {"x": np.array([1.0], np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT: lambda: c.predict("linear", {"x": np.ones(5, np.float32)}),
    }
    for code, call in failures.items():
        with pytest.raises(client.ServingClientError) as error:
            call()
        assert error.value.code == code
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{batching.grpc_port}"))
    assert health.Check(health_pb2.HealthCheckRequest(service="linear"), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_a_request_larger_than_max_batch_size_is_invalid(batching):
    code, body = post(batching, "linear:predict", {"instances": [1.0] * 5})
    assert code == 400 and "Task size 5 is larger than maximum batch size 4" in body["error"]


def test_a_full_batch_queue_answers_unavailable(own_models, tmp_path):
    with batching_server(tmp_path, own_models, 1_500_000, 1) as server:
        first = {}
        waiting = threading.Thread(target=lambda: first.setdefault(
            "answer", post(server, "linear:predict", {"instances": [1.0, 2.0, 3.0]})))
        waiting.start()
        # The first batch (3 of 4 rows) waits for its 1.5 s timeout; a second 3-row task needs a second
        # batch, and the queue holds one.
        time.sleep(0.5)
        code, body = post(server, "linear:predict", {"instances": [1.0, 2.0, 3.0]})
        waiting.join()
    assert code == 503 and "The batch scheduling queue to which this task was submitted is full" in body["error"]
    assert first["answer"] == (200, {"predictions": [2.5, 3.0, 3.5]})


# --- TLS ----------------------------------------------------------------------------------------------

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


def test_grpc_with_mutual_tls_from_an_ssl_config_file(tmp_path, own_models, certificates):
    (tmp_path / "ssl.txt").write_text(
        f'server_key: {json.dumps(certificates["server.key"].decode())}\n'
        f'server_cert: {json.dumps(certificates["server.crt"].decode())}\n'
        f'custom_ca: {json.dumps(certificates["ca.crt"].decode())}\nclient_verify: true\n')
    with ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(own_models / "linear"),
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


def test_per_model_batching_parameters_come_from_each_versions_batching_params_pbtxt(own_models, tmp_path):
    """--enable_per_model_batching_parameters (TF Serving's GetPerModelBatchingParams): a version with
    batching_params.pbtxt batches with it; one without is not batched; one whose file is invalid fails to load."""
    for name in ("own_params", "no_params", "bad_params"):
        shutil.copytree(own_models / "linear", tmp_path / name)
    (tmp_path / "own_params" / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 1000 }\nallowed_batch_sizes: 2\n")
    (tmp_path / "bad_params" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }\n"
                                                                          "allowed_batch_sizes: 3\n")
    (tmp_path / "batching.txt").write_text("max_batch_size { value: 4 }\n")  # the global file: unused here
    path = write_config(tmp_path / "models.config", {n: tmp_path / n for n in ("own_params", "no_params",
                                                                              "bad_params")})
    with ModelServerProcess(embedded=True, extra_args=[
            f"--model_config_file={path}", "--enable_batching", "--enable_per_model_batching_parameters",
            f"--batching_parameters_file={tmp_path / 'batching.txt'}", "--max_num_load_retries=0"]) as server:
        three, five = {"instances": [1.0, 2.0, 3.0]}, {"instances": [1.0, 2.0, 3.0, 4.0, 5.0]}
        code, answer = post(server, "own_params:predict", three)
        assert code == 400 and "Task size 3 is larger than maximum batch size 2" in answer["error"]
        assert post(server, "own_params:predict", {"instances": [1.0, 2.0]}) == (200, {"predictions": [2.5, 3.0]})
        # Not batched: neither its own limit nor the global file's (4 rows) applies.
        assert post(server, "no_params:predict", five) == (200, {"predictions": [2.5, 3.0, 3.5, 4.0, 4.5]})
        status = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/bad_params", timeout=30).json()
        version = status["model_version_status"][0]
        assert version["state"] == "END" and version["status"]["error_code"] == "INVALID_ARGUMENT"
        assert "batching_params.pbtxt" in version["status"]["error_message"]
