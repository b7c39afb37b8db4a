"""Bad input never crashes the server: every malformed request gets TF Serving's 400 / INVALID_ARGUMENT.

Runs on the session's `own_server`; the last tests check it still answers correctly afterwards.
"""
from __future__ import annotations

import base64
import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import post
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from serving import client
from tests.random_tensors import assert_random_tensors_never_break

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("body, message", [
    ("{not json", "JSON Parse error"),
    ([1, 2], "must be a JSON object"),
    ({}, "Missing 'instances' or 'inputs' key in the request"),
    ({"instances": [1.0], "inputs": [1.0]}, "Not allowed to mix 'instances' and 'inputs' keys in the request"),
    ({"instances": [[1.0], [2.0, 3.0]]}, "ragged"),
    ({"instances": []}, "'instances' is an empty list"),
    ({"instances": ["a"]}, "is not of expected type: float"),
    ({"instances": [True]}, "is not of expected type: float"),
    ({"instances": [{"nope": 1.0}]}, "input tensor alias not found in signature: nope"),
    ({"inputs": {"x": [1.0], "nope": [1.0]}}, "input tensor alias not found in signature: nope"),
    ({"signature_name": "nope", "instances": [1.0]}, 'Serving signature name: "nope" not found in signature def'),
    ({"signature_name": 7, "instances": [1.0]}, "'signature_name' must be a string"),
    ({"instances": [{"b64": "AAAA"}]}, "is not of expected type: float"),
])
def test_malformed_predict_bodies_get_400_and_a_clear_error(own_server, body, message):
    code, answer = post(own_server, "linear:predict", body)
    assert code == 400 and message in answer["error"]


@pytest.mark.parametrize("instance, message", [
    ({"b64": "!!!not base64"}, "Unable to base64 decode"),
    ({"b64": "-_-_"}, "Unable to base64 decode"),  # web-safe base64 is not accepted, as in TF Serving
    ({"b64": 7}, "'b64' value must be a string"),
    (1.5, "is not of expected type: string"),
])
def test_bad_binary_values_for_a_string_input_get_400(own_server, instance, message):
    code, answer = post(own_server, "image:predict", {"signature_name": "encoded_image", "instances": [instance]})
    assert code == 400 and message in answer["error"]


@pytest.mark.parametrize("body, message", [
    ({"examples": []}, "'examples' must be a non-empty JSON array"),
    ({"examples": [[1.0]]}, "an example must be a JSON object"),
    ({"examples": [{"x": True}]}, "JSON booleans are not a tf.Example type"),
    ({"examples": [{"x": 2.0}]}, "Expected classification signature outputs to contain at least one of"),
])
def test_malformed_classify_bodies_get_400(own_server, body, message):
    code, answer = post(own_server, "linear:classify", body)
    assert code == 400 and message in answer["error"]


def test_a_wrong_image_shape_is_rejected_before_the_model_runs(own_server):
    code, answer = post(own_server, "image:predict", {"instances": np.zeros((1, 27, 28, 1)).tolist()})
    assert code == 400 and "expected shape [?,28,28,1] but got [1,27,28,1]" in answer["error"]


def test_undecodable_image_bytes_are_a_tf_op_error_answered_as_400(own_server):
    junk = base64.b64encode(b"not a png").decode()
    code, answer = post(own_server, "image:predict", {"signature_name": "encoded_image", "instances": [{"b64": junk}]})
    assert code == 400 and answer["error"]


def test_undecodable_image_bytes_are_invalid_argument_over_grpc(own_server):
    with pytest.raises(client.ServingClientError) as error:
        client.GrpcClient("127.0.0.1", own_server.grpc_port).predict(
            "image", {"image_bytes": np.array([b"junk"], dtype=object)}, signature_name="encoded_image")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def shape(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def grpc_predict(own_server, tensor: tensor_pb2.TensorProto, alias: str = "x"):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="linear"))
    request.inputs[alias].CopyFrom(tensor)
    return client.GrpcClient("127.0.0.1", own_server.grpc_port).prediction.Predict(request, timeout=30)


@pytest.mark.parametrize("tensor, alias", [
    (tf.make_tensor_proto(np.array([1.0], np.float64)), "x"),  # double fed to a float input
    (tf.make_tensor_proto(np.array([1.0], np.float32)), "nope"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0\0",
                            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)])), "x"),
])
def test_bad_grpc_tensors_are_invalid_argument(own_server, tensor, alias):
    with pytest.raises(grpc.RpcError) as error:
        grpc_predict(own_server, tensor, alias)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error.value.details()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.fixed_dictionaries({"b64": st.text(max_size=12)}),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["instances", "inputs", "signature_name", "examples", "context", "x", "image",
                        "image_bytes", "text"])
bodies = (st.dictionaries(keys, json_values, max_size=4).map(json.dumps) | json_values.map(json.dumps)
          | st.binary(max_size=64))
targets = st.sampled_from(["linear:predict", "linear:classify", "linear:regress", "image:predict",
                           "linear/versions/1:predict", "linear/labels/x:predict", "nope:predict"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=targets, body=bodies)
def test_generated_rest_bodies_never_get_a_5xx(own_server, target, body):
    response = requests.post(f"http://127.0.0.1:{own_server.rest_port}/v1/models/{target}", data=body, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.status_code == 200 or "error" in response.json()


def test_the_server_still_answers_correctly_after_all_the_bad_input(own_server):
    assert post(own_server, "linear:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
    assert own_server.process.poll() is None


def test_a_26_byte_request_of_the_wrong_rank_is_a_400_not_a_dead_server(own_server):
    code, answer = post(own_server, "image:predict", b'{"instances": [1.0, 2.0]}')
    assert code == 400
    assert answer["error"] == "input image: expected shape [?,28,28,1] (rank 4) but got [2] (rank 1)"
    with pytest.raises(grpc.RpcError) as error:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="image"))
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
        client.GrpcClient("127.0.0.1", own_server.grpc_port).prediction.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "(rank 4)" in error.value.details()
    assert own_server.process.poll() is None


def test_json_nested_2000_deep_is_a_400(own_server):
    code, answer = post(own_server, "image:predict", '{"instances": ' + "[" * 2000 + "1.0" + "]" * 2000 + "}")
    assert code == 400 and "JSON" in answer["error"]


def test_a_compact_tensor_proto_repeats_its_last_value_as_tensorflow_does(own_server):
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 3.0], tensor_shape=shape(4))
    assert tf.make_ndarray(grpc_predict(own_server, tensor).outputs["y"]).tolist() == [2.5, 3.5, 3.5, 3.5]


@pytest.mark.parametrize("tensor, message", [
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0], tensor_shape=shape(2)),
     "3 values in float_val for shape [2] of 2 elements"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[1.0], tensor_shape=shape(1)),
     "input x: expects float but double is provided"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=shape(-1)),
     "a tensor's shape must be fully defined"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=shape(1)), "unsupported tensor dtype DT_VARIANT"),
])
def test_malformed_tensor_protos_are_invalid_argument_with_what_is_wrong(own_server, tensor, message):
    with pytest.raises(grpc.RpcError) as error:
        grpc_predict(own_server, tensor)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


def test_random_tensors_to_every_signature_never_break_the_server(own_server):
    assert_random_tensors_never_break(own_server, ["linear", "two_versions", "image", "keras_default"], examples=60)
