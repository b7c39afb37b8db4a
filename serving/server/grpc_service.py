"""The gRPC front-end: tensorflow.serving.PredictionService and ModelService over ServerCore.

Request and response messages are `tensorflow-serving-api`'s generated protos; errors abort the
call with the ServingError's status code and message, as TF Serving does.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time

import grpc
import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)

from serving.server import processes, tensors
from serving.server.core import ModelSpec, ServerCore, examples_from_input
from serving.server.errors import ServingError, invalid
from serving.server.execution import Mailbox, Reservation
from serving.server.servable import CLASSIFY_METHOD

log = logging.getLogger("tfzoo.serving")


def model_spec(spec: model_pb2.ModelSpec) -> ModelSpec:
    """The internal ModelSpec of a request's model_spec (version or label, signature)."""
    if not spec.name:
        raise invalid("Missing ModelSpec")
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    return ModelSpec(spec.name, version, label or None, spec.signature_name)


def response_spec(name: str, version: int, signature_name: str) -> model_pb2.ModelSpec:
    """The model_spec a response carries: the version that answered."""
    return model_pb2.ModelSpec(name=name, version=wrappers_pb2.Int64Value(value=version),
                               signature_name=signature_name)


def rpc(method):
    """Mark a servicer method as an RPC: `method(self, request) -> response`, raising ServingErrors.

    `handle(self, request)` runs it and returns (response, error), the call counted in the metrics;
    `AioServicer` decides where it runs.
    """
    api = re.sub(r"(?<!^)(?=[A-Z])", "_", method.__name__).lower()  # GetModelMetadata -> get_model_metadata

    def handle(self, request):
        started = time.perf_counter()
        response = error = None
        try:
            response = method(self, request)
        except Exception as e:
            error = serving_error(e, method.__name__)
        self.observe(api, request, response, error, started)
        return response, error

    method.handle = handle
    return method


def serving_error(e: Exception, rpc_name: str) -> ServingError:
    """The status a failed RPC answers: its ServingError, or INTERNAL (logged) for anything unexpected."""
    if isinstance(e, ServingError):
        return e
    log.error("gRPC %s failed", rpc_name, exc_info=e)  # a request must never take the server down
    return ServingError(grpc.StatusCode.INTERNAL, f"Internal error: {e}")


class Servicer:
    """What both services share: the core, and one metrics record per call."""

    def __init__(self, core: ServerCore):
        self.core = core

    def observe(self, api: str, request, response, error: ServingError | None, started: float) -> None:
        """Record the call in the server's metrics (request count and latency per model/version/signature)."""
        spec = getattr(response, "model_spec", None)
        self.core.observe(_model_name(request), api, "GRPC", error, time.perf_counter() - started,
                          spec.version.value if spec is not None and spec.HasField("version") else None,
                          spec.signature_name if spec is not None else None)


def _model_name(request) -> str:
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


class PredictionService(Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference, GetModelMetadata.

    Predict's output tensors are written in their repeated `*_val` fields, or, with `tensor_content`
    (--enable_serialization_as_tensor_content), as raw bytes, as TF Serving writes them.
    """

    def __init__(self, core: ServerCore, tensor_content: bool = False):
        super().__init__(core)
        self.tensor_content = tensor_content

    async def aio_Predict(self, request: predict_pb2.PredictRequest, mailbox: Mailbox):
        """Predict on the event loop: decode and validate, queue the run on the model's queue (or in a
        batch), then await it; returns (response, error).

        The response is encoded, the version released and the call counted by the thread that ran the
        model (`finish`), off the event loop; results reach the loop through a `Mailbox` (one wake-up
        per batch, not one per request). If the call is cancelled (the client went away, or its
        deadline passed) while the run is still queued, the run is dropped.
        """
        started = time.perf_counter()
        reservation = self.core.budget.reservation()
        try:
            spec = model_spec(request.model_spec)
            inputs = predict_inputs(request, self.core.limits.max_request_elements, reservation)
            servable, signature, future, aliases = self.core.start_predict(spec, inputs,
                                                                           list(request.output_filter))
        except Exception as e:
            reservation.release()
            error = serving_error(e, "Predict")
            self.observe("predict", request, None, error, started)
            return None, error
        waiter = mailbox.loop.create_future()

        def finish(done: concurrent.futures.Future) -> None:
            response = error = None
            try:
                if done.cancelled():
                    error = ServingError(grpc.StatusCode.CANCELLED, "The call was cancelled before its model ran")
                else:
                    response = predict_response(spec, servable.version, signature,
                                                dict(zip(aliases, done.result(), strict=True)), self.tensor_content)
            except Exception as e:
                error = serving_error(e, "Predict")
            finally:
                servable.release()  # the version stayed loaded until its run was over
                reservation.release()
            self.observe("predict", request, response, error, started)
            mailbox.put(waiter, (response, error))

        future.add_done_callback(finish)
        try:
            return await waiter
        except asyncio.CancelledError:
            future.cancel()
            raise

    @rpc
    def Classify(self, request) -> classification_pb2.ClassificationResponse:
        spec = model_spec(request.model_spec)
        version, signature_name, results = self.core.classify(spec, examples_from_input(request.input))
        response = classification_pb2.ClassificationResponse(
            model_spec=response_spec(spec.name, version, signature_name))
        fill_classifications(response.result, results)
        return response

    @rpc
    def Regress(self, request) -> regression_pb2.RegressionResponse:
        spec = model_spec(request.model_spec)
        version, signature_name, results = self.core.regress(spec, examples_from_input(request.input))
        response = regression_pb2.RegressionResponse(model_spec=response_spec(spec.name, version, signature_name))
        fill_regressions(response.result, results)
        return response

    @rpc
    def MultiInference(self, request) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise invalid("MultiInferenceRequest must specify at least one task")
        specs = [model_spec(task.model_spec) for task in request.tasks]
        first = specs[0]
        for spec in specs[1:]:
            if (spec.name, spec.version, spec.label) != (first.name, first.version, first.label):
                raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name")
        tasks = [(spec.signature_name, task.method_name) for spec, task in zip(specs, request.tasks, strict=True)]
        version, results = self.core.multi_inference(first.name, first.version, first.label, tasks,
                                                     examples_from_input(request.input))
        response = inference_pb2.MultiInferenceResponse()
        for signature_name, method, result in results:
            out = response.results.add(model_spec=response_spec(first.name, version, signature_name))
            if method == CLASSIFY_METHOD:
                fill_classifications(out.classification_result, result)
            else:
                fill_regressions(out.regression_result, result)
        return response

    @rpc
    def GetModelMetadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        spec = model_spec(request.model_spec)
        version, signatures = self.core.metadata(spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=response_spec(spec.name, version, ""))
        response.metadata["signature_def"].Pack(signatures)
        return response


def predict_inputs(request: predict_pb2.PredictRequest, max_elements: int,
                   reservation: Reservation) -> dict[str, np.ndarray]:
    """The input arrays of a PredictRequest, decoded only once their declared sizes are known to be within
    the per-request element limit and the in-flight budget."""
    declared = {alias: tensors.proto_shape(proto, f"input {alias}") for alias, proto in request.inputs.items()}
    tensors.check_element_count(sum(count for _, count in declared.values()), max_elements)
    reservation.add(sum(count * tensors.np_dtype(request.inputs[alias].dtype).itemsize
                        for alias, (_, count) in declared.items()))
    return {alias: tensors.to_ndarray(proto, f"input {alias}") for alias, proto in request.inputs.items()}


def predict_response(spec: ModelSpec, version: int, signature, outputs: dict,
                     tensor_content: bool = False) -> predict_pb2.PredictResponse:
    """A PredictResponse carrying `outputs` (alias -> array) in the signature's dtypes."""
    response = predict_pb2.PredictResponse(model_spec=response_spec(spec.name, version, signature.name))
    for alias, array in outputs.items():
        response.outputs[alias].CopyFrom(tensors.to_tensor_proto(array, signature.outputs[alias].dtype,
                                                                 as_content=tensor_content))
    return response


