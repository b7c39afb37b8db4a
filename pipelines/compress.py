"""Model compression: an exported version -> a smaller servable model `models/<model>_<method>/<version>/`.

    tfzoo compress cnn --method tflite_int8          # full-integer TFLite, calibrated on 300 train images
    tfzoo compress gpt --method keras_int8           # Keras 3 int8 weights (Dense, EinsumDense, Embedding)
    tfzoo compress cnn --method prune --set sparsity=0.8
    tfzoo evaluate cnn_tflite_int8                   # same code and split as `tfzoo evaluate cnn`

Methods:
  tflite_dynamic   TFLite, weights int8, activations float (dynamic-range quantization)
  tflite_float16   TFLite, weights float16
  tflite_int8      TFLite, weights and activations int8 (float input and output), calibrated on
                   `calibration_examples` train-split examples (never test examples)
  keras_int8       Keras 3 `model.quantize("int8")`: Dense/EinsumDense/Embedding kernels int8, a SavedModel
  prune            magnitude pruning to `sparsity` with a polynomial schedule while fine-tuning on the train
                   split (Keras callback + masks), exported as a SavedModel whose zeros compress (zip)
  distill          knowledge distillation: the exported classifier teaches a `student` zoo model (default
                   cnn) trained with the student's own recipe (`pipelines.distillation`); `student_set` holds
                   the student's own --set overrides, comma-separated (e.g. --set student_set=width=0.25)

A TFLite method's version holds the source's float SavedModel and `model.tflite` beside it: TF Serving and
tfzoo-model-server serve the TFLite file with `--prefer_tflite_model`, the SavedModel otherwise. The model card
records the source model and version, the method and its settings, the file sizes and the quality measured on
the source's test split with the source's evaluation code. The write is atomic: a failed conversion leaves no
version behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import paths
from pipelines.errors import UserError, module_main

TFLITE_FILE = "model.tflite"
TFLITE_TASKS = ("image_classification", "segmentation")
# Pruning's epochs and rate and distillation's temperature and alpha: the best of bench/compression.py's grids
# on cnn's validation split (bench/results/compression.md; keras-io's example uses temperature 10, alpha 0.1).
SETTINGS = {"calibration_examples": 300, "sparsity": 0.8, "prune_epochs": 20, "prune_learning_rate": 1e-3,
            "student": "cnn", "student_set": "", "temperature": 2.0, "alpha": 0.5}


@dataclasses.dataclass(frozen=True)
class Method:
    """A compression method: what it writes and which zoo models it applies to."""

    name: str
    applies: Callable[[str, str], bool]  # (model name, task) -> applies
    why_not: str  # said when it does not apply
    settings: tuple[str, ...] = ()


def _tflite(model: str, task: str) -> bool:
    del model
    return task in TFLITE_TASKS


TFLITE_WHY = ("converts the image classifiers and unet (their float `serving_default`); the other models' "
              "signatures hold what TFLite's builtins lack: string ops (text models, `encoded_image`), the while loops "
              "of generation, and the autoencoder's `reconstruct` a TensorList map the converter rejects")
METHODS = {m.name: m for m in (
    Method("tflite_dynamic", _tflite, TFLITE_WHY),
    Method("tflite_float16", _tflite, TFLITE_WHY),
    Method("tflite_int8", _tflite, TFLITE_WHY, ("calibration_examples",)),
    Method("keras_int8", lambda model, _task: model in ("cnn", "gpt", "char_rnn", "text_classifier"),
           "Keras quantizes Dense, EinsumDense and Embedding layers: cnn (its dense head), gpt, char_rnn and "
           "text_classifier have them where their weights are"),
    Method("prune", lambda model, task: task == "image_classification" and model in ("cnn", "resnet"),
           "fine-tunes on the model's own task: cnn and resnet", ("sparsity", "prune_epochs", "prune_learning_rate")),
    Method("distill", lambda model, task: task == "image_classification" and model in ("resnet", "cnn"),
           "teaches with the class probabilities of a Fashion-MNIST classifier (resnet, cnn)",
           ("student", "student_set", "temperature", "alpha")),
)}


def applicable(method: str) -> list[str]:
    """The zoo models `method` applies to."""
    import zoo

    return [name for name in zoo.list_models() if METHODS[method].applies(name, zoo.get(name).task)]


def directory_bytes(path: Path, pattern: str = "**/*") -> int:
    """Bytes of the files under `path` matching `pattern`."""
    return sum(f.stat().st_size for f in path.glob(pattern) if f.is_file())


def zipped_bytes(path: Path) -> int:
    """Bytes of the file `path`, or of a directory's files, zipped (deflate): what zeros from pruning save on
    the wire and on disk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(path.glob("**/*")) if path.is_dir() else [path]:
            if f.is_file():
                archive.write(f, f.relative_to(path) if path.is_dir() else f.name)
    return buffer.tell()


