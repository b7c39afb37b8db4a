"""A servable: one loaded SavedModel version and its SignatureDefs, run through a TF Session (or, under
`--prefer_tflite_model`, the version's `model.tflite` through LiteRT: `serving.server.tflite`).

Every SavedModel is loaded the way TF Serving loads it — a Session over the MetaGraph that matches
`--saved_model_tags`, with signatures run by their tensor names — so TF1 exports (e.g. the
`saved_model_half_plus_three` fixture, which `tf.saved_model.load` refuses), TF2 and Keras 3
exports all serve the same way. Each (feeds, fetches) pair gets a cached Session callable, which
skips Python-side feed checks (as the C++ server does) and costs ~0.1 ms per call.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from serving.server.errors import ServingError, from_tf_error, invalid
from serving.server.tensors import dtype_name, np_dtype

log = logging.getLogger("tfzoo.serving")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_PATH = ("assets.extra", "tf_serving_warmup_requests")


@dataclasses.dataclass(frozen=True)
class Signature:
    """A SignatureDef: method name and input/output aliases with their tensor names and dtypes."""

    name: str
    method_name: str
    inputs: dict[str, meta_graph_pb2.TensorInfo]
    outputs: dict[str, meta_graph_pb2.TensorInfo]


def declared_shape(info: meta_graph_pb2.TensorInfo) -> tuple[int, ...] | None:
    """The signature's shape for an input (-1 for unknown dimensions; () for a scalar), or None if its rank
    is unknown."""
    if not info.HasField("tensor_shape") or info.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in info.tensor_shape.dim)


def _shape_text(shape) -> str:
    return "[" + ",".join("?" if d < 0 else str(d) for d in shape) + "]"


def check_input(alias: str, array: np.ndarray, info: meta_graph_pb2.TensorInfo,
                declared: tuple[int, ...] | None) -> None:
    """Reject an input whose dtype, rank or a known dimension differs from the signature's TensorSpec.

    Nothing of a request reaches TensorFlow unchecked: in the pip TensorFlow some oneDNN kernels abort
    the whole process on a malformed input (a wrong-rank image into a convolution) where a graph
    kernel would answer INVALID_ARGUMENT. One rank difference is let through, because TF Serving's own
    reference answer needs it and it cannot reach such a kernel: a vector of N values fed to a
    signature of shape [?,1] (or [?,1,1,...]), as half_plus_two's `{"instances": [2.0, 3.0, 4.0]}`.
    """
    expected = np_dtype(info.dtype)
    if array.dtype != expected:
        raise invalid(f"input {alias}: expects {dtype_name(info.dtype)} but "
                      f"{dtype_name(_dtype_enum(array.dtype))} is provided")
    if declared is None:
        return
    shape = array.shape
    if len(shape) != len(declared):
        if len(shape) == 1 and len(declared) > 1 and declared[0] < 0 and all(d == 1 for d in declared[1:]):
            return
        raise invalid(f"input {alias}: expected shape {_shape_text(declared)} (rank {len(declared)}) but got "
                      f"{_shape_text(shape)} (rank {len(shape)})")
    if any(d >= 0 and d != s for d, s in zip(declared, shape, strict=True)):
        raise invalid(f"input {alias}: expected shape {_shape_text(declared)} but got {_shape_text(shape)}")


def _dtype_enum(dtype: np.dtype) -> int:
    if dtype.kind in "OSU":
        return types_pb2.DT_STRING
    return tf.dtypes.as_dtype(dtype).as_datatype_enum


def _set_repr(names) -> str:
    return "{" + ", ".join(sorted(names)) + "}"


class Servable:
    """One loaded version of a model; thread-safe `run`, reference-counted by the manager's handles."""

    def __init__(self, name: str, version: int, path: str, *, tags: list[str],
                 session_config: config_pb2.ConfigProto | None = None, batch_scheduler=None,
                 batching=None, on_runtime: Callable[[str, float], None] | None = None):
        self.name, self.version, self.path = name, version, str(path)
        # `batching`: this version's BatchingOptions (None: the scheduler's); no scheduler: no batching.
        self.batch_scheduler, self.batching, self.on_runtime = batch_scheduler, batching, on_runtime
        self.meta_graph = self._open(tags, session_config)
        self.signatures = {
            key: Signature(key, sig.method_name, dict(sig.inputs), dict(sig.outputs))
            for key, sig in self.meta_graph.signature_def.items()
        }
        self._callables: dict[tuple, object] = {}
        self._plans: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0

    def _open(self, tags: list[str], session_config: config_pb2.ConfigProto | None) -> meta_graph_pb2.MetaGraphDef:
        """Load the version; its MetaGraphDef (the signatures are read from it)."""
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        try:
            with self.graph.as_default():
                return tf.compat.v1.saved_model.loader.load(self.session, tags, self.path)
        except Exception:
            self.session.close()
            raise

    def _close(self) -> None:
        """Free what `_open` loaded."""
        self.session.close()
        self.graph = self.session = None

    @property
    def warmup_file(self) -> Path:
        """Where TF Serving looks for this version's warmup requests."""
        return Path(self.path, *WARMUP_PATH)

    def signature(self, name: str) -> Signature:
        """The signature `name` ('' means serving_default), or TF Serving's INVALID_ARGUMENT."""
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise invalid(f'Serving signature name: "{key}" not found in signature def') from None

    def run(self, signature: Signature, inputs: dict[str, np.ndarray],
            output_filter: list[str] | tuple = ()) -> dict[str, np.ndarray]:
        """Run `signature` on `inputs` (alias -> array); return the (filtered) outputs by alias."""
        future, aliases_out = self.start(signature, inputs, output_filter)
        return dict(zip(aliases_out, future.result(), strict=True))

    def start(self, signature: Signature, inputs: dict[str, np.ndarray], output_filter: list[str] | tuple = (),
              executor: concurrent.futures.Executor | None = None) -> tuple[concurrent.futures.Future, tuple]:
        """Validate and start a run: in a batch (when batching), on `executor` (the model's queue), or right
        here (None).

        Returns a future of the output arrays and their aliases; errors are ServingErrors, raised here
        for bad requests and set on the future for failures of the run.
        """
        plan = self._plans.get((signature.name, tuple(inputs), tuple(output_filter)))
        if plan is None:
            plan = self._plan(signature, inputs, output_filter)
        aliases_in, aliases_out, shapes, fn = plan
        feeds = [inputs[a] for a in aliases_in]
        for alias, array, declared in zip(aliases_in, feeds, shapes, strict=True):
            check_input(alias, array, signature.inputs[alias], declared)

        def call(arrays: list[np.ndarray]) -> list[np.ndarray]:  # one Session run (one batch, if batching)
            started = time.perf_counter()
            try:
                values = fn(*arrays)
            except tf.errors.OpError as e:
                raise from_tf_error(e) from None
            except (TypeError, ValueError) as e:
                raise invalid(str(e)) from None
            if self.on_runtime is not None:
                self.on_runtime(self.name, time.perf_counter() - started)
            return values

        if self.batch_scheduler is not None and feeds and all(np.ndim(f) for f in feeds):
            key = (self.name, self.version, signature.name, aliases_in, aliases_out)
            return self.batch_scheduler.batcher(key, call, self.batching).submit(feeds), aliases_out
        if executor is not None:
            return executor.submit(call, feeds), aliases_out
        future = concurrent.futures.Future()
        try:
            future.set_result(call(feeds))
        except ServingError as e:
            future.set_exception(e)
        return future, aliases_out

    def _plan(self, signature: Signature, inputs: dict, output_filter) -> tuple:
        """Validate a request's aliases once per (signature, inputs, output_filter) and cache how to run it."""
        extra = set(inputs) - set(signature.inputs)
        if extra:
            alias = sorted(extra)[0]
            raise invalid(f"input tensor alias not found in signature: {alias}. "
                          f"Inputs expected to be in the set {_set_repr(signature.inputs)}.")
        missing = set(signature.inputs) - set(inputs)
        if missing:
            raise invalid(f"input size does not match signature: {len(inputs)}!={len(signature.inputs)} "
                          f"len({_set_repr(inputs)}) != len({_set_repr(signature.inputs)}). "
                          f"Sent extra: {{}}. Missing but required: {_set_repr(missing)}.")
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} "
                              f"Outputs expected to be in the set {_set_repr(signature.outputs)}.")
        aliases_in = tuple(sorted(inputs))
        aliases_out = tuple(sorted(set(output_filter))) if output_filter else tuple(sorted(signature.outputs))
        shapes = tuple(declared_shape(signature.inputs[a]) for a in aliases_in)
        with self._lock:
            plan = (aliases_in, aliases_out, shapes, self._callable(signature, aliases_in, aliases_out))
            self._plans[(signature.name, tuple(inputs), tuple(output_filter))] = plan
        return plan

    def _callable(self, signature: Signature, aliases_in: tuple, aliases_out: tuple):
        """fn(*arrays in `aliases_in` order) -> [arrays in `aliases_out` order]: one run of `signature`."""
        key = (signature.name, aliases_in, aliases_out)
        fn = self._callables.get(key)
        if fn is None:
            options = config_pb2.CallableOptions(
                feed=[signature.inputs[a].name for a in aliases_in],
                fetch=[signature.outputs[a].name for a in aliases_out],
            )
            try:
                fn = self.session._make_callable_from_options(options)
            except tf.errors.OpError as e:
                raise from_tf_error(e) from None
            self._callables[key] = fn
        return fn

    # --- handles: the manager keeps a version alive while requests use it -----------------------

    def acquire(self) -> None:
        """Count a request in flight."""
        with self._lock:
            self._in_flight += 1

    def release(self) -> None:
        """A request finished."""
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()

    def drain_and_close(self, timeout: float | None = None) -> None:
        """Wait for requests in flight to finish, then free the session and its memory."""
        with self._lock:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)
        self._callables.clear()
        self._plans.clear()
        if self.batch_scheduler is not None:
            self.batch_scheduler.forget((self.name, self.version))
        self._close()
        self.meta_graph = None


def load(name: str, version: int, path: str, *, tflite: tuple[int, int] | None = None, **options) -> Servable:
    """Load a version (options as for Servable), turning any failure into a ServingError. With `tflite`
    (--prefer_tflite_model: pools, interpreters per pool), a version holding `model.tflite` serves that file."""
    try:
        if tflite is not None and Path(path, "model.tflite").is_file():
            from serving.server.tflite import TfLiteServable

            return TfLiteServable(name, version, path, pools=tflite[0], interpreters_per_pool=tflite[1], **options)
        return Servable(name, version, path, **options)
    except ServingError:
        raise
    except tf.errors.OpError as e:
        raise from_tf_error(e) from None
    except (OSError, RuntimeError, ValueError) as e:
        raise ServingError(from_tf_error(e).code, str(e).strip()) from None
