"""tfzoo-model-server answers TensorFlow Serving's own test models as TF Serving does (shared/SERVING.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.launch import ModelServerProcess
from tests.conftest import SHARED_FIXTURES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared/fixtures/tfserving is absent (CI has it)"),
]

CONFIG = """
model_config_list {{
  config {{ name: "default" base_path: "{f}/saved_model_half_plus_two_cpu" model_platform: "tensorflow" }}
  config {{ name: "half_plus_two" base_path: "{f}/saved_model_half_plus_two_cpu" model_platform: "tensorflow" }}
  config {{ name: "half_plus_three" base_path: "{f}/saved_model_half_plus_three" model_platform: "tensorflow" }}
  config {{ name: "tf2" base_path: "{f}/saved_model_half_plus_two_tf2_cpu" model_platform: "tensorflow" }}
  config {{ name: "two_versions" base_path: "{f}/saved_model_half_plus_two_2_versions"
            model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            version_labels {{ key: "stable" value: 123 }}
            version_labels {{ key: "canary" value: 124 }} }}
  config {{ name: "counter" base_path: "{f}/saved_model_counter" model_platform: "tensorflow" }}
  config {{ name: "bad" base_path: "{f}/bad_half_plus_two" model_platform: "tensorflow" }}
}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(CONFIG.format(f=SHARED_FIXTURES))
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={config}",
                                                       "--max_num_load_retries=0"]) as process:
        yield process


@pytest.fixture(scope="module")
def rest(server):
    return f"http://127.0.0.1:{server.rest_port}/v1/models"


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def post(url: str, body) -> tuple[int, dict]:
    response = requests.post(url, data=body if isinstance(body, (bytes, str)) else json.dumps(body), timeout=30)
    return response.status_code, response.json()


# --- REST reference answers ------------------------------------------------------------------------

def test_rest_predict_row_format(rest):
    assert post(f"{rest}/default:predict", {"instances": [1.0, 2.0, 5.0]}) == (200, {"predictions": [2.5, 3.0, 4.5]})
    assert post(f"{rest}/default:predict", {"instances": [2.0, 3.0, 4.0]}) == (200, {"predictions": [3.0, 3.5, 4.0]})


