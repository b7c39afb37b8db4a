"""The REST front-end: TF Serving's HTTP/JSON API as a bare ASGI app (served by uvicorn + httptools).

Routes (TF Serving's, plus tfzoo's additive extensions):
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
  GET  /v1/models/<name>[...]/metadata                         signatures (GetModelMetadata as JSON)
  POST /v1/models/<name>[...]:predict|:classify|:regress       inference
  GET  /v1/models                                              extension: status of every model
  GET  /healthz, /readyz                                       extension: live / every model AVAILABLE
  GET  <prometheus path>                                       with --monitoring_config_file
Every route translates to a ServerCore call; errors come back as {"error": "..."} with TF Serving's
HTTP status for the gRPC code.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import time

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_status_pb2, status_pb2

from serving.server import tensors
from serving.server.core import ModelSpec, ServerCore, examples_from_json
from serving.server.errors import ServingError, invalid, not_found
from serving.server.servable import Signature

log = logging.getLogger("tfzoo.serving")

MAX_BODY_BYTES = 256 * 1024 * 1024
MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[a-zA-Z0-9_]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?$"
)
JSON_HEADERS = [(b"content-type", b"application/json")]
# --rest_api_enable_cors_support: TF Serving's headers on every answer, and 200 to a preflight OPTIONS.
CORS_HEADERS = [(b"access-control-allow-origin", b"*")]
CORS_PREFLIGHT_HEADERS = [*CORS_HEADERS, (b"access-control-allow-methods", b"POST, GET"),
                          (b"access-control-allow-headers", b"Content-Type")]


def version_status_json(states) -> list[dict]:
    """ModelVersionStatus entries as TF Serving's REST API prints them."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in states:
        response.model_version_status.add(
            version=s.version, state=s.state,
            status=status_pb2.StatusProto(error_code=s.error_code.value[0], error_message=s.error_message),
        )
    return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)["model_version_status"]


