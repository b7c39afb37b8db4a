"""One trainer for every zoo model: data -> compile -> fit (TensorBoard, checkpoints) -> test -> export.

    python -m pipelines.train cnn --dataset fashion_mnist --epochs 2
    tfzoo train cnn --set dropout=0.2 --batch-size 256

A run lives in runs/<model>/<run-id>/: config.json, metrics.json, TensorBoard logs (train/,
validation/, hparams), checkpoints/ (weights per epoch) and backup/ (for --resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

import zoo
from pipelines import data, paths, tasks
from pipelines import export as exporter


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict
    export_dir: Path | None


def make_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus process id."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local devices) or `multi_worker` (cluster from $TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}: default, mirrored or multi_worker")


def train(
    model_name: str,
    *,
    dataset: str | None = None,
    overrides: dict | None = None,
    recipe_overrides: dict | None = None,
    run_id: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    strategy: str = "default",
    export: bool = True,
    extra_callbacks: tuple = (),
    seed: int = 0,
    verbose: int | str = "auto",
) -> RunResult:
    """Train zoo model `model_name`, evaluate it on the test split and export it; return the run."""
    spec = zoo.get(model_name)
    hparams = spec.resolve_hparams(overrides)
    recipe = {**spec.train, **{k: v for k, v in (recipe_overrides or {}).items() if v is not None}}
    # As this run sets them: tasks read the hparams and the recipe from the spec.
    spec = dataclasses.replace(spec, hparams=hparams, train=recipe)
    dataset = dataset or spec.default_dataset
    task = tasks.get(spec.task)
    keras.utils.set_random_seed(seed)

    run_id = run_id or make_run_id()
    run_dir = paths.runs_dir(runs_dir) / model_name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    dist = make_strategy(strategy)
    batch_size = recipe["batch_size"]
    splits = tasks.load_splits(task, spec, recipe, dataset, data_dir=data_dir, seed=seed)
    steps_per_epoch, sample_batch = splits.steps_per_epoch, splits.sample_batch
    config = {"model": model_name, "run_id": run_id, "dataset": dataset, "hparams": hparams,
              "recipe": recipe, "strategy": strategy, "seed": seed, "splits": splits.names}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))

    with dist.scope():
        model = zoo.build(model_name, **hparams)
        tasks.adapt(task, model, splits)
        task.compile(model, spec, recipe, steps_per_epoch)

    hp_values = {f"model.{k}": _hp_value(v) for k, v in hparams.items()}
    hp_values.update({f"train.{k}": _hp_value(v) for k, v in recipe.items()})
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.TensorBoard(str(run_dir), update_freq="epoch"),
        hp.KerasCallback(str(run_dir / "validation"), hp_values, trial_id=run_id),
        keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoints" / "epoch-{epoch:03d}.weights.h5"),
                                        save_weights_only=True),
        *task.callbacks(spec, str(run_dir), sample_batch),
        *extra_callbacks,
    ]
    if recipe.get("early_stopping_patience"):
        callbacks.append(keras.callbacks.EarlyStopping(patience=recipe["early_stopping_patience"],
                                                       restore_best_weights=True))

    start = time.perf_counter()
    # shuffle=False: the tf.data pipeline already reshuffles each epoch; Keras cannot shuffle a Dataset.
    # steps_per_epoch is passed so that tasks whose train pipeline repeats (step-based recipes) work too.
    history = model.fit(splits.train, validation_data=splits.validation, epochs=recipe["epochs"],
                        steps_per_epoch=steps_per_epoch, shuffle=False, callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - start
    test = model.evaluate(splits.test, return_dict=True, verbose=0)

    epochs_run = len(history.epoch)  # fewer than recipe["epochs"] after a resume; models need not report "loss"
    metrics = {
        **{f"test_{k}": float(v) for k, v in test.items()},
        **{k: float(v[-1]) for k, v in history.history.items() if v},
        "epochs": recipe["epochs"],
        "epochs_this_session": epochs_run,
        "train_seconds": round(train_seconds, 2),
        "train_examples_per_second": round(epochs_run * steps_per_epoch * batch_size / max(train_seconds, 1e-9), 1),
        "test_split": splits.names["test"],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    export_dir = None
    if export:
        export_dir = export_model(model, spec, hparams, sample_batch, models_dir,
                                  {"dataset": dataset, "run_id": run_id, "recipe": recipe, "metrics": metrics})
    return RunResult(run_dir=run_dir, metrics=metrics, export_dir=export_dir)


def export_model(model: keras.Model, spec: zoo.ModelSpec, hparams: dict, sample_batch, models_dir,
                 card: dict) -> Path:
    """Export `model` with its task's signatures, a model card and warmup requests from `sample_batch`."""
    task = tasks.get(spec.task)
    extra = getattr(task, "model_card", None)  # optional task hook: what a client needs to know (e.g. limits)
    card = {"name": spec.name, "task": spec.task, "hparams": hparams, "labels": list(spec.labels),
            "input": spec.input_spec, **(extra(spec, hparams, model) if extra else {}), **card}
    return exporter.export(model, task.signatures(model, spec, hparams), paths.models_dir(models_dir) / spec.name,
                           model_card=card, warmup_requests=task.warmup_requests(spec, sample_batch))


