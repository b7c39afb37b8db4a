"""What a SavedModel's graph asks of the runtime that serves it: must-compile (XLA) functions and op types.

The stock `tensorflow_model_server` compiles XLA on CPU only with --xla_cpu_compilation_enabled (off by default)
and runs only the ops registered in the TensorFlow runtime it was built with.
"""
from __future__ import annotations

from pathlib import Path

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry


def graph(export_dir: str | Path):
    """The MetaGraphDef of an export (its only one)."""
    saved = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    return saved.meta_graphs[0]


def must_compile_functions(export_dir: str | Path) -> list[str]:
    """Functions of the export marked `_XlaMustCompile` (jit_compile=True)."""
    library = graph(export_dir).graph_def.library
    return [f.signature.name for f in library.function
            if f.attr["_XlaMustCompile"].b or any(n.attr["_XlaMustCompile"].b for n in f.node_def)]


def unregistered_ops(export_dir: str | Path) -> set[str]:
    """Op types of the export (graph and every function) that the TensorFlow runtime does not register."""
    graph_def = graph(export_dir).graph_def
    functions = {f.signature.name for f in graph_def.library.function}
    ops = {n.op for n in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}
    return {op for op in ops - functions if op_def_registry.get(op) is None}


def assert_stock_serving_graph(export_dir: str | Path) -> None:
    """No must-compile function and only registered ops: the stock TF Serving runs this export as it is."""
    assert must_compile_functions(export_dir) == [], f"{export_dir}: XLA must-compile functions"
    assert unregistered_ops(export_dir) == set(), f"{export_dir}: ops outside the TensorFlow runtime"