class LiteRTModule:
    """A model.tflite with the interface `tf.saved_model.load` gives the tasks' evaluation code:
    `.signatures[name](**inputs) -> {output: tensor}`, run by LiteRT."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))
        self.signatures = {name: self._runner(name) for name in self.interpreter.get_signature_list()}

    def _runner(self, name: str):
        import tensorflow as tf

        runner = self.interpreter.get_signature_runner(name)

        def call(**inputs):
            return {k: tf.constant(v) for k, v in runner(**{k: np.asarray(v) for k, v in inputs.items()}).items()}

        return call


def load_for_evaluation(version_dir: Path):
    """What `pipelines.evaluate` runs a version through: its model.tflite when the version is a TFLite
    compression (its model card says so), else the SavedModel."""
    import tensorflow as tf

    from pipelines import export

    card = export.read_model_card(version_dir)
    if card.get("compression", {}).get("format") == "tflite":
        return LiteRTModule(version_dir / TFLITE_FILE)
    return tf.saved_model.load(str(version_dir))


def keras_model(version_dir: Path, data_dir=None):
    """The Keras model of an exported zoo version: rebuilt from its card (hyperparameters; vocabularies adapted
    on the train split as in training), its variables copied from the SavedModel's (same order, names checked)."""
    import tensorflow as tf

    from pipelines import config, export, tasks
    from pipelines.config import RunConfig

    card = export.read_model_card(version_dir)
    name = card.get("zoo_model", card["name"])
    # The recipe as recorded, over today's defaults (an older export may predate a key a signature reads).
    recipe = {**config.resolve(name, dataset=card["dataset"]).recipe, **card.get("recipe", {})}
    run = RunConfig.from_json({"model": name, "task": card["task"], "dataset": card["dataset"],
                               "hparams": card["hparams"], "recipe": recipe, "labels": card["labels"]})
    task = tasks.get(run.task)(run)
    model = run.build()
    splits = task.load_splits(data_dir)
    task.adapt(model, splits)
    saved = tf.saved_model.load(str(version_dir)).variables
    if len(saved) != len(model.variables):
        raise UserError(f"{version_dir}: {len(saved)} saved variables, the rebuilt {run.model} has "
                        f"{len(model.variables)}: not a tfzoo export of this model")
    for variable, value in zip(model.variables, saved, strict=True):
        if tuple(variable.shape) != tuple(value.shape):
            raise UserError(f"{version_dir}: variable {value.name} has shape {value.shape}, the rebuilt model's "
                            f"{variable.path} {variable.shape}")
        variable.assign(value)
    return model, task, splits, card


def source_version(model: str, version: int | None, models_dir) -> Path:
    from pipelines import evaluate

    return evaluate.latest_version_dir(paths.models_dir(models_dir) / model, version)


