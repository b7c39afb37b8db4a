"""tfzoo-model-server on models built here: both protocols, every API, the extensions, the clients.

All tests share the session's `own_server` (TF1 linear model, two versions with labels, Keras 3
image classifiers, a broken export; gRPC also on a Unix socket; Prometheus metrics on).
"""
from __future__ import annotations

import base64
import math

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from savedmodels import LABELS, TOP_K, image_classifier, png
from serving_helpers import get, post
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rest(own_server) -> client.RestClient:
    return client.RestClient("127.0.0.1", own_server.rest_port)


@pytest.fixture(scope="module")
def grpc_client(own_server):
    c = client.GrpcClient("127.0.0.1", own_server.grpc_port)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(grpc_client) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return grpc_client.prediction


def images(n: int = 2) -> np.ndarray:
    return np.stack([np.full((28, 28, 1), i / n, np.float32) for i in range(n)])


def expected_probabilities(batch: np.ndarray) -> np.ndarray:
    return np.asarray(image_classifier()(batch))  # same seed, same weights as the export


# --- REST predict, classify, regress ------------------------------------------------------------------

def test_tf1_model_predicts_in_row_and_columnar_format(own_server):
    assert post(own_server, "linear:predict", {"instances": [1.0, 2.0, 5.0]}) == \
        (200, {"predictions": [2.5, 3.0, 4.5]})
    assert post(own_server, "linear:predict", {"inputs": {"x": [1.0, 2.0]}}) == (200, {"outputs": [2.5, 3.0]})


def test_row_format_objects_name_their_inputs(own_server):
    assert post(own_server, "linear:predict", {"instances": [{"x": 1.0}, {"x": 3.0}]}) == \
        (200, {"predictions": [2.5, 3.5]})


def test_tf1_model_classifies_and_regresses_tf_examples(own_server):
    assert post(own_server, "linear:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == \
        (200, {"results": [[["", 3.0]]]})
    body = {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {"x": 0.0}]}
    assert post(own_server, "linear:regress", body) == (200, {"results": [4.0, 2.0]})


def test_nan_and_infinity_are_accepted_in_json_and_written_back(own_server):
    response = requests.post(f"http://127.0.0.1:{own_server.rest_port}/v1/models/linear:predict",
                             data=b'{"instances": [NaN, Infinity, -Infinity]}', timeout=30)
    assert response.status_code == 200
    assert response.text.replace(" ", "") == '{"predictions":[NaN,Infinity,-Infinity]}'


def test_keras_export_predicts_what_the_keras_model_computes(own_server):
    batch = images(3)
    code, body = post(own_server, "image:predict", {"instances": batch.tolist()})
    assert code == 200
    np.testing.assert_allclose(body["predictions"], expected_probabilities(batch), rtol=1e-5, atol=1e-7)


def test_keras_model_export_default_endpoint_serves(own_server):
    batch = images(2)
    code, body = post(own_server, "keras_default:predict", {"inputs": batch.tolist()})
    assert code == 200
    np.testing.assert_allclose(body["outputs"], expected_probabilities(batch), rtol=1e-5, atol=1e-7)


def test_png_bytes_in_as_b64_give_named_top_k_outputs_per_instance(own_server):
    instances = [{"b64": base64.b64encode(png(seed)).decode()} for seed in (1, 7)]
    code, body = post(own_server, "image:predict", {"signature_name": "encoded_image", "instances": instances})
    assert code == 200 and len(body["predictions"]) == 2
    for row in body["predictions"]:
        assert set(row) == {"top_k_labels", "top_k_scores", "top_k_ids"}
        assert row["top_k_labels"] == [LABELS[i] for i in row["top_k_ids"]] and len(row["top_k_ids"]) == TOP_K
        assert row["top_k_scores"] == sorted(row["top_k_scores"], reverse=True)


def test_string_outputs_ending_in_bytes_are_base64_others_are_text(own_server):
    code, body = post(own_server, "image:predict", {"signature_name": "echo",
                                                    "inputs": {"text": ["hi", {"b64": "AP8="}]}})
    assert code == 200
    assert body["outputs"]["text_bytes"] == [{"b64": base64.b64encode(b"hi").decode()}, {"b64": "AP8="}]
    assert body["outputs"]["text"][0] == "hi" and body["outputs"]["length"] == [2, 2]


# --- REST status, metadata and the extensions ---------------------------------------------------------

def test_status_of_a_model_a_version_and_a_label(own_server):
    available = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert get(own_server, "/v1/models/linear") == (200, {"model_version_status": [{"version": "1", **available}]})
    assert get(own_server, "/v1/models/two_versions/versions/1") == \
        (200, {"model_version_status": [{"version": "1", **available}]})
    assert get(own_server, "/v1/models/two_versions/labels/canary") == \
        (200, {"model_version_status": [{"version": "2", **available}]})


