"""SavedModels of the kinds TF Serving's own fixtures hold, built here with TensorFlow and Keras 3.

So the serving tests stand alone without ../shared: a TF1-style export (tf.compat.v1 +
SavedModelBuilder) with predict/classify/regress SignatureDefs and tf.Example string inputs, a
TF2/Keras 3 image classifier with a raw-PNG signature and warmup records, and a broken export.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.data.experimental.ops import testing  # tf.data's SleepDataset (a standard op)
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

LABELS = [f"class_{i}" for i in range(10)]
TOP_K = 3


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


def slow_counter_model(export_dir: Path) -> Path:
    """A TF1 model that waits: `serving_default` counts its run, then sleeps `seconds` (a tf.data sleep: no
    CPU spent) and answers the count; `count` answers how many runs have started, without counting."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        runs = tf.compat.v1.Variable(tf.constant(0, tf.int64), name="runs", use_resource=True)
        seconds = tf.compat.v1.placeholder(tf.float32, [], name="seconds")
        counted = runs.assign_add(1)
        slept = tf.data.Dataset.from_tensors(counted).apply(
            testing.sleep(tf.cast(seconds * 1e6, tf.int64))).take(1)  # take(1): no second sleep for the end
        answer = tf.identity(tf.data.experimental.get_single_element(slept), name="answer")
        x = tf.compat.v1.placeholder(tf.float32, [], name="x")
        current = tf.identity(runs.read_value() + tf.cast(x * 0, tf.int64), name="current")
        session.run(tf.compat.v1.global_variables_initializer())
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": signature({"seconds": info(seconds)}, {"runs": info(answer)},
                                         "tensorflow/serving/predict"),
            "count": signature({"x": info(x)}, {"runs": info(current)}, "tensorflow/serving/predict"),
        })
        builder.save()
    return export_dir


def image_classifier() -> keras.Model:
    """A small deterministic Keras 3 classifier: image float32 [N, 28, 28, 1] -> probabilities [N, 10].

    Its convolution is the kind of oneDNN kernel that aborts the whole process on an input of the wrong rank.
    """
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(4, 3, padding="same"),
                             keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax", name="probabilities")])


def keras_image_classifier(export_dir: Path, warmup_records: int = 2) -> Path:
    """Export the classifier as tfzoo does (keras.export.ExportArchive) with three signatures:

    serving_default (image -> probabilities), encoded_image (PNG bytes decoded in the graph -> top-k
    labels, scores, ids) and echo (strings out: an alias ending in `_bytes` is base64 over REST).
    """
    model = image_classifier()
    labels = tf.constant(LABELS)

    def serving_default(image):
        return {"probabilities": model(image)}

    def encoded_image(image_bytes):
        decode = lambda png: tf.cast(tf.ensure_shape(tf.io.decode_png(png, channels=1), [28, 28, 1]), tf.float32)
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([28, 28, 1], tf.float32))
        scores, ids = tf.math.top_k(model(images / 255.0), k=TOP_K)
        return {"top_k_labels": tf.gather(labels, ids), "top_k_scores": scores, "top_k_ids": ids}

    def echo(text):
        return {"text_bytes": text, "text": text, "length": tf.strings.length(text)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_default,
                         [tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
    archive.add_endpoint("encoded_image", encoded_image, [tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("echo", echo, [tf.TensorSpec([None], tf.string, name="text")])
    archive.write_out(str(export_dir), verbose=False)
    if warmup_records:
        write_warmup_requests(export_dir, warmup_records)
    return export_dir


def keras_default_export(export_dir: Path) -> Path:
    """The classifier through Keras 3's own `model.export` (its default `serve` endpoint)."""
    image_classifier().export(str(export_dir), verbose=False)
    return export_dir


def write_warmup_requests(export_dir: Path, count: int) -> None:
    """assets.extra/tf_serving_warmup_requests: `count` PredictionLogs for serving_default."""
    (export_dir / "assets.extra").mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(export_dir / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="image"))
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.full((1, 28, 28, 1), i / count, np.float32)))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())


def png(seed: int = 0) -> bytes:
    """A 28x28 grey PNG with a bar whose place depends on `seed`."""
    image = np.zeros((28, 28, 1), np.uint8)
    image[seed % 20:seed % 20 + 4, 2:26] = 230
    return tf.io.encode_png(image).numpy()


def broken_export(export_dir: Path) -> Path:
    """A version directory whose saved_model.pb is not a SavedModel."""
    export_dir.mkdir(parents=True)
    (export_dir / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return export_dir