def fill_classifications(result: classification_pb2.ClassificationResult, rows) -> None:
    """Classifications per example, each a list of (label, score)."""
    for row in rows:
        result.classifications.add().classes.extend(
            classification_pb2.Class(label=label, score=score) for label, score in row)


def fill_regressions(result: regression_pb2.RegressionResult, values) -> None:
    """One Regression per example."""
    result.regressions.extend(regression_pb2.Regression(value=v) for v in values)


class ModelService(Servicer, model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    @rpc
    def GetModelStatus(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        spec = model_spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.core.status(spec.name, spec.version, spec.label):
            response.model_version_status.add(
                version=s.version, state=s.state,
                status=status_pb2.StatusProto(error_code=s.error_code.value[0], error_message=s.error_message))
        return response

    @rpc
    def HandleReloadConfigRequest(self, request) -> model_management_pb2.ReloadConfigResponse:
        if processes.index()[1] > 1:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               "HandleReloadConfigRequest would change one of the --server_processes only: change "
                               "the --model_config_file instead (every process polls it)")
        log.info("Reloading config through ModelService.HandleReloadConfigRequest")
        self.core.apply_config(request.config)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))


class AioServicer:
    """A Servicer on grpc.aio: the event loop only decodes and answers; model code runs on the queue of the
    model the call names (Classify, Regress and MultiInference whole; Predict's run, see `aio_Predict`),
    and the other RPCs on `pool`. A waiting call is a suspended coroutine, not a parked thread, so no
    number of slow calls can take every thread.
    """

    MODEL_RPCS = frozenset({"Classify", "Regress", "MultiInference"})

    def __init__(self, servicer: Servicer, pool: concurrent.futures.Executor):
        self.servicer, self.pool = servicer, pool
        self.mailbox: Mailbox | None = None  # made by the first call, on the server's event loop

    def __getattr__(self, name: str):
        method = getattr(type(self.servicer), name, None)
        direct = getattr(self.servicer, f"aio_{name}", None)
        if direct is None and not hasattr(method, "handle"):
            raise AttributeError(name)
        core = self.servicer.core

        async def call(request, context):
            if direct is not None:
                if self.mailbox is None:
                    self.mailbox = Mailbox(asyncio.get_running_loop())
                response, error = await direct(request, self.mailbox)
            elif name in self.MODEL_RPCS:
                response, error = await self._on_model_queue(core, method, request)
            else:
                loop = asyncio.get_running_loop()
                response, error = await loop.run_in_executor(self.pool, method.handle, self.servicer, request)
            if error is not None:
                await context.abort(error.code, error.message)
            return response

        return call

    async def _on_model_queue(self, core: ServerCore, method, request):
        reservation = core.budget.reservation()
        try:
            reservation.add(request.ByteSize())
            future = core.submit(_model_name(request), method.handle, self.servicer, request)
        except ServingError as e:
            reservation.release()
            return None, e
        try:
            return await asyncio.wrap_future(future)  # cancelling the call cancels the queued work
        finally:
            reservation.release()