def compress(model: str, method: str, *, version: int | None = None, models_dir=None, runs_dir=None,
             data_dir=None, settings: dict[str, Any] | None = None, seed: int = 0, test: bool = True) -> Path:
    """Compress `model`'s version (the newest by default) with `method`; return the new version's path.

    `test=False` leaves the evaluation split unread (settings being chosen on validation): the card's `metrics`
    are then empty, and the fine-tuning methods' `validation_metrics` are what there is to compare."""
    import zoo

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    spec = zoo.get(model)
    if not METHODS[method].applies(model, spec.task):
        raise UserError(f"{method} does not apply to {model}: it {METHODS[method].why_not}; it applies to "
                        f"{', '.join(applicable(method))}")
    unknown = set(settings or {}) - set(METHODS[method].settings)
    if unknown:
        raise UserError(f"{method} has no setting {sorted(unknown)[0]!r}; its settings: "
                        f"{', '.join(METHODS[method].settings) or 'none'}")
    chosen = {key: type(SETTINGS[key])((settings or {}).get(key, SETTINGS[key])) for key in METHODS[method].settings}
    source = source_version(model, version, models_dir)
    target = paths.models_dir(models_dir) / f"{model}_{method}"
    writer = {"keras_int8": _keras_int8, "prune": _prune, "distill": _distill}.get(method, _tflite_method)
    return writer(source, target, method, chosen, data_dir=data_dir, runs_dir=runs_dir, seed=seed, test=test)


def _card(source: Path, method: str, settings: dict, fmt: str, sizes: dict, metrics: dict, extra=None,
          base: dict | None = None) -> dict:
    """The compressed version's card: the source's (or `base`, the card of the model it holds) with the
    compression recorded; `zoo_model` names the zoo model whose architecture the version holds."""
    from pipelines import export

    card = export.read_model_card(source)
    base = base or {**card, "zoo_model": card.get("zoo_model", card["name"])}
    return {**base, "name": f"{card['name']}_{method}", "metrics": metrics, "source_metrics": card.get("metrics"),
            "compression": {"source": {"model": card["name"], "version": card["version"], "path": str(source)},
                            "method": method, "settings": settings, "format": fmt, "bytes": sizes,
                            **(extra or {})}}


def _evaluate(card: dict, loaded, data_dir=None, test: bool = True) -> dict:
    """The source's evaluation (task, dataset, the task's evaluation split) on `loaded`; {} unless `test`."""
    from pipelines import tasks

    if not test:
        return {}
    task = tasks.get(card["task"])
    ds = task.load_evaluation(card["dataset"], task.evaluation_split, batch_size=256, data_dir=data_dir)
    return task.evaluate_export(loaded, ds, card)


def _tflite_method(source: Path, target: Path, method: str, settings: dict, *, data_dir=None, test=True,
                   **_) -> Path:
    import tensorflow as tf

    from pipelines import export, tasks

    card = export.read_model_card(source)
    # The signatures of numbers in: `encoded_image` (DecodeImage) and the like have no TFLite builtin.
    loaded = tf.saved_model.load(str(source))
    keys = sorted(name for name, fn in loaded.signatures.items()
                  if all(spec.dtype != tf.string for spec in fn.structured_input_signature[1].values()))
    del loaded
    converter = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=keys)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if method == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    elif method == "tflite_int8":
        examples = tasks.get(card["task"]).calibration_inputs(card["dataset"], count=settings["calibration_examples"],
                                                              data_dir=data_dir)
        converter.representative_dataset = lambda: iter(examples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError and plain exceptions alike
        raise UserError(f"{card['name']} does not convert with {method}: {str(e).splitlines()[0]}") from None

    def fill(staging: Path) -> dict:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / TFLITE_FILE).write_bytes(flatbuffer)
        warmup = staging / "assets.extra" / export.WARMUP_FILE
        if warmup.is_file():  # keep the records of the signatures the TFLite model has
            _keep_warmup(warmup, {*keys, *([""] if "serving_default" in keys else [])})
        loaded = LiteRTModule(staging / TFLITE_FILE)
        sizes = {"tflite": len(flatbuffer), "source_variables": directory_bytes(source / "variables"),
                 "source_saved_model": directory_bytes(source)}
        metrics = _evaluate(card, loaded, data_dir, test)
        return _card(source, method, settings, "tflite", sizes, metrics,
                     {"ratio_to_source_variables": round(sizes["source_variables"] / len(flatbuffer), 2),
                      "signatures": list(loaded.signatures)})

    return export.write_version(target, fill)


