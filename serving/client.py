"""Python clients for a TF Serving-protocol server (tfzoo-model-server or tensorflow_model_server).

    rest = RestClient("127.0.0.1", 8501); rest.predict("cnn", {"image": images})
    grpc = GrpcClient("127.0.0.1", 8500); grpc.predict("cnn", {"image": images})

`predict` takes inputs by alias ({"image": array}: TF Serving's columnar form) or a list of instances
(the row form: values, or objects of alias -> value), and returns numpy arrays keyed by output alias
either way. Byte strings go as {"b64": ...} over REST and as DT_STRING tensors over gRPC. `classify`
and `regress` take tf.Example features as dicts. Errors raise `ServingClientError` with the server's
code and message.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

Inputs = dict[str, np.ndarray] | list


class ServingClientError(RuntimeError):
    """The server answered with an error: `code` is the HTTP status or the gRPC status code."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def _path(model: str, version: int | None, label: str | None) -> str:
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label:
        path += f"/labels/{label}"
    return path


def _to_json(array: np.ndarray):
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        encode = np.vectorize(lambda b: {"b64": base64.b64encode(b if isinstance(b, bytes) else str(b).encode())
                                         .decode()}, otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _from_json(value) -> np.ndarray:
    def decode(v):
        if isinstance(v, list):
            return [decode(x) for x in v]
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        return v
    decoded = decode(value)
    return np.array(decoded, dtype=object) if _has_text(decoded) else np.array(decoded)


def _has_text(value) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (str, bytes))


def _rows_to_outputs(predictions: list, alias: str | None) -> dict[str, np.ndarray]:
    """A row-format answer as arrays by alias (`alias` names a single unnamed output)."""
    if alias is None:  # several outputs: one object per instance
        return {k: _from_json([row[k] for row in predictions]) for k in predictions[0]}
    return {alias: _from_json(predictions)}


def _instances_to_columns(instances: list, inputs: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Row-format instances as one array per input, of the signature's dtypes (`inputs`: alias -> dtype)."""
    def column(values: list, alias: str) -> np.ndarray:
        if alias not in inputs:
            raise ValueError(f"{alias!r} is not an input of the signature (inputs: {sorted(inputs)})")
        values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values]
        return np.asarray(values, dtype=inputs[alias])

    if instances and isinstance(instances[0], dict) and "b64" not in instances[0]:
        return {k: column([instance[k] for instance in instances], k) for k in instances[0]}
    if len(inputs) != 1:
        raise ValueError(f"the signature has inputs {sorted(inputs)}: pass instances as objects of name -> value")
    return {alias: column(instances, alias) for alias in inputs}


def signature(metadata: dict, signature_name: str | None = None) -> dict:
    """One signature ({"inputs": ..., "outputs": ..., "method_name": ...}) of a model's metadata (as `metadata`
    returns it, either client), `serving_default` by default."""
    return metadata["metadata"]["signature_def"]["signature_def"][signature_name or "serving_default"]


def example(features: dict) -> example_pb2.Example:
    """A tf.Example from feature name -> value or list of values (ints, floats, str or bytes)."""
    result = example_pb2.Example()
    for name, value in features.items():
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        feature = result.features.feature[name]
        if all(isinstance(v, (bytes, str)) for v in values):
            feature.bytes_list.value.extend(v if isinstance(v, bytes) else v.encode() for v in values)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return result


def examples_input(examples: list[dict], context: dict | None = None) -> input_pb2.Input:
    """The Input proto of Classify/Regress: a list of examples, with an optional shared context."""
    request_input = input_pb2.Input()
    if context is None:
        request_input.example_list.examples.extend(example(e) for e in examples)
    else:
        with_context = request_input.example_list_with_context
        with_context.examples.extend(example(e) for e in examples)
        with_context.context.CopyFrom(example(context))
    return request_input


