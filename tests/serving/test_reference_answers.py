"""TF Serving's own test models answered as TF Serving answers them (shared/SERVING.md, "Reference answers").

One server serves `good_model_config.txt` (its ${...} placeholders filled in) extended with the other
fixtures, so every reference answer is checked on one process, over REST and gRPC.
"""
from __future__ import annotations

import json
import string
import subprocess
import sys

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from serving_helpers import NO_FIXTURES, TFSERVING_FIXTURES, post
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import config
from serving.launch import ModelServerProcess
from tests.random_tensors import assert_random_tensors_never_break

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not TFSERVING_FIXTURES.is_dir(), reason=NO_FIXTURES)]

FIXTURE_MODELS = {
    "default": "saved_model_half_plus_two_cpu",
    "tf2": "saved_model_half_plus_two_tf2_cpu",
    "saved_model_half_plus_two_2_versions": "saved_model_half_plus_two_2_versions",
    "counter": "saved_model_counter",
    "bad": "bad_half_plus_two",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    good = string.Template((TFSERVING_FIXTURES / "good_model_config.txt").read_text()).substitute(
        TEST_HALF_PLUS_TWO_DIR=TFSERVING_FIXTURES / "saved_model_half_plus_two_cpu",
        TEST_HALF_PLUS_THREE_DIR=TFSERVING_FIXTURES / "saved_model_half_plus_three")
    models = text_format.Parse(good, config.ModelServerConfig())
    for name, directory in FIXTURE_MODELS.items():
        model = models.model_config_list.config.add(name=name, base_path=str(TFSERVING_FIXTURES / directory),
                                                    model_platform="tensorflow")
        if name == "saved_model_half_plus_two_2_versions":
            model.model_version_policy.all.SetInParent()
            model.version_labels["stable"], model.version_labels["canary"] = 123, 124
    path = tmp_path_factory.mktemp("config") / "models.config"
    path.write_text(text_format.MessageToString(models))
    with ModelServerProcess(embedded=True, extra_args=[f"--model_config_file={path}",
                                                       "--max_num_load_retries=0"]) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def rest_get(server, path: str) -> dict:
    return requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/{path}", timeout=30).json()


# --- REST ---------------------------------------------------------------------------------------------

def test_predict_in_row_format_answers_predictions(server):
    assert post(server, "default:predict", {"instances": [2.0, 3.0, 4.0]}) == (200, {"predictions": [3.0, 3.5, 4.0]})


def test_issue_2_half_plus_two_of_1_2_5_is_2_5_3_4_5(server):
    assert post(server, "default:predict", {"instances": [1.0, 2.0, 5.0]}) == (200, {"predictions": [2.5, 3.0, 4.5]})


def test_predict_in_columnar_format_answers_outputs(server):
    assert post(server, "default:predict", {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})


def test_classify_answers_label_score_pairs_under_results(server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(server, "default:classify", body) == (200, {"results": [[["", 3.0]]]})


def test_regress_answers_values_under_results(server):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert post(server, "default:regress", body) == (200, {"results": [3.0]})


def test_regress_merges_the_context_into_each_example(server):
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{}, {"x": 2.0}]}
    assert post(server, "default:regress", body) == (200, {"results": [7.0, 3.0]})


def test_status_answers_version_123_available(server):
    assert rest_get(server, "default") == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_metadata_equals_tf_servings_answer_exactly(server):
    expected = json.loads((TFSERVING_FIXTURES / "half_plus_two_model_metadata.json").read_text())
    assert rest_get(server, "default/metadata") == expected