def test_rest_predict_columnar_format(rest):
    assert post(f"{rest}/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})


def test_rest_classify_and_regress_answer_under_results(rest):
    assert post(f"{rest}/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == \
        (200, {"results": [[["", 3.0]]]})
    assert post(f"{rest}/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == \
        (200, {"results": [3.0]})


def test_rest_regress_merges_context_into_each_example(rest):
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{}, {"x": 2.0}]}
    assert post(f"{rest}/default:regress", body) == (200, {"results": [7.0, 3.0]})


def test_rest_status_and_exact_metadata(rest):
    assert requests.get(f"{rest}/default", timeout=10).json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    expected = json.loads((SHARED_FIXTURES / "half_plus_two_model_metadata.json").read_text())
    assert requests.get(f"{rest}/default/metadata", timeout=10).json() == expected


def test_good_model_config_serves_half_plus_two_and_half_plus_three_side_by_side(rest):
    assert post(f"{rest}/half_plus_two:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
    assert post(f"{rest}/half_plus_three:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})


def test_tf2_export_serves_the_same_answers(rest):
    assert post(f"{rest}/tf2:predict", {"instances": [[1.0], [2.0]]}) == (200, {"predictions": [[2.5], [3.0]]})


def test_two_versions_with_policy_all_and_labels(rest):
    statuses = requests.get(f"{rest}/two_versions", timeout=10).json()["model_version_status"]
    assert sorted((s["version"], s["state"]) for s in statuses) == [("123", "AVAILABLE"), ("124", "AVAILABLE")]
    for path in ["versions/123", "versions/124", "labels/stable", "labels/canary"]:
        code, body = post(f"{rest}/two_versions/{path}:predict", {"instances": [1.0]})
        assert code == 200 and len(body["predictions"]) == 1
    code, body = post(f"{rest}/two_versions/labels/nope:predict", {"instances": [1.0]})
    assert code == 400 and body == {"error": "Unrecognized servable version label: nope"}


def test_counter_model_keeps_state_across_requests(rest):
    post(f"{rest}/counter:predict", {"signature_name": "reset_counter", "inputs": {}})
    for _ in range(3):
        post(f"{rest}/counter:predict", {"signature_name": "incr_counter", "inputs": {}})
    assert post(f"{rest}/counter:predict", {"signature_name": "get_counter", "inputs": {}}) == (200, {"outputs": 3.0})
    code, body = post(f"{rest}/counter:predict", {"signature_name": "incr_counter_by", "inputs": {"delta": 2.0}})
    assert (code, body) == (200, {"outputs": 5.0})


def test_broken_export_is_reported_and_does_not_bring_the_server_down(rest):
    status = requests.get(f"{rest}/bad", timeout=10).json()["model_version_status"]
    assert status[0]["version"] == "123" and status[0]["state"] == "END"
    assert status[0]["status"]["error_code"] != "OK" and status[0]["status"]["error_message"]
    code, body = post(f"{rest}/bad:predict", {"instances": [1.0]})
    assert code == 404 and body == {"error": "Servable not found for request: Latest(bad)"}
    assert post(f"{rest}/default:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_unknown_model_is_404_with_tf_serving_message(rest):
    assert post(f"{rest}/half:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Latest(half)"})


# --- gRPC ---------------------------------------------------------------------------------------------

def spec(name="default", signature="", version=None, label=None) -> model_pb2.ModelSpec:
    s = model_pb2.ModelSpec(name=name, signature_name=signature)
    if version is not None:
        s.version.value = version
    if label:
        s.version_label = label
    return s


def examples(*xs: float) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for x in xs:
        request_input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request_input


def test_grpc_predict_names_the_version_that_answered(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec=spec())
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0], [5.0]], np.float32)))
    response = stub.Predict(request, timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]).ravel(), [2.5, 3.0, 4.5])
    assert response.model_spec.name == "default" and response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_predict_with_output_filter_and_version_label(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec=spec("two_versions", label="canary"), output_filter=["y"])
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
    response = stub.Predict(request, timeout=10)
    assert list(response.outputs) == ["y"] and response.model_spec.version.value == 124


def test_grpc_classify_regress_and_multi_inference(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    classified = stub.Classify(classification_pb2.ClassificationRequest(
        model_spec=spec(signature="classify_x_to_y"), input=examples(2.0)), timeout=10)
    assert [(c.label, c.score) for c in classified.result.classifications[0].classes] == [("", 3.0)]
    regressed = stub.Regress(regression_pb2.RegressionRequest(
        model_spec=spec(signature="regress_x_to_y"), input=examples(2.0, 4.0)), timeout=10)
    assert [r.value for r in regressed.result.regressions] == [3.0, 4.0]
    multi = stub.MultiInference(inference_pb2.MultiInferenceRequest(tasks=[
        inference_pb2.InferenceTask(model_spec=spec(signature="classify_x_to_y"),
                                    method_name="tensorflow/serving/classify"),
        inference_pb2.InferenceTask(model_spec=spec(signature="regress_x_to_y"),
                                    method_name="tensorflow/serving/regress"),
    ], input=examples(2.0)), timeout=10)
    assert multi.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert multi.results[1].regression_result.regressions[0].value == 3.0


def test_grpc_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec(), metadata_field=["signature_def"]), timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y",
                                             "regress_x_to_y2", "regress_x2_to_y3"}
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec()), timeout=10)
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == \
        [(123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


@pytest.mark.parametrize("request_spec, code", [
    (spec("half"), grpc.StatusCode.NOT_FOUND),
    (spec(version=99), grpc.StatusCode.NOT_FOUND),
    (spec(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_grpc_errors_use_tf_serving_status_codes(channel, request_spec, code):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec=request_spec)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=10)
    assert error.value.code() == code


def test_bad_model_config_fails_to_parse_with_tf_serving_message():
    result = subprocess.run([sys.executable, "-m", "serving.server", "--port=0",
                             f"--model_config_file={SHARED_FIXTURES / 'bad_model_config.txt'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr
