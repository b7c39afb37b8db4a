"""SavedModels of the kinds TF Serving's own fixtures hold, built with TensorFlow here.

So the serving tests run without ../shared: a TF1-style export with predict/classify/regress
SignatureDefs and tf.Example string inputs, multi-version model directories, and a broken export.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf


def tf1_linear_model(export_dir: Path, slope: float = 0.5, intercept: float = 2.0) -> Path:
    """y = slope * x + intercept as a TF1 graph, with TF Serving's three kinds of SignatureDef."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        a = tf.compat.v1.Variable(slope, name="a")
        b = tf.compat.v1.Variable(intercept, name="b")
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")  # [N, 1]
        y = tf.add(a * x, b, name="y")
        x_raw = tf.compat.v1.placeholder(tf.float32, [None], name="x_raw")
        y_raw = tf.add(a * x_raw, b, name="y_raw")
        session.run(tf.compat.v1.global_variables_initializer())
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": signature({"x": info(x_raw)}, {"y": info(y_raw)}, "tensorflow/serving/predict"),
            "classify_x_to_y": signature({"inputs": info(serialized)}, {"scores": info(y)},
                                         "tensorflow/serving/classify"),
            "regress_x_to_y": signature({"inputs": info(serialized)}, {"outputs": info(y)},
                                        "tensorflow/serving/regress"),
        })
        builder.save()
    return export_dir


def broken_export(export_dir: Path) -> Path:
    """A version directory whose saved_model.pb is not a SavedModel."""
    export_dir.mkdir(parents=True)
    (export_dir / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return export_dir