def test_metadata_lists_signatures_with_dtypes_and_shapes(own_server):
    code, body = get(own_server, "/v1/models/image/metadata")
    assert code == 200 and body["model_spec"] == {"name": "image", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "encoded_image", "echo"} <= set(signatures)
    image = signatures["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT" and [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]


def test_model_list_extension_answers_every_models_status(own_server):
    code, body = get(own_server, "/v1/models")
    assert code == 200
    states = {m["name"]: {s["state"] for s in m["model_version_status"]} for m in body["models"]}
    assert states == {"linear": {"AVAILABLE"}, "two_versions": {"AVAILABLE"}, "rolling": states["rolling"],
                      "image": {"AVAILABLE"}, "keras_default": {"AVAILABLE"}, "broken": {"END"}}


def test_readiness_is_false_while_a_configured_model_has_no_available_version(own_server):
    # `broken` never loads: TF Serving's status still answers 200; tfzoo's readiness says not ready.
    assert get(own_server, "/readyz") == (503, {"ready": False})
    assert get(own_server, "/healthz") == (200, {"status": "live"})


def test_grpc_health_service_is_on_by_default(own_server):
    with grpc.insecure_channel(f"127.0.0.1:{own_server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = lambda service: health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status
        assert check("linear") == health_pb2.HealthCheckResponse.SERVING
        assert check("broken") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_broken_export_is_reported_and_never_served(own_server):
    code, body = get(own_server, "/v1/models/broken")
    status = body["model_version_status"][0]
    assert code == 200 and (status["version"], status["state"]) == ("1", "END")
    assert status["status"]["error_code"] != "OK" and status["status"]["error_message"]
    assert post(own_server, "broken:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Latest(broken)"})


def test_unknown_version_is_404_and_unknown_label_is_400(own_server):
    assert post(own_server, "linear/versions/7:predict", {"instances": [1.0]}) == \
        (404, {"error": "Servable not found for request: Specific(linear, 7)"})
    assert post(own_server, "linear/labels/nope:predict", {"instances": [1.0]}) == \
        (400, {"error": "Unrecognized servable version label: nope"})
    assert get(own_server, "/v1/models/linear/versions/7")[0] == 404


def test_labels_route_to_their_versions(own_server):
    assert post(own_server, "two_versions/labels/stable:predict", {"instances": [1.0]}) == \
        (200, {"predictions": [2.5]})
    assert post(own_server, "two_versions/labels/canary:predict", {"instances": [1.0]}) == \
        (200, {"predictions": [3.5]})
    assert post(own_server, "two_versions:predict", {"instances": [1.0]}) == (200, {"predictions": [3.5]})


def test_prometheus_metrics_use_tf_servings_names(own_server):
    post(own_server, "linear:predict", {"instances": [1.0]})
    post(own_server, "nope:predict", {"instances": [1.0]})
    text = requests.get(f"http://127.0.0.1:{own_server.rest_port}/monitoring/prometheus/metrics", timeout=30).text
    assert ':tensorflow:serving:request_count{model_name="linear",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} ' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="linear",API="predict",entrypoint="REST"' in text


def test_cors_support_answers_preflights_and_marks_every_answer(own_server):
    url = f"http://127.0.0.1:{own_server.rest_port}/v1/models/linear:predict"
    preflight = requests.options(url, timeout=30)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "POST, GET"
    assert preflight.headers["access-control-allow-headers"] == "Content-Type"
    assert requests.post(url, json={"instances": [1.0]}, timeout=30).headers["access-control-allow-origin"] == "*"


def test_warmup_records_are_replayed_before_the_version_is_available(own_server):
    log = own_server.log_text()
    warmed = log.index("Number of warmup records read: 2")
    assert warmed < log.index("Successfully loaded servable version {name: image version: 1}")


def test_logs_say_what_was_loaded_from_where_and_why_a_load_failed(own_server, own_models):
    log = own_server.log_text()
    assert f"Loading servable version {{name: linear version: 1}} from {own_models / 'linear' / '1'}" in log
    assert "Loading servable: {name: broken version: 1} failed:" in log


# --- gRPC ---------------------------------------------------------------------------------------------

def spec(name="linear", signature="", version=None, label=None) -> model_pb2.ModelSpec:
    model_spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    if version is not None:
        model_spec.version.value = version
    if label:
        model_spec.version_label = label
    return model_spec


def test_grpc_predict_with_output_filter_and_label_names_the_answering_version(stub):
    request = predict_pb2.PredictRequest(model_spec=spec("image", "encoded_image"), output_filter=["top_k_ids"])
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(np.array([png(3)], dtype=object)))
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["top_k_ids"] and tf.make_ndarray(response.outputs["top_k_ids"]).shape == (1, 3)
    request = predict_pb2.PredictRequest(model_spec=spec("two_versions", label="stable"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    response = stub.Predict(request, timeout=30)
    assert response.model_spec.version.value == 1 and tf.make_ndarray(response.outputs["y"]).tolist() == [2.5]


def test_grpc_over_the_unix_socket(own_server):
    with grpc.insecure_channel(f"unix:{own_server.socket_path}") as channel:
        outputs = client.GrpcClient(channel=channel).predict("linear", {"x": np.array([2.0], np.float32)})
    assert outputs["y"].tolist() == [3.0]


def test_grpc_multi_inference_runs_classify_and_regress_on_the_same_examples(stub):
    request_input = input_pb2.Input()
    request_input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    multi = stub.MultiInference(inference_pb2.MultiInferenceRequest(tasks=[
        inference_pb2.InferenceTask(model_spec=spec(signature="classify_x_to_y"),
                                    method_name="tensorflow/serving/classify"),
        inference_pb2.InferenceTask(model_spec=spec(signature="regress_x_to_y"),
                                    method_name="tensorflow/serving/regress"),
    ], input=request_input), timeout=30)
    assert multi.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert multi.results[1].regression_result.regressions[0].value == 3.0
    assert multi.results[0].model_spec.version.value == 1


def test_grpc_metadata_holds_every_signature_def(stub):
    response = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec(), metadata_field=["signature_def"]), timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert response.model_spec.version.value == 1


@pytest.mark.parametrize("request_spec, code, message", [
    (spec("half"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(half)"),
    (spec(version=99), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(linear, 99)"),
    (spec(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT,
     'Serving signature name: "nope" not found in signature def'),
    (spec(label="nope"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope"),
])
def test_grpc_errors_carry_tf_servings_codes_and_messages(stub, request_spec, code, message):
    request = predict_pb2.PredictRequest(model_spec=request_spec)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert (error.value.code(), error.value.details()) == (code, message)


# --- serving.client -----------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_clients_predict_from_inputs_by_name_or_from_instances(protocol, rest, grpc_client):
    c = rest if protocol == "rest" else grpc_client
    by_name = c.predict("linear", {"x": np.array([1.0, 2.0], np.float32)})
    by_rows = c.predict("linear", [1.0, 2.0])
    assert list(by_name) == list(by_rows) == ["y"]
    np.testing.assert_allclose(by_name["y"], [2.5, 3.0])
    np.testing.assert_allclose(by_rows["y"], [2.5, 3.0])
    batch = images(2)
    np.testing.assert_allclose(c.predict("image", {"image": batch})["probabilities"],
                               expected_probabilities(batch), rtol=1e-5, atol=1e-7)
    outputs = c.predict("image", {"image_bytes": np.array([png(1), png(2)], dtype=object)},
                        signature_name="encoded_image")
    assert outputs["top_k_ids"].shape == (2, TOP_K) and outputs["top_k_labels"].shape == (2, TOP_K)
    assert c.predict("two_versions", [1.0], label="stable")["y"].tolist() == [2.5]
    assert c.predict("two_versions", [1.0], version=2)["y"].tolist() == [3.5]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_clients_classify_regress_status_and_metadata_agree(protocol, rest, grpc_client):
    c = rest if protocol == "rest" else grpc_client
    assert c.classify("linear", [{"x": 2.0}], signature_name="classify_x_to_y") == [[["", 3.0]]]
    assert c.regress("linear", [{}], context={"x": 4.0}, signature_name="regress_x_to_y") == [4.0]
    assert c.status("linear")["model_version_status"][0]["state"] == "AVAILABLE"
    assert set(c.metadata("linear")["metadata"]["signature_def"]["signature_def"]) == \
        {"serving_default", "classify_x_to_y", "regress_x_to_y"}


@pytest.mark.parametrize("protocol, code", [("rest", 404), ("grpc", grpc.StatusCode.NOT_FOUND)])
def test_clients_raise_the_servers_error(protocol, code, rest, grpc_client):
    c = rest if protocol == "rest" else grpc_client
    with pytest.raises(client.ServingClientError) as error:
        c.predict("half", {"x": np.array([1.0], np.float32)})
    assert error.value.code == code and error.value.message == "Servable not found for request: Latest(half)"


def test_nan_survives_the_rest_client(rest):
    assert math.isnan(rest.predict("linear", [float("nan")])["y"][0])
