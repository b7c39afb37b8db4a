"""tfzoo-model-server on models built here: version roll-over, broken versions, bad input, reload, shutdown."""
from __future__ import annotations

import base64
import json
import shutil
import signal
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving import client, config
from serving.launch import ModelServerProcess
from tests.saved_models import broken_export, tf1_linear_model

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def models(tmp_path_factory, trained_cnn):
    root = tmp_path_factory.mktemp("models")
    tf1_linear_model(root / "linear" / "1", slope=0.5, intercept=2.0)
    shutil.copytree(trained_cnn.export_dir, root / "cnn" / "1")
    (root / "linear" / "not-a-version").mkdir()  # ignored, as by TF Serving
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    path = config.write_models_config(models)
    socket_path = tmp_path_factory.mktemp("sock") / "grpc.sock"
    with ModelServerProcess(embedded=True, extra_args=[
        f"--model_config_file={path}", "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0",
        f"--grpc_socket_path={socket_path}",
    ]) as process:
        process.socket_path = socket_path
        yield process


@pytest.fixture(scope="module")
def rest(server):
    return client.RestClient("127.0.0.1", server.rest_port)


def post(server, path: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/{path}", data=data, timeout=30)
    return response.status_code, response.json()


def test_keras_export_predicts_over_rest_and_grpc_like_in_process(server, trained_cnn):
    loaded = tf.saved_model.load(str(trained_cnn.export_dir))
    image = np.zeros((28, 28, 1), np.uint8)
    image[10:13, 2:26] = 230
    png = tf.io.encode_png(image).numpy()
    expected = loaded.signatures["encoded_image"](image_bytes=tf.constant([png]))
    code, body = post(server, "cnn:predict", {"signature_name": "encoded_image",
                                               "instances": [{"b64": base64.b64encode(png).decode()}]})
    assert code == 200
    assert body["predictions"][0]["top_k_labels"] == [b.decode() for b in expected["top_k_labels"][0].numpy()]
    np.testing.assert_allclose(body["predictions"][0]["top_k_scores"], expected["top_k_scores"][0], rtol=1e-6)
    images = (image[None] / 255.0).astype(np.float32)
    by_grpc = client.GrpcClient("127.0.0.1", server.grpc_port).predict("cnn", {"image": images})
    np.testing.assert_allclose(by_grpc["probabilities"],
                               loaded.signatures["serving_default"](image=tf.constant(images))["probabilities"],
                               rtol=1e-6)


def test_grpc_over_the_unix_socket(server):
    channel = grpc.insecure_channel(f"unix:{server.socket_path}")
    outputs = client.GrpcClient(channel=channel).predict("linear", {"x": np.array([2.0], np.float32)})
    assert outputs["y"].tolist() == [3.0]


def test_health_service_and_readiness_endpoint(server):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert requests.get(f"http://127.0.0.1:{server.rest_port}/readyz", timeout=10).json() == {"ready": True}


def test_model_list_extension_lists_every_model(server):
    body = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models", timeout=10).json()
    assert sorted(m["name"] for m in body["models"]) == ["cnn", "linear"]


@pytest.mark.parametrize("body, message", [
    ("{not json", "JSON Parse error"),
    ({"instances": [1.0], "inputs": [1.0]}, "Not allowed to mix"),
    ({}, "Missing 'instances' or 'inputs'"),
    ({"instances": [[1.0], [2.0, 3.0]]}, "ragged"),
    ({"instances": ["a"]}, "is not of expected type: float"),
    ({"instances": [{"nope": 1.0}]}, "input tensor alias not found in signature: nope"),
    ({"signature_name": "nope", "instances": [1.0]}, 'Serving signature name: "nope" not found'),
    ({"instances": [{"b64": "!!!not base64"}]}, "is not of expected type: float"),
    ([1, 2], "must be a JSON object"),
])
def test_malformed_predict_requests_get_400_and_a_clear_error(server, body, message):
    code, answer = post(server, "linear:predict", body)
    assert code == 400 and message in answer["error"]


def test_undecodable_image_bytes_are_invalid_argument_not_a_crash(server):
    code, answer = post(server, "cnn:predict", {"signature_name": "encoded_image",
                                                 "instances": [{"b64": base64.b64encode(b"not a png").decode()}]})
    assert code == 400 and answer["error"]
    code, answer = post(server, "cnn:predict", {"instances": [[[[0.0]] * 27] * 28]})
    assert code == 400  # wrong image shape
    with pytest.raises(client.ServingClientError) as error:
        client.GrpcClient("127.0.0.1", server.grpc_port).predict(
            "cnn", {"image_bytes": np.array([b"junk"], dtype=object)}, signature_name="encoded_image")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_unknown_version_and_label_in_paths(server):
    assert post(server, "linear/versions/7:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Specific(linear, 7)"})
    code, _ = post(server, "linear/labels/nope:predict", {"instances": [1.0]})
    assert code == 400
    response = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/linear/versions/7", timeout=10)
    assert response.status_code == 404


