"""Random tensors thrown at every signature of a running server: the answer is a correct one or TF Serving's
kind of client error (HTTP 4xx, gRPC INVALID_ARGUMENT ...), never a 5xx, and the process stays up.

Each test module that serves models calls `assert_random_tensors_never_break(server, models)` for its
server, so every zoo model and every fixture is attacked where it is already served.
"""
from __future__ import annotations

import base64
import json

import grpc
import numpy as np
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED}
DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_UINT8,
          types_pb2.DT_BOOL, types_pb2.DT_STRING, types_pb2.DT_HALF]


def signatures(server, model: str) -> dict[str, dict]:
    """signature name -> {"inputs": {alias: (dtype enum, shape or None)}, "outputs": [aliases]} from metadata."""
    metadata = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/{model}/metadata", timeout=60).json()
    found = {}
    for name, sig in metadata["metadata"]["signature_def"]["signature_def"].items():
        if name.startswith("__") or not sig.get("inputs"):
            continue
        inputs = {}
        for alias, info in sig["inputs"].items():
            shape = info.get("tensor_shape", {})
            dims = None if shape.get("unknown_rank") else [int(d["size"]) for d in shape.get("dim", [])]
            inputs[alias] = (types_pb2.DataType.Value(info["dtype"]), dims)
        found[name] = {"inputs": inputs, "outputs": sorted(sig.get("outputs", {}))}
    return found


@st.composite
def shapes(draw, declared):
    """The declared shape (unknown dims small), one dim off, or a random rank of small dims."""
    kind = draw(st.sampled_from(["declared", "one_off", "random"] if declared is not None else ["random"]))
    if kind == "random":
        return draw(st.lists(st.integers(0, 3), max_size=5))
    shape = [draw(st.integers(1, 2)) if d < 0 else d for d in declared]
    if kind == "one_off" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, shape[i] + 1, max(shape[i] - 1, 0)]))
    return shape


@st.composite
def requests_for(draw, sigs: dict[str, dict]):
    """(signature name, {alias: (dtype enum, shape, values)}) with random dtypes, shapes and values."""
    name = draw(st.sampled_from(sorted(sigs)))
    tensors = {}
    for alias, (dtype, declared) in sigs[name]["inputs"].items():
        if draw(st.integers(0, 9)) == 0:  # now and then an alias the signature lacks, or one left out
            if draw(st.booleans()):
                continue
            alias = "not_an_input"
        dtype = dtype if draw(st.integers(0, 2)) else draw(st.sampled_from(DTYPES))
        shape = draw(shapes(declared))
        # A few values, repeated to fill the shape: TensorFlow's compact form over gRPC (a repeated *_val field
        # shorter than the shape repeats its last value), written out in full over REST.
        if dtype == types_pb2.DT_STRING:
            values = draw(st.lists(st.binary(max_size=6), min_size=1, max_size=4))
        else:  # small numbers mostly, now and then an extreme one
            values = draw(st.lists(st.integers(-3, 10) | st.sampled_from([-2**31, 2**31 - 1, 10**6]),
                                   min_size=1, max_size=4))
        tensors[alias] = (dtype, shape, values)
    return name, tensors


def tensor_proto(dtype: int, shape: list[int], values: list) -> tensor_pb2.TensorProto:
    """The compact form: `values` (at most the shape's size of them; the last one repeats)."""
    values = values[:int(np.prod(shape)) if shape else 1]
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]))
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(values)
    elif dtype in (types_pb2.DT_FLOAT,):
        proto.float_val.extend(float(v) for v in values)
    elif dtype == types_pb2.DT_DOUBLE:
        proto.double_val.extend(float(v) for v in values)
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(int(v) for v in values)
    elif dtype == types_pb2.DT_BOOL:
        proto.bool_val.extend(bool(v) for v in values)
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(int(v) & 0xFFFF for v in values)
    else:
        proto.int_val.extend(int(v) for v in values)
    return proto


def json_value(dtype: int, shape: list[int], values: list):
    """Nested JSON lists of `shape`, `values` repeated to fill it (strings as {"b64"} objects)."""
    if dtype == types_pb2.DT_STRING:
        flat = [{"b64": base64.b64encode(v).decode()} for v in values]
    elif dtype == types_pb2.DT_BOOL:
        flat = [bool(v) for v in values]
    else:
        flat = list(values)
    size = int(np.prod(shape)) if shape else 1
    flat = (flat * size)[:size] if flat else []
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape).tolist() if shape else (flat[0] if flat else 0)


def assert_random_tensors_never_break(server, models: list[str], examples: int = 15) -> None:
    """Send random tensors to every signature of `models` over gRPC and REST (`examples` per model, each
    over both protocols): never a 5xx, the server alive."""
    sigs = {model: signatures(server, model) for model in models}
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                    options=[("grpc.max_receive_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    @settings(max_examples=examples * len(models), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def attack(data):
        model = data.draw(st.sampled_from(sorted(m for m in models if sigs[m])))
        name, tensors = data.draw(requests_for(sigs[model]))
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name=name))
        for alias, (dtype, shape, values) in tensors.items():
            request.inputs[alias].CopyFrom(tensor_proto(dtype, shape, values))
        try:
            response = stub.Predict(request, timeout=120)
            assert set(response.outputs) == set(sigs[model][name]["outputs"]), (model, name)
        except grpc.RpcError as e:
            assert e.code() in CLIENT_ERRORS, (model, name, tensors, e.code(), e.details())
        body = {"signature_name": name,
                "inputs": {alias: json_value(*t) for alias, t in tensors.items()}}
        answer = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/{model}:predict",
                               data=json.dumps(body), timeout=120)
        assert answer.status_code in (200, 400, 404), (model, name, tensors, answer.status_code, answer.text)
        assert "outputs" in answer.json() if answer.status_code == 200 else "error" in answer.json()

    try:
        attack()
    finally:
        channel.close()
    assert server.process.poll() is None, server.log_text()[-3000:]
