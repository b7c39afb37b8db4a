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

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_status_pb2, status_pb2

from serving.server import tensors
from serving.server.core import ModelSpec, ServerCore, examples_from_json
from serving.server.errors import ServingError, invalid, not_found
from serving.server.execution import Mailbox, Reservation
from serving.server.servable import Signature

log = logging.getLogger("tfzoo.serving")

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


class ClientGone(Exception):
    """The client closed its connection before its answer was ready: there is nobody to answer."""


# What parsing a JSON body may hold per value it can contain, against the in-flight budget: ~8 bytes
# per number on the simdjson path (one float64 array); ~40 on the general path (Python objects).
FAST_PARSE_BYTES_PER_VALUE = 8
GENERAL_PARSE_BYTES_PER_VALUE = 40
WATCH_AFTER = 0.05  # seconds an answer may take before its connection is watched for a disconnect


class RestApi:
    """The ASGI application. The event loop reads, parses and answers; model code runs on the queue of
    the model a request names; metadata is built on a small pool of `--rest_api_num_threads`."""

    def __init__(self, core: ServerCore, *, num_threads: int, timeout_ms: int, metrics_path: str | None = None,
                 cors: bool = False):
        self.core = core
        self.cors = cors
        self.headers = JSON_HEADERS + CORS_HEADERS if cors else JSON_HEADERS
        self.pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest")
        self.timeout_ms = timeout_ms
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.metrics_path = metrics_path if core.metrics is not None else None
        self.mailbox: Mailbox | None = None  # made by the first request, on the server's event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self.cors and method == "OPTIONS":
            return await self._send(send, 200, b"", CORS_PREFLIGHT_HEADERS)
        reservation = self.core.budget.reservation()
        try:
            body = await self._read_body(scope, receive, reservation)
            status, payload = await self._route(method, path, body, receive, reservation)
        except ServingError as e:
            status, payload = e.http_status, tensors.dumps({"error": e.message})
        except ClientGone:
            return
        except Exception as e:  # a request must never take the server down
            log.exception("REST %s %s failed", method, path)
            status, payload = 500, tensors.dumps({"error": f"Internal error: {e}"})
        finally:
            reservation.release()
        await self._send(send, status, payload, self.headers)

    @staticmethod
    async def _send(send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope, receive, reservation: Reservation) -> bytes:
        """The request body, gathered in linear time and charged to the in-flight budget as it arrives:
        413 above --max_request_bytes (before reading, when Content-Length says so), 504 when the client
        has not sent it within --rest_api_timeout_in_ms."""
        limit = self.core.limits.max_request_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise body_too_large(int(value), limit)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > limit:
                            raise body_too_large(size, limit)
                        reservation.add(len(chunk))
                        chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"The request body was not received within {self.timeout_ms} ms "
                               "(--rest_api_timeout_in_ms)") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(self, future: concurrent.futures.Future, waiter: asyncio.Future, receive) -> bytes:
        """Wait for a model's answer (a payload, or a ServingError) while watching the connection: a client
        that disconnects, or a request past --rest_api_timeout_in_ms (504), cancels the model's queued work.

        The watching costs nothing for a quick answer: it starts only if the answer takes over WATCH_AFTER
        seconds (then a task awaits the connection's next ASGI message, which after the body can only be
        the disconnect).
        """
        loop = waiter.get_loop()
        watcher: list[asyncio.Task] = []

        def give_up(error: Exception) -> None:
            if not waiter.done():
                future.cancel()
                waiter.set_exception(error)

        def watch() -> None:
            task = loop.create_task(receive())
            task.add_done_callback(lambda t: t.cancelled() or give_up(ClientGone()))
            watcher.append(task)

        timers = [loop.call_later(WATCH_AFTER, watch)]
        if self.timeout:
            timers.append(loop.call_later(self.timeout, give_up, ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Request timed out after {self.timeout_ms} ms (--rest_api_timeout_in_ms)")))
        try:
            payload, error = await waiter
        finally:
            for handle in timers + watcher:
                handle.cancel()
        if error is not None:
            raise error
        return payload

    def _waiter(self) -> asyncio.Future:
        if self.mailbox is None:
            self.mailbox = Mailbox(asyncio.get_running_loop())
        return self.mailbox.loop.create_future()

    async def _route(self, method: str, path: str, body: bytes, receive, reservation: Reservation
                     ) -> tuple[int, bytes]:
        match = MODEL_PATH.match(path)
        if match:
            name, verb = match["name"], match["verb"]
            version = int(match["version"]) if match["version"] is not None else None
            spec = ModelSpec(name, version, match["label"])
            if method == "GET" and match["metadata"]:
                return 200, await asyncio.get_running_loop().run_in_executor(self.pool, self.metadata, spec)
            if method == "GET" and not verb:
                return 200, self.status(spec)
            if method == "POST" and verb == "predict":
                return 200, await self.predict(spec, body, receive, reservation)
            if method == "POST" and verb:
                return 200, await self.infer(verb, spec, body, receive, reservation)
        elif method == "GET" and path.rstrip("/") == "/v1/models":
            return 200, self.list_models()
        elif method == "GET" and path == "/healthz":
            return 200, tensors.dumps({"status": "live"})
        elif method == "GET" and path == "/readyz":
            ready = self.core.ready()
            return (200 if ready else 503), tensors.dumps({"ready": ready})
        elif method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, self.core.metrics.exposition()
        raise not_found(f"Malformed request: {method} {path}")

    # --- handlers ------------------------------------------------------------------------------------

    def status(self, spec: ModelSpec) -> bytes:
        """GET /v1/models/<name>: version states (on the event loop: it reads the manager only)."""
        states = self.core.status(spec.name, spec.version, spec.label)
        return tensors.dumps({"model_version_status": version_status_json(states)})

    def list_models(self) -> bytes:
        """GET /v1/models: every model's version states."""
        models = []
        for name in self.core.all_models():
            states = self.core.manager.status(name)
            models.append({"name": name, "model_version_status": version_status_json(states)})
        return tensors.dumps({"models": models})

    def metadata(self, spec: ModelSpec) -> bytes:
        """GET .../metadata (on the pool: a large SignatureDefMap takes a while to write as JSON)."""
        version, signatures = self.core.metadata(spec)
        return tensors.dumps({
            "model_spec": {"name": spec.name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signatures, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        })

    async def infer(self, verb: str, spec: ModelSpec, body: bytes, receive, reservation: Reservation) -> bytes:
        """:classify and :regress, parsed and run on the model's queue."""
        self._charge_parse(body, GENERAL_PARSE_BYTES_PER_VALUE, reservation)
        waiter = self._waiter()
        future = self.core.submit(spec.name, self._infer, verb, spec, body)
        future.add_done_callback(lambda done: self.mailbox.put(waiter, _outcome(done)))
        return await self._answer(future, waiter, receive)

    def _infer(self, verb: str, spec: ModelSpec, body: bytes) -> bytes:
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

    def _charge_parse(self, body: bytes, bytes_per_value: int, reservation: Reservation) -> int:
        """Refuse a body of more values than --max_request_elements, and charge what parsing it may hold."""
        values = tensors.count_elements_bound(body)
        tensors.check_element_count(values, self.core.limits.max_request_elements)
        reservation.add(values * bytes_per_value)
        return values

    async def predict(self, spec: ModelSpec, body: bytes, receive, reservation: Reservation) -> bytes:
        """:predict: JSON parsed on the event loop, the model run on its queue (or in a batch), the answer
        written as JSON by the thread that ran it."""
        started = time.perf_counter()
        try:
            values_bound = self._charge_parse(body, FAST_PARSE_BYTES_PER_VALUE, reservation)
            fast = tensors.numeric_predict_body(body)
            if fast is not None:
                key, signature_name, values = fast
                general = functools.partial(parse_request, spec, body)  # for a signature the fast path can't feed
                spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
                build, row = functools.partial(numeric_inputs, values, general), key == "instances"
            else:
                reservation.add(values_bound * (GENERAL_PARSE_BYTES_PER_VALUE - FAST_PARSE_BYTES_PER_VALUE))
                spec, request = parse_request(spec, body)
                build, row = predict_inputs(request)
            servable, signature, future, aliases = self.core.start_predict(spec, build)
        except ServingError as e:
            self.core.observe(spec.name, "predict", "REST", e, time.perf_counter() - started)
            raise
        waiter = self._waiter()

        def finish(done: concurrent.futures.Future) -> None:  # on the thread that ran the model
            payload = error = None
            try:
                if done.cancelled():
                    error = ServingError(grpc.StatusCode.CANCELLED, "The request was cancelled before its model ran")
                else:
                    outputs = dict(zip(aliases, done.result(), strict=True))
                    payload = tensors.dumps_checked(rows_output(outputs) if row else columns_output(outputs),
                                                    list(outputs.values()))
            except ServingError as e:
                error = e
            except Exception as e:
                log.exception("REST predict on %s failed", spec.name)
                error = ServingError(grpc.StatusCode.INTERNAL, f"Internal error: {e}")
            finally:
                servable.release()  # the version stayed loaded until its run was over
            self.core.observe(spec.name, "predict", "REST", error, time.perf_counter() - started,
                              servable.version, signature.name)
            self.mailbox.put(waiter, (payload, error))

        future.add_done_callback(finish)
        return await self._answer(future, waiter, receive)


def _outcome(done: concurrent.futures.Future) -> tuple[bytes | None, ServingError | None]:
    """(payload, error) of a finished handler future."""
    if done.cancelled():
        return None, ServingError(grpc.StatusCode.CANCELLED, "The request was cancelled before its model ran")
    error = done.exception()
    if error is None:
        return done.result(), None
    if isinstance(error, ServingError):
        return None, error
    log.error("REST request failed", exc_info=error)
    return None, ServingError(grpc.StatusCode.INTERNAL, f"Internal error: {error}")


def body_too_large(size: int, limit: int) -> ServingError:
    """413: a body over --max_request_bytes."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Request body too large: {size} bytes, over this server's limit of {limit} "
                        "(--max_request_bytes)", http_status=413)


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