class RestClient:
    """TF Serving's REST API over plain HTTP (standard library only)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8501, timeout: float = 60.0):
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self._aliases: dict[tuple, list[str]] = {}  # output aliases of signatures, for unnamed single outputs

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """Send one request; return the decoded JSON body or raise ServingClientError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                message = json.loads(payload).get("error", payload.decode())
            except ValueError:
                message = payload.decode(errors="replace")
            raise ServingClientError(e.code, message) from None

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """GET /v1/models/<model>."""
        return self.request("GET", _path(model, version, label))

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """GET /v1/models/<model>/metadata."""
        return self.request("GET", _path(model, version, label) + "/metadata")

    def predict(self, model: str, inputs: Inputs, *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None) -> dict[str, np.ndarray]:
        """Predict (columnar for a dict of inputs, row format for a list); return outputs by alias."""
        row = isinstance(inputs, list)
        body = ({"instances": _to_json(np.asarray(inputs)) if inputs and not isinstance(inputs[0], dict)
                 else [{k: _to_json(v) for k, v in i.items()} for i in inputs]} if row
                else {"inputs": {k: _to_json(v) for k, v in inputs.items()}})
        if signature_name:
            body["signature_name"] = signature_name
        answer = self.request("POST", _path(model, version, label) + ":predict", body)
        outputs = answer["predictions" if row else "outputs"]
        single = None
        if not (isinstance(outputs, dict) or row and outputs and isinstance(outputs[0], dict)):
            single = self._output_aliases(model, signature_name, version, label)[0]  # returned without its name
        if row:
            return _rows_to_outputs(outputs, single)
        return {single: _from_json(outputs)} if single else {k: _from_json(v) for k, v in outputs.items()}

    def _output_aliases(self, model, signature_name, version, label) -> list[str]:
        key = (model, signature_name, version, label)
        if key not in self._aliases:
            self._aliases[key] = sorted(signature(self.metadata(model, version, label), signature_name)["outputs"])
        return self._aliases[key]

    def classify(self, model: str, examples: list[dict], *, signature_name: str | None = None,
                 context: dict | None = None, version: int | None = None) -> list:
        """POST :classify; returns [[[label, score], ...], ...]."""
        body = {"examples": examples, **({"context": context} if context else {}),
                **({"signature_name": signature_name} if signature_name else {})}
        return self.request("POST", _path(model, version, None) + ":classify", body)["results"]

    def regress(self, model: str, examples: list[dict], *, signature_name: str | None = None,
                context: dict | None = None, version: int | None = None) -> list:
        """POST :regress; returns [value, ...]."""
        body = {"examples": examples, **({"context": context} if context else {}),
                **({"signature_name": signature_name} if signature_name else {})}
        return self.request("POST", _path(model, version, None) + ":regress", body)["results"]


class GrpcClient:
    """TF Serving's gRPC API through `tensorflow-serving-api`'s stubs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8500, timeout: float = 60.0,
                 channel: grpc.Channel | None = None):
        self.channel = channel or grpc.insecure_channel(
            f"{host}:{port}", options=[("grpc.max_receive_message_length", -1),
                                      ("grpc.max_send_message_length", -1)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout = timeout
        self._inputs: dict[tuple, dict[str, np.dtype]] = {}  # signature inputs, for row-format instances

    @staticmethod
    def _spec(model: str, signature_name: str | None, version: int | None, label: str | None):
        spec = model_pb2.ModelSpec(name=model, signature_name=signature_name or "")
        if version is not None:
            spec.version.value = version
        elif label:
            spec.version_label = label
        return spec

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingClientError(e.code(), e.details()) from None

    def predict(self, model: str, inputs: Inputs, *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None,
                output_filter: list[str] = ()) -> dict[str, np.ndarray]:
        """Predict (a list is read as row-format instances); returns every output as an array by alias."""
        if isinstance(inputs, list):
            inputs = _instances_to_columns(inputs, self._input_dtypes(model, signature_name, version, label))
        request = predict_pb2.PredictRequest(model_spec=self._spec(model, signature_name, version, label),
                                             output_filter=list(output_filter))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._call(self.prediction.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def _input_dtypes(self, model: str, signature_name: str | None, version: int | None,
                      label: str | None) -> dict[str, np.dtype]:
        key = (model, signature_name, version, label)
        if key not in self._inputs:
            inputs = signature(self.metadata(model, version, label), signature_name)["inputs"]
            self._inputs[key] = {alias: np.dtype(object) if info["dtype"] == "DT_STRING"
                                 else tf.dtypes.as_dtype(types_pb2.DataType.Value(info["dtype"])).as_numpy_dtype
                                 for alias, info in inputs.items()}
        return self._inputs[key]

    def classify(self, model: str, examples: list[dict], *, signature_name: str | None = None,
                 context: dict | None = None, version: int | None = None) -> list:
        """Classify; returns [[[label, score], ...], ...] as the REST client does."""
        request = classification_pb2.ClassificationRequest(
            model_spec=self._spec(model, signature_name, version, None), input=examples_input(examples, context))
        result = self._call(self.prediction.Classify, request).result
        return [[[c.label, c.score] for c in row.classes] for row in result.classifications]

    def regress(self, model: str, examples: list[dict], *, signature_name: str | None = None,
                context: dict | None = None, version: int | None = None) -> list:
        """Regress; returns [value, ...]."""
        request = regression_pb2.RegressionRequest(
            model_spec=self._spec(model, signature_name, version, None), input=examples_input(examples, context))
        return [r.value for r in self._call(self.prediction.Regress, request).result.regressions]

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """GetModelMetadata as the REST API's JSON: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(model, None, version, label), metadata_field=["signature_def"])
        response = self._call(self.prediction.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {"model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
                "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)}}

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """GetModelStatus as the REST API's JSON: {"model_version_status": [{version, state, status}, ...]}."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(model, None, version, label))
        response = self._call(self.models.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()