class RestApi:
    """The ASGI application; blocking work runs on a thread pool of `--rest_api_num_threads`."""

    def __init__(self, core: ServerCore, *, num_threads: int, timeout_ms: int, metrics_path: str | None = None,
                 cors: bool = False):
        self.core = core
        self.cors = cors
        self.headers = JSON_HEADERS + CORS_HEADERS if cors else JSON_HEADERS
        self.pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest")
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.metrics_path = metrics_path if core.metrics is not None else None
        # Predict's Python work (JSON in and out) runs on the event loop's one thread, which avoids GIL
        # contention between request threads; only the Session run (which releases the GIL) leaves it,
        # for the pool or a batch. A request that finds no other in flight runs the Session right here:
        # the hop to a pool thread costs more than a small model's whole run.
        self.inline_when_idle = core.batch_scheduler is None
        self._in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self.cors and method == "OPTIONS":
            return await self._send(send, 200, b"", CORS_PREFLIGHT_HEADERS)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                return await self._send(send, 413, tensors.dumps({"error": "Request body too large"}), self.headers)
        self._in_flight += 1
        try:
            status, payload = await self._route(method, path, body)
        except ServingError as e:
            status, payload = e.http_status, tensors.dumps({"error": e.message})
        except asyncio.TimeoutError:
            status, payload = 504, tensors.dumps({"error": "Request timed out"})
        except Exception as e:  # a request must never take the server down
            log.exception("REST %s %s failed", method, path)
            status, payload = 500, tensors.dumps({"error": f"Internal error: {e}"})
        finally:
            self._in_flight -= 1
        await self._send(send, status, payload, self.headers)

    @staticmethod
    async def _send(send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _call(self, fn, *args):
        if self.inline_when_idle and self._in_flight == 1:
            return fn(*args)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, fn, *args)
        return await (asyncio.wait_for(future, self.timeout) if self.timeout else future)

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        match = MODEL_PATH.match(path)
        if match:
            name, verb = match["name"], match["verb"]
            version = int(match["version"]) if match["version"] is not None else None
            spec = ModelSpec(name, version, match["label"])
            if method == "GET" and match["metadata"]:
                return 200, await self._call(self.metadata, spec)
            if method == "GET" and not verb:
                return 200, await self._call(self.status, spec)
            if method == "POST" and verb == "predict":
                return 200, await self.predict(spec, body)
            if method == "POST" and verb:
                return 200, await self._call(self.infer, verb, spec, body)
        elif method == "GET" and path.rstrip("/") == "/v1/models":
            return 200, await self._call(self.list_models)
        elif method == "GET" and path == "/healthz":
            return 200, tensors.dumps({"status": "live"})
        elif method == "GET" and path == "/readyz":
            ready = self.core.ready()
            return (200 if ready else 503), tensors.dumps({"ready": ready})
        elif method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, self.core.metrics.exposition()
        raise not_found(f"Malformed request: {method} {path}")

    # --- handlers (run on the thread pool) ----------------------------------------------------------

    def status(self, spec: ModelSpec) -> bytes:
        states = self.core.status(spec.name, spec.version, spec.label)
        return tensors.dumps({"model_version_status": version_status_json(states)})

    def list_models(self) -> bytes:
        models = []
        for name in self.core.all_models():
            states = self.core.manager.status(name)
            models.append({"name": name, "model_version_status": version_status_json(states)})
        return tensors.dumps({"models": models})

    def metadata(self, spec: ModelSpec) -> bytes:
        version, signatures = self.core.metadata(spec)
        return tensors.dumps({
            "model_spec": {"name": spec.name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signatures, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        })

    def infer(self, verb: str, spec: ModelSpec, body: bytes) -> bytes:
        """:classify and :regress (on the pool)."""
        started = time.perf_counter()
        error, answered = None, {}
        try:
            spec, request = parse_request(spec, body)
            examples = examples_from_json(request.get("examples"), request.get("context"))
            if verb == "classify":
                answered["version"], answered["signature"], results = self.core.classify(spec, examples)
                return tensors.dumps({"results": [[[label, score] for label, score in row] for row in results]})
            answered["version"], answered["signature"], results = self.core.regress(spec, examples)
            return tensors.dumps({"results": results})
        except ServingError as e:
            error = e
            raise
        finally:
            self.core.observe(spec.name, verb, "REST", error, time.perf_counter() - started,
                              answered.get("version"), answered.get("signature"))

    async def predict(self, spec: ModelSpec, body: bytes) -> bytes:
        """:predict: JSON on the event loop, the Session run inline, on the pool or in a batch."""
        started = time.perf_counter()
        error = servable = None
        try:
            fast = tensors.numeric_predict_body(body)
            if fast is not None:
                key, signature_name, values = fast
                general = functools.partial(parse_request, spec, body)  # for a signature the fast path can't feed
                spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
                build, row = functools.partial(numeric_inputs, values, general), key == "instances"
            else:
                spec, request = parse_request(spec, body)
                build, row = predict_inputs(request)
            inline = self.inline_when_idle and self._in_flight == 1
            servable, signature, future, aliases = self.core.start_predict(spec, build, (),
                                                                           None if inline else self.pool)
            future.add_done_callback(lambda _: servable.release())  # keep the version loaded until it ran
            if not future.done():
                waiting = asyncio.wrap_future(future)
                await (asyncio.wait_for(waiting, self.timeout) if self.timeout else waiting)
            outputs = dict(zip(aliases, future.result(), strict=True))
            payload = rows_output(outputs) if row else columns_output(outputs)
            return tensors.dumps_checked(payload, list(outputs.values()))
        except ServingError as e:
            error = e
            raise
        finally:
            self.core.observe(spec.name, "predict", "REST", error, time.perf_counter() - started,
                              servable.version if servable else None,
                              signature.name if servable else None)


def parse_request(spec: ModelSpec, body: bytes) -> tuple[ModelSpec, dict]:
    """The JSON request object, and the spec with its signature_name."""
    request = tensors.loads(body)
    if not isinstance(request, dict):
        raise invalid("JSON Value: request body must be a JSON object")
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid("'signature_name' must be a string")
    return ModelSpec(spec.name, spec.version, spec.label, signature_name), request


def predict_inputs(request: dict):
    """(function of the Signature building the inputs, whether the request is in row format)."""
    if "instances" in request and "inputs" in request:
        raise invalid("Not allowed to mix 'instances' and 'inputs' keys in the request")
    if "instances" in request:
        return (lambda sig: rows_to_inputs(request["instances"], sig)), True
    if "inputs" in request:
        return (lambda sig: columns_to_inputs(request["inputs"], sig)), False
    raise invalid("Missing 'instances' or 'inputs' key in the request")


def numeric_inputs(values: np.ndarray, general, signature: Signature) -> dict[str, np.ndarray]:
    """The inputs of a body `tensors.numeric_predict_body` parsed: its array for a signature with one
    floating-point input (the same array the general path makes); any other signature gets the general
    path (`general()` parses the body again), which also answers its errors."""
    if len(signature.inputs) == 1:
        alias, info = next(iter(signature.inputs.items()))
        dtype = tensors.np_dtype(info.dtype)
        if dtype.kind == "f":
            return {alias: values.astype(dtype, copy=False)}
    build, _ = predict_inputs(general()[1])
    return build(signature)


def _dtype_of(signature: Signature, alias: str) -> int:
    info = signature.inputs.get(alias)
    if info is None:
        raise invalid(f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set "
                      "{" + ", ".join(sorted(signature.inputs)) + "}.")
    return info.dtype


def rows_to_inputs(instances, signature: Signature) -> dict[str, np.ndarray]:
    """TF Serving's row format: a list of values (one input) or of objects input name -> value."""
    if not isinstance(instances, list):
        raise invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise invalid("'instances' is an empty list")
    first = instances[0]
    if isinstance(first, dict) and not tensors.is_b64(first):
        keys = list(first)
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict) or tensors.is_b64(instance) or list(instance) != keys and \
                    set(instance) != set(keys):
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                              f"{tensors.short(instance)} keys do not match the first element's {keys}")
        return {k: tensors.from_json([inst[k] for inst in instances], _dtype_of(signature, k), f"instances[*].{k}")
                for k in keys}
    if len(signature.inputs) != 1:
        raise invalid(f"The signature has {len(signature.inputs)} inputs "
                      "{" + ", ".join(sorted(signature.inputs)) + "}: each element of 'instances' must be a JSON "
                      "object of input name -> value")
    alias = next(iter(signature.inputs))
    return {alias: tensors.from_json(instances, signature.inputs[alias].dtype, "instances")}


