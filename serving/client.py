"""Python clients for a TF Serving-protocol server (tfzoo-model-server or tensorflow_model_server).

    rest = RestClient("127.0.0.1", 8501); rest.predict("cnn", {"image": images})
    grpc = GrpcClient("127.0.0.1", 8500); grpc.predict("cnn", {"image": images})

Both return numpy arrays keyed by output alias; byte strings go as {"b64": ...} over REST and as
DT_STRING tensors over gRPC. Errors raise `ServingClientError` with the server's code and message.
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
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


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


class RestClient:
    """TF Serving's REST API over plain HTTP (standard library only)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8501, timeout: float = 60.0):
        self.base = f"http://{host}:{port}"
        self.timeout = timeout

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

    def predict(self, model: str, inputs: dict[str, np.ndarray], *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None) -> dict[str, np.ndarray]:
        """Columnar predict; returns every output as an array keyed by its alias."""
        body = {"inputs": {k: _to_json(v) for k, v in inputs.items()}}
        if signature_name:
            body["signature_name"] = signature_name
        outputs = self.request("POST", _path(model, version, label) + ":predict", body)["outputs"]
        if not isinstance(outputs, dict):  # a single output comes back without its name
            aliases = self._output_aliases(model, signature_name, version, label)
            outputs = {aliases[0]: outputs}
        return {k: _from_json(v) for k, v in outputs.items()}

    def _output_aliases(self, model, signature_name, version, label) -> list[str]:
        signatures = self.metadata(model, version, label)["metadata"]["signature_def"]["signature_def"]
        return sorted(signatures[signature_name or "serving_default"]["outputs"])

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

    def predict(self, model: str, inputs: dict[str, np.ndarray], *, signature_name: str | None = None,
                version: int | None = None, label: str | None = None,
                output_filter: list[str] = ()) -> dict[str, np.ndarray]:
        """Predict; returns every output as an array keyed by its alias."""
        request = predict_pb2.PredictRequest(model_spec=self._spec(model, signature_name, version, label),
                                             output_filter=list(output_filter))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._call(self.prediction.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def metadata(self, model: str, version: int | None = None) -> dict:
        """GetModelMetadata (signature_def) as a dict."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(model, None, version, None), metadata_field=["signature_def"])
        response = self._call(self.prediction.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return json_format.MessageToDict(signatures, preserving_proto_field_name=True)

    def status(self, model: str, version: int | None = None) -> list[dict]:
        """GetModelStatus as a list of {version, state, status}."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(model, None, version, None))
        response = self._call(self.models.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)["model_version_status"]

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()
