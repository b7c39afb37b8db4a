"""`--prefer_tflite_model`: a version's `model.tflite` served through LiteRT, with the SavedModel's API.

As TF Serving's TfLiteSession does, the signatures are the TFLite model's own (its signature runners): each
becomes a SignatureDef of method `tensorflow/serving/predict` whose inputs and outputs keep the runner's names,
dtypes and shape signatures (-1 where a dimension is resizable), so metadata, validation, REST and gRPC
behave as for a SavedModel. `--num_tflite_pools` x `--num_tflite_interpreters_per_pool` interpreters are made
(one thread each); a request runs on a free one, so that many requests run at once and the others wait.
"""
from __future__ import annotations

import queue

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from serving.server.errors import invalid
from serving.server.servable import PREDICT_METHOD, Servable, Signature

TFLITE_FILE = "model.tflite"


def _tensor_info(details: dict) -> meta_graph_pb2.TensorInfo:
    """A runner's tensor details as a SignatureDef's TensorInfo."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d))
                                                   for d in details["shape_signature"]])
    return meta_graph_pb2.TensorInfo(name=details["name"], dtype=tf.as_dtype(details["dtype"]).as_datatype_enum,
                                     tensor_shape=shape)


class TfLiteServable(Servable):
    """One version's model.tflite, its signature runners on a pool of LiteRT interpreters."""

    def __init__(self, name: str, version: int, path: str, *, pools: int = 1, interpreters_per_pool: int = 1,
                 **options):
        self.interpreter_count = max(1, pools) * max(1, interpreters_per_pool)
        super().__init__(name, version, path, **options)

    def _open(self, tags: list[str], session_config: config_pb2.ConfigProto | None) -> meta_graph_pb2.MetaGraphDef:
        del tags, session_config  # a TFLite file has neither tags nor a TensorFlow session
        from ai_edge_litert.interpreter import Interpreter

        model = f"{self.path}/{TFLITE_FILE}"
        self.interpreters: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.interpreter_count):
            self.interpreters.put(Interpreter(model_path=model, num_threads=1))
        probe = self.interpreters.get()
        try:
            meta_graph = meta_graph_pb2.MetaGraphDef()
            names = list(probe.get_signature_list()) or [None]
            for key in names:
                runner = probe.get_signature_runner(key)
                signature = meta_graph.signature_def[key or "serving_default"]
                signature.method_name = PREDICT_METHOD
                for alias, details in runner.get_input_details().items():
                    signature.inputs[alias].CopyFrom(_tensor_info(details))
                for alias, details in runner.get_output_details().items():
                    signature.outputs[alias].CopyFrom(_tensor_info(details))
        finally:
            self.interpreters.put(probe)
        self._runner_keys = {key or "serving_default": key for key in names}
        return meta_graph

    def _close(self) -> None:
        self.interpreters = None

    def _callable(self, signature: Signature, aliases_in: tuple, aliases_out: tuple):
        key = self._runner_keys[signature.name]

        def run(*arrays: np.ndarray) -> list[np.ndarray]:
            interpreter = self.interpreters.get()  # waits while every interpreter is busy
            try:
                outputs = interpreter.get_signature_runner(key)(**dict(zip(aliases_in, arrays, strict=True)))
            except (RuntimeError, ValueError) as e:  # e.g. a shape the model cannot be resized to
                raise invalid(f"TFLite model: {e}") from None
            finally:
                self.interpreters.put(interpreter)
            return [outputs[alias] for alias in aliases_out]

        return run
