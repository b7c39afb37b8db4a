"""Export in one place: signatures from the task, the model card, warmup requests, the atomic versioned write.

Layout (TF Serving's): models/<name>/<version>/{saved_model.pb, variables/, assets.extra/}.
A version is written into a hidden temporary directory beside the versions and renamed into place,
so a server polling models/<name>/ never sees a half-written version.

    export_model(model, task, sample_batch, models_dir, card)   a trained model (pipelines.train calls it)
    export_checkpoint(model_name, run_id, epoch=...)           a run's checkpoint (`tfzoo export`)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from pipelines import paths
from pipelines.config import RunConfig
from pipelines.errors import UserError

MODEL_CARD = "model_card.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def versions(model_dir: Path) -> list[int]:
    """Integer versions present under a model's base path, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def write_warmup(path: Path, model_name: str, requests: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """Write PredictionLog records (TF Serving's warmup format) for `requests`."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_version(model_dir: str | os.PathLike, fill: Callable[[Path], dict]) -> Path:
    """Write the next integer version under `model_dir` atomically; return its path.

    `fill(staging)` writes the version's files into a hidden staging directory beside the versions and returns
    its model card; the card (with the version number and the time) goes to assets.extra/, and the directory
    is renamed into place. If `fill` fails, nothing is left behind.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a served version must be readable by the server
    try:
        model_card = fill(staging)
        extra = staging / "assets.extra"
        extra.mkdir(exist_ok=True)
        while True:
            version = (versions(model_dir) or [0])[-1] + 1
            card = {**model_card, "version": version, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (extra / MODEL_CARD).write_text(json.dumps(card, indent=2, default=str))
            target = model_dir / str(version)
            try:
                os.rename(staging, target)  # atomic on one file system; fails if target exists
                return target
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_saved_model(directory: Path, model: keras.Model, signatures: dict) -> None:
    """`model` with `signatures` as a SavedModel in `directory` (serving_default first: the default)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in sorted(signatures, key=lambda n: n != "serving_default"):
        archive.add_endpoint(name, signatures[name])
    archive.write_out(str(directory), verbose=False)


def export(
    model: keras.Model,
    signatures: dict,
    model_dir: str | os.PathLike,
    *,
    model_card: dict,
    warmup_requests: list[tuple[str, dict[str, np.ndarray]]] = (),
) -> Path:
    """Export `model` with `signatures` as the next integer version under `model_dir`; return its path."""

    def fill(staging: Path) -> dict:
        write_saved_model(staging, model, signatures)
        if warmup_requests:
            (staging / "assets.extra").mkdir(exist_ok=True)
            write_warmup(staging / "assets.extra" / WARMUP_FILE, model_card.get("name", Path(model_dir).name),
                         list(warmup_requests))
        return model_card

    return write_version(model_dir, fill)


def read_model_card(version_dir: str | os.PathLike) -> dict:
    """The model card of an exported version."""
    return json.loads((Path(version_dir) / "assets.extra" / MODEL_CARD).read_text())


def export_model(model: keras.Model, task, sample_batch, models_dir: str | os.PathLike | None, card: dict) -> Path:
    """Export a trained `model` with its task's (a `pipelines.tasks.Task` of the run) signatures, a model card
    (the run's name, task, hyperparameters, labels and input, what the task adds, and `card`) and warmup requests
    from `sample_batch`, as the next version under models_dir/<model name>."""
    run: RunConfig = task.run
    card = {"name": run.model, "task": run.task, "hparams": dict(run.hparams), "labels": list(run.labels),
            "input": run.spec.input_spec, **task.model_card(model), **card}
    return export(model, task.signatures(model), paths.models_dir(models_dir) / run.model, model_card=card,
                  warmup_requests=task.warmup_requests(sample_batch))


def export_checkpoint(model_name: str, run_id: str, *, epoch: int | None = None, runs_dir=None, models_dir=None,
                      data_dir=None) -> Path:
    """Export a run's checkpoint (the last epoch's by default) as the model's next version, with the run's
    config as recorded (hyperparameters, recipe: signatures read export options such as test_time_flip)."""
    from pipelines import tasks

    run_dir = paths.runs_dir(runs_dir) / model_name / run_id
    if not (run_dir / "config.json").is_file():
        raise UserError(f"no run {run_dir}: see `ls {run_dir.parent}` for run ids")
    run = RunConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    checkpoints = paths.checkpoints(run_dir)
    if not checkpoints:
        raise UserError(f"run {run_dir} has no checkpoints")
    epoch = max(checkpoints) if epoch is None else epoch
    if epoch not in checkpoints:
        raise UserError(f"run {run_dir} has no checkpoint of epoch {epoch}; it has {sorted(checkpoints)}")
    task = tasks.get(run.task)(run)
    model = run.build()
    splits = task.load_splits(data_dir)
    task.adapt(model, splits)  # vocabularies are not in the weights file
    model.load_weights(str(checkpoints[epoch]))
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return export_model(model, task, splits.sample_batch, models_dir,
                        {"dataset": run.dataset, "run_id": run_id, "recipe": dict(run.recipe), "epoch": epoch,
                         "metrics": metrics})