def test_metadata_of_a_specific_version_equals_tf_servings_answer_exactly(server):
    expected = json.loads((TFSERVING_FIXTURES / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    assert rest_get(server, "saved_model_half_plus_two_2_versions/versions/123/metadata") == expected


def test_good_model_config_serves_half_plus_two_and_half_plus_three_side_by_side(server):
    assert post(server, "half_plus_two:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
    assert post(server, "half_plus_three:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})


def test_a_tf2_export_gives_the_same_answers(server):
    assert post(server, "tf2:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_a_tf2_export_refuses_what_its_signature_does_not_declare(server):
    # Its serving_default declares x as float [1]: TF Serving would feed [2,1] to the function unchecked;
    # this server checks every input against the signature first (see SERVING.md), so that no malformed
    # tensor can reach a kernel that aborts the process.
    code, answer = post(server, "tf2:predict", {"instances": [[1.0], [2.0]]})
    assert code == 400 and answer["error"] == "input x: expected shape [1] (rank 1) but got [2,1] (rank 2)"


def test_a_tf2_exports_predict_signatures_classify_and_regress_without_the_method_name_check(server):
    """TF Serving's default --enable_signature_method_name_check=false: Classify and Regress run on a native TF2
    export's signatures (method_name tensorflow/serving/predict) whose inputs and outputs fit; over both
    protocols. (With the check on, they are refused: tests/serving/test_startup.py.)"""
    examples = [{"x": 2.0}, {"x": 4.0}]
    assert post(server, "tf2:classify", {"signature_name": "classify_x_to_y", "examples": examples}) == \
        (200, {"results": [[["", 3.0]], [["", 4.0]]]})
    assert post(server, "tf2:regress", {"signature_name": "regress_x_to_y", "examples": examples}) == \
        (200, {"results": [3.0, 4.0]})
    proto_examples = input_pb2.Input(example_list=input_pb2.ExampleList(examples=[
        tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(
            float_list=tf.train.FloatList(value=[x["x"]]))})) for x in examples]))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        classified = stub.Classify(classification_pb2.ClassificationRequest(
            model_spec=model_pb2.ModelSpec(name="tf2", signature_name="classify_x_to_y"), input=proto_examples),
            timeout=30)
        regressed = stub.Regress(regression_pb2.RegressionRequest(
            model_spec=model_pb2.ModelSpec(name="tf2", signature_name="regress_x_to_y"), input=proto_examples),
            timeout=30)
    assert [[c.score for c in row.classes] for row in classified.result.classifications] == [[3.0], [4.0]]
    assert [r.value for r in regressed.result.regressions] == [3.0, 4.0]


def test_two_versions_are_served_by_version_and_by_label_with_policy_all(server):
    statuses = rest_get(server, "saved_model_half_plus_two_2_versions")["model_version_status"]
    assert sorted((s["version"], s["state"]) for s in statuses) == [("123", "AVAILABLE"), ("124", "AVAILABLE")]
    for path in ["versions/123", "versions/124", "labels/stable", "labels/canary", ""]:
        code, body = post(server, f"saved_model_half_plus_two_2_versions{path and '/' + path}:predict",
                          {"instances": [1.0]})
        assert code == 200 and len(body["predictions"]) == 1
    code, body = post(server, "saved_model_half_plus_two_2_versions/labels/nope:predict", {"instances": [1.0]})
    assert (code, body) == (400, {"error": "Unrecognized servable version label: nope"})


def test_counter_model_keeps_state_across_requests(server):
    post(server, "counter:predict", {"signature_name": "reset_counter", "inputs": {}})
    for _ in range(3):
        post(server, "counter:predict", {"signature_name": "incr_counter", "inputs": {}})
    assert post(server, "counter:predict", {"signature_name": "get_counter", "inputs": {}}) == (200, {"outputs": 3.0})
    assert post(server, "counter:predict", {"signature_name": "incr_counter_by", "inputs": {"delta": 2.0}}) == \
        (200, {"outputs": 5.0})


def test_broken_export_is_reported_as_end_with_an_error_and_the_server_stays_up(server):
    status = rest_get(server, "bad")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("123", "END")]
    assert status[0]["status"]["error_code"] != "OK" and status[0]["status"]["error_message"]
    assert post(server, "bad:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Latest(bad)"})
    assert post(server, "default:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})


def test_an_unknown_model_is_404_with_tf_servings_message(server):
    assert post(server, "half:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Latest(half)"})


# --- gRPC ---------------------------------------------------------------------------------------------

def spec(name="default", signature="", version=None) -> model_pb2.ModelSpec:
    model_spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    if version is not None:
        model_spec.version.value = version
    return model_spec


def examples(*xs: float) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for x in xs:
        request_input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request_input


def test_grpc_get_model_status_answers_one_version_123_with_error_code_0(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec()), timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == \
        [(123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]


def test_grpc_predict_answers_and_names_the_version_that_answered(channel):
    request = predict_pb2.PredictRequest(model_spec=spec())
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0], [5.0]], np.float32)))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]).ravel(), [2.5, 3.0, 4.5])
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == \
        ("default", 123, "serving_default")


def test_grpc_classify_and_regress_give_the_rest_answers(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    classified = stub.Classify(classification_pb2.ClassificationRequest(
        model_spec=spec(signature="classify_x_to_y"), input=examples(2.0)), timeout=30)
    assert [(c.label, c.score) for c in classified.result.classifications[0].classes] == [("", 3.0)]
    regressed = stub.Regress(regression_pb2.RegressionRequest(
        model_spec=spec(signature="regress_x_to_y"), input=examples(2.0)), timeout=30)
    assert [r.value for r in regressed.result.regressions] == [3.0]


def test_grpc_unknown_model_is_not_found_with_tf_servings_message(channel):
    request = predict_pb2.PredictRequest(model_spec=spec("half"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as error:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert (error.value.code(), error.value.details()) == \
        (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(half)")


# --- config files -------------------------------------------------------------------------------------

def test_bad_model_config_fails_to_parse_with_tf_servings_message_and_exits_non_zero():
    result = subprocess.run([sys.executable, "-m", "serving.server", "--port=0",
                             f"--model_config_file={TFSERVING_FIXTURES / 'bad_model_config.txt'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: " in result.stderr


@pytest.mark.parametrize("name, message", [("batching_config.txt", "BatchingParameters"),
                                           ("monitoring_config.txt", "MonitoringConfig")])
def test_fixture_batching_and_monitoring_configs_parse(name, message):
    from serving.server import protos

    parsed = config.read_text(TFSERVING_FIXTURES / name, getattr(protos, message))
    assert parsed.ListFields()


def test_random_tensors_to_every_fixture_signature_never_break_the_server(server):
    assert_random_tensors_never_break(server, ["default", "tf2", "saved_model_half_plus_two_2_versions", "counter",
                                               "half_plus_two", "half_plus_three"], examples=40)