def _keep_warmup(path: Path, signatures: set[str]) -> None:
    """Rewrite a warmup file keeping the records of `signatures`."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    kept = [r.numpy() for r in tf.data.TFRecordDataset(str(path))
            if prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request.model_spec.signature_name
            in signatures]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in kept:
            writer.write(record)


def _keras_export(model, task, splits, source: Path, target: Path, method: str, settings: dict, data_dir,
                  extra: Callable[[Path], dict], base: dict | None = None, test: bool = True) -> Path:
    """Export a compressed Keras `model` with its task's signatures and warmup requests, measured."""
    import tensorflow as tf

    from pipelines import export

    card = export.read_model_card(source)

    def fill(staging: Path) -> dict:
        export.write_saved_model(staging, model, task.signatures(model))
        requests = task.warmup_requests(splits.sample_batch)
        if requests:
            (staging / "assets.extra").mkdir(exist_ok=True)
            export.write_warmup(staging / "assets.extra" / export.WARMUP_FILE, f"{card['name']}_{method}", requests)
        sizes = {"variables": directory_bytes(staging / "variables"),
                 "source_variables": directory_bytes(source / "variables"),
                 "variables_zipped": zipped_bytes(staging / "variables"),
                 "source_variables_zipped": zipped_bytes(source / "variables")}
        metrics = _evaluate(card, tf.saved_model.load(str(staging)), data_dir, test)
        return _card(source, method, settings, "saved_model", sizes, metrics, extra(staging), base)

    return export.write_version(target, fill)


def quantize_int8(model) -> None:
    """Keras int8 weights for every Dense, EinsumDense and Embedding layer of `model`, layer by layer (what
    `Model.quantize` does, without stopping at a preprocessing layer such as text_classifier's StringLookup,
    which Keras then finds unbuilt). A tied output projection must go through the layer (gpt's
    `ReversibleEmbedding(..., reverse=True)`): a quantized layer's `embeddings` are int8 codes, not weights."""
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)):
            layer.quantize("int8")


def _keras_int8(source: Path, target: Path, method: str, settings: dict, *, data_dir=None, test=True,
                **_) -> Path:
    model, task, splits, _ = keras_model(source, data_dir)
    quantize_int8(model)

    def extra(staging: Path) -> dict:
        ops = saved_model_ops(staging)
        return {"ops": ops, "quantized_layers": sorted({layer.name for layer in model._flatten_layers()
                                                        if getattr(layer, "quantization_mode", None) == "int8"})}

    return _keras_export(model, task, splits, source, target, method, settings, data_dir, extra, test=test)


def saved_model_ops(version_dir: Path) -> list[str]:
    """The op types of a SavedModel's graph and functions (all TensorFlow ops TF Serving's build has, or not)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    called = {f.signature.name for mg in proto.meta_graphs for f in mg.graph_def.library.function}
    return sorted(ops - called)


def last_validation(history: dict[str, list[float]]) -> dict[str, float]:
    """The final epoch's validation metrics of a Keras history (`val_accuracy` -> `accuracy`)."""
    return {k.removeprefix("val_"): round(v[-1], 6) for k, v in history.items() if k.startswith("val_") and v}


def _prune(source: Path, target: Path, method: str, settings: dict, *, data_dir=None, runs_dir=None, seed=0,
           test=True) -> Path:
    from pipelines import pruning

    model, task, splits, card = keras_model(source, data_dir)
    reached, fitted = pruning.prune(model, task, splits, settings,
                                    runs_dir=paths.runs_dir(runs_dir) / f"{card['name']}_prune", seed=seed)
    return _keras_export(model, task, splits, source, target, method, settings, data_dir,
                         lambda _: {"sparsity_reached": reached,
                                    "validation_metrics": last_validation(fitted.history)}, test=test)