def export_checkpoint(model_name: str, run_id: str, *, epoch: int | None = None, runs_dir=None, models_dir=None,
                      data_dir=None) -> Path:
    """Export a run's checkpoint (the last epoch's by default) as the model's next version."""
    run_dir = paths.runs_dir(runs_dir) / model_name / run_id
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"no run {run_dir}: see `ls {run_dir.parent}` for run ids")
    config = json.loads((run_dir / "config.json").read_text())
    checkpoints = {int(p.stem.split("-")[1].split(".")[0]): p for p in (run_dir / "checkpoints").glob("epoch-*.h5")}
    if not checkpoints:
        raise FileNotFoundError(f"run {run_dir} has no checkpoints")
    epoch = max(checkpoints) if epoch is None else epoch
    if epoch not in checkpoints:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint of epoch {epoch}; it has {sorted(checkpoints)}")
    recipe = config["recipe"]
    # As the run set them: signatures read export options (e.g. test_time_flip) from the recipe.
    spec = dataclasses.replace(zoo.get(model_name), hparams=config["hparams"], train=recipe)
    model = zoo.build(model_name, **config["hparams"])
    task = tasks.get(spec.task)
    splits = tasks.load_splits(task, spec, recipe, config["dataset"], data_dir=data_dir, seed=config.get("seed", 0))
    tasks.adapt(task, model, splits)  # vocabularies are not in the weights file
    model.load_weights(str(checkpoints[epoch]))
    sample_batch = splits.sample_batch
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return export_model(model, spec, config["hparams"], sample_batch, models_dir,
                        {"dataset": config["dataset"], "run_id": run_id, "recipe": recipe, "epoch": epoch,
                         "metrics": metrics})


def _hp_value(value):
    """HParams accept bool, int, float and str only."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` command line, shared by `tfzoo train` and `python -m pipelines.train`."""
    parser.add_argument("model", help="zoo model name (see `tfzoo list`)")
    parser.add_argument("--dataset", help="tfzoo dataset name, or tfds:<catalog name> (default: the model's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the model's recipe)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the model's recipe)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default: the model's recipe)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model hyperparameter or recipe entry, e.g. --set dropout=0.2 (repeatable)")
    parser.add_argument("--run-id", help="run id; reuse an interrupted run's id to resume from its last epoch")
    parser.add_argument("--strategy", default="default", choices=["default", "mirrored", "multi_worker"],
                        help="tf.distribute strategy; multi_worker reads the cluster from $TF_CONFIG")
    parser.add_argument("--runs-dir", help="runs root (default $TFZOO_RUNS_DIR or ./runs)")
    parser.add_argument("--models-dir", help="export root (default $TFZOO_MODELS_DIR or ./models)")
    parser.add_argument("--data-dir", help="TFDS data dir (default $TFZOO_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--no-export", action="store_true", help="train and evaluate only")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def parse_sets(spec: zoo.ModelSpec, items: list[str]) -> tuple[dict, dict]:
    """Split `--set KEY=VALUE` items into model hyperparameters and recipe entries, typed by their defaults."""
    model, recipe = {}, {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key in spec.hparams:
            model[key] = value
        elif key in spec.train:
            recipe[key] = zoo.registry.coerce(value, spec.train[key])
        else:
            known = ", ".join(sorted({*spec.hparams, *spec.train}))
            raise ValueError(f"{spec.name} has no hyperparameter or recipe entry {key!r}; known: {known}")
    return model, recipe


def run(args: argparse.Namespace) -> int:
    """Run `train` from parsed arguments; print where the results are."""
    spec = zoo.get(args.model)
    overrides, recipe = parse_sets(spec, args.set)
    recipe.update(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate)
    result = train(args.model, dataset=args.dataset, overrides=overrides, recipe_overrides=recipe,
                   run_id=args.run_id, runs_dir=args.runs_dir, models_dir=args.models_dir,
                   data_dir=args.data_dir, strategy=args.strategy, export=not args.no_export, seed=args.seed)
    print(f"run: {result.run_dir}")
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k.startswith("test_")
                               and isinstance(v, float)))
    if result.export_dir:
        print(f"exported: {result.export_dir}")
    print(f"inspect: tensorboard --logdir {result.run_dir.parent.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.train`."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (data.MissingDataError, KeyError, ValueError, NotImplementedError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