def columns_to_inputs(inputs, signature: Signature) -> dict[str, np.ndarray]:
    """TF Serving's columnar format: one value (one input) or an object input name -> value."""
    if isinstance(inputs, dict) and not tensors.is_b64(inputs):
        return {k: tensors.from_json(v, _dtype_of(signature, k), f"inputs.{k}") for k, v in inputs.items()}
    if len(signature.inputs) != 1:
        raise invalid(f"The signature has {len(signature.inputs)} inputs: 'inputs' must be a JSON object of "
                      "input name -> value")
    alias = next(iter(signature.inputs))
    return {alias: tensors.from_json(inputs, signature.inputs[alias].dtype, "inputs")}


def rows_output(outputs: dict[str, np.ndarray]) -> dict:
    """{"predictions": ...}: one output unnamed, several as per-instance objects."""
    if len(outputs) == 1:
        alias, array = next(iter(outputs.items()))
        return {"predictions": tensors.to_json_value(array, alias)}
    sizes = {alias: (a.shape[0] if a.ndim else None) for alias, a in outputs.items()}
    batch = next(iter(sizes.values()))
    for alias, size in sizes.items():
        if size is None or size != batch:
            raise invalid(f"Tensor name: {alias} has inconsistent batch size: {size} expecting: {batch}")
    converted = {alias: tensors.to_json_value(a, alias) for alias, a in outputs.items()}
    return {"predictions": [{alias: value[i] for alias, value in converted.items()} for i in range(batch)]}


def columns_output(outputs: dict[str, np.ndarray]) -> dict:
    """{"outputs": ...}: one output unnamed, several as an object."""
    converted = {alias: tensors.to_json_value(a, alias) for alias, a in outputs.items()}
    if len(converted) == 1:
        return {"outputs": next(iter(converted.values()))}
    return {"outputs": converted}