def test_new_version_is_loaded_then_the_old_one_unloaded_without_failed_requests(server, models, rest):
    failures, answers = [], set()
    tf1_linear_model(models / "staging-2", slope=0.5, intercept=3.0)
    (models / "staging-2").rename(models / "linear" / "2")  # atomic, as pipelines.export does
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, body = post(server, "linear:predict", {"instances": [1.0]})
        if code != 200:
            failures.append(body)
        else:
            answers.add(body["predictions"][0])
        states = {s["version"]: s["state"] for s in rest.status("linear")["model_version_status"]}
        if states == {"2": "AVAILABLE", "1": "END"}:
            break
    assert states == {"2": "AVAILABLE", "1": "END"}
    assert failures == [] and answers <= {2.5, 3.5}  # every request answered, by version 1 or 2
    assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})


def test_a_broken_new_version_is_reported_and_the_serving_version_stays(server, models, rest):
    broken_export(models / "staging-9")
    (models / "staging-9").rename(models / "linear" / "9")
    status = wait_for(lambda: [s for s in rest.status("linear")["model_version_status"]
                               if s["version"] == "9" and s["state"] == "END"], what="version 9 to fail")
    assert status[0]["status"]["error_code"] != "OK" and status[0]["status"]["error_message"]
    assert post(server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})
    shutil.rmtree(models / "linear" / "9")


def test_reload_config_serves_exactly_the_new_config(server, models):
    new_config = config.models_config(models)
    del new_config.model_config_list.config[:]
    model = new_config.model_config_list.config.add(name="linear_again", base_path=str(models / "linear"),
                                                    model_platform="tensorflow")
    model.model_version_policy.all.SetInParent()
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    response = stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=new_config),
                                              timeout=120)
    assert response.status.error_code == 0
    assert post(server, "linear_again/versions/2:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})
    assert post(server, "cnn:predict", {"instances": [[[[0.0]] * 28] * 28]})[0] == 404


def test_sigterm_drains_and_exits_zero(models, tmp_path):
    process = ModelServerProcess(embedded=True, model_name="linear", model_base_path=str(models / "linear"))
    with process:
        assert post(process, "linear:predict", {"instances": [1.0]})[0] == 200
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(timeout=60) == 0
    assert "Server stopped" in process.log_text()


def test_model_dir_without_versions_logs_an_actionable_message(tmp_path):
    (tmp_path / "empty").mkdir()
    with ModelServerProcess(embedded=True, model_name="empty", model_base_path=str(tmp_path / "empty"),
                            extra_args=["--file_system_poll_wait_seconds=1"]) as process:
        response = requests.get(f"http://127.0.0.1:{process.rest_port}/v1/models/empty", timeout=10)
        assert response.status_code == 404
        assert "No versions of servable empty found under base path" in process.log_text()


def test_config_written_for_a_models_dir_is_a_valid_model_server_config(models):
    text = (models / "models.config").read_text()
    parsed = text_format.Parse(text, config.ModelServerConfig())
    assert sorted(c.name for c in parsed.model_config_list.config) == ["cnn", "linear"]