def _distill(source: Path, target: Path, method: str, settings: dict, *, data_dir=None, runs_dir=None, seed=0,
             test=True) -> Path:
    import keras

    from pipelines import config, distillation, export, fitting, tasks
    from pipelines.train import make_run_id

    card = export.read_model_card(source)
    sets = [item.strip() for item in settings["student_set"].split(",") if item.strip()]
    run = config.resolve(settings["student"], dataset=card["dataset"], seed=seed, sets=sets)
    if run.task != card["task"]:
        raise UserError(f"student {run.model} ({run.task}) cannot learn from {card['name']} ({card['task']})")
    keras.utils.set_random_seed(seed)
    task = tasks.get(run.task)(run)
    splits = task.load_splits(data_dir)
    student, teacher = run.build(), distillation.exported_teacher(source)
    if not task.recipe.get("augment"):  # fixed train images: the teacher answers each once, before training
        splits = dataclasses.replace(splits, train=distillation.with_teacher(task, teacher, data_dir))
    distiller = distillation.Distiller(student, teacher, temperature=settings["temperature"], alpha=settings["alpha"])
    distiller.compile(optimizer=task.optimizer(splits.steps_per_epoch),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    distiller(splits.sample_batch[0])  # built before fit (BackupAndRestore asks)
    run_id = make_run_id()
    fitted = fitting.keras_fit(distiller, splits, dict(run.recipe), [], fitting.FitOptions(
        run_dir=paths.runs_dir(runs_dir) / f"{card['name']}_distill" / run_id, run_id=run_id,
        hparams={"student": run.model, "temperature": settings["temperature"], "alpha": settings["alpha"]},
        verbose=2))
    base = {"name": f"{card['name']}_distill", "zoo_model": run.model, "task": run.task,
            "hparams": dict(run.hparams), "labels": list(run.labels), "input": run.spec.input_spec,
            "dataset": run.dataset, "recipe": dict(run.recipe), "run_id": run_id, "seed": seed}
    return _keras_export(student, task, splits, source, target, method, settings, data_dir,
                         lambda _: {"teacher_metrics": card.get("metrics"), "train_seconds": round(fitted.seconds, 1),
                                    "validation_metrics": last_validation(fitted.history)}, base, test=test)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the exported zoo model to compress (models/<model>/<version>)")
    parser.add_argument("--method", required=True, choices=list(METHODS), help="see above")
    parser.add_argument("--version", type=int, help="source version (default: the newest)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a method's setting: " + ", ".join(f"{k} (default {v})" for k, v in SETTINGS.items()))
    parser.add_argument("--seed", type=int, default=0, help="random seed of fine-tuning (prune, distill)")
    parser.add_argument("--no-test", dest="test", action="store_false",
                        help="leave the evaluation split unread (while choosing settings on validation: prune and "
                             "distill record validation_metrics); `tfzoo evaluate` measures it later")
    parser.add_argument("--models-dir")
    parser.add_argument("--runs-dir")
    parser.add_argument("--data-dir")


def run(args: argparse.Namespace) -> int:
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        settings[key] = value
    path = compress(args.model, args.method, version=args.version, models_dir=args.models_dir,
                    runs_dir=args.runs_dir, data_dir=args.data_dir, settings=settings, seed=args.seed, test=args.test)
    from pipelines import export

    card = export.read_model_card(path)
    print(f"wrote {path}")
    print(json.dumps({"metrics": card["metrics"], "source_metrics": card["source_metrics"],
                      "validation_metrics": card["compression"].get("validation_metrics"),
                      "bytes": card["compression"]["bytes"]}, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.compress`."""
    return module_main("python -m pipelines.compress", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
