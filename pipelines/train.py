"""One trainer for every zoo model: run config -> data -> compile -> fit (TensorBoard, checkpoints) -> test -> export.

    python -m pipelines.train cnn --dataset fashion_mnist --epochs 2
    tfzoo train cnn --set dropout=0.2 --batch-size 256

A run lives in runs/<model>/<run-id>/: config.json (the RunConfig), metrics.json, TensorBoard logs (train/,
validation/, HParams), checkpoints/ (weights after every epoch) and backup/ (Keras's BackupAndRestore state).
Running again with an interrupted run's `--run-id` resumes it from its last completed epoch. The export itself
(signatures, model card, warmup records, the versioned write) is `pipelines.export`.
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

from pipelines import config as run_config
from pipelines import export as exporter
from pipelines import fitting, paths, tasks
from pipelines.config import RunConfig
from pipelines.errors import UserError, module_main


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict
    export_dir: Path | None
    config: RunConfig


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
    model: str | RunConfig,
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
    profile_batches: tuple[int, int] | None = None,
) -> RunResult:
    """Train a zoo model, evaluate it on the test split and export it; return the run.

    `model` is a RunConfig, or a model name resolved with `dataset`, `overrides` (hyperparameters),
    `recipe_overrides`, `strategy` and `seed` by `pipelines.config.resolve`. `profile_batches` (first, last)
    captures those training batches with TensorFlow's profiler for TensorBoard's Profile tab.
    """
    run = model if isinstance(model, RunConfig) else run_config.resolve(
        model, dataset=dataset, hparams=overrides, recipe=recipe_overrides, strategy=strategy, seed=seed)
    task = tasks.get(run.task)(run)
    recipe = run.recipe
    keras.utils.set_random_seed(run.seed)

    run_id = run_id or make_run_id()
    run_dir = paths.runs_dir(runs_dir) / run.model / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    dist = make_strategy(run.strategy)
    splits = task.load_splits(data_dir)
    (run_dir / "config.json").write_text(json.dumps({**run.to_json(), "run_id": run_id, "splits": splits.names},
                                                    indent=2))

    with dist.scope():
        model = run.build()
        task.adapt(model, splits)
        task.compile(model, splits.steps_per_epoch)

    hp_values = {f"model.{k}": _hp_value(v) for k, v in run.hparams.items()}
    hp_values.update({f"train.{k}": _hp_value(v) for k, v in recipe.items()})
    fitted = task.fit(model, splits, fitting.FitOptions(run_dir=run_dir, run_id=run_id, hparams=hp_values,
                                                        verbose=verbose, profile_batches=profile_batches,
                                                        extra_callbacks=tuple(extra_callbacks)))
    test = task.test(model, splits)

    metrics = {
        **{f"test_{k}": float(v) for k, v in test.items()},
        **{k: float(v[-1]) for k, v in fitted.history.items() if v},
        "epochs": recipe["epochs"],
        "epochs_this_session": fitted.epochs_run,  # fewer than recipe["epochs"] after a resume or an early stop
        "stopped_early": fitted.stopped_early,
        "train_seconds": round(fitted.seconds, 2),
        "train_examples_per_second": round(fitted.examples / max(fitted.seconds, 1e-9), 1),
        "test_split": splits.names["test"],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    export_dir = None
    if export:
        export_dir = exporter.export_model(model, task, splits.sample_batch, models_dir,
                                           {"dataset": run.dataset, "run_id": run_id, "recipe": dict(recipe),
                                            "metrics": metrics})
    return RunResult(run_dir=run_dir, metrics=metrics, export_dir=export_dir, config=run)


def _hp_value(value):
    """HParams accept bool, int, float and str only."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` command line, shared by `tfzoo train` and `python -m pipelines.train`."""
    parser.add_argument("model", help="zoo model name (see `tfzoo list`)")
    parser.add_argument("--dataset", help="tfzoo dataset name, or tfds:<catalog name> (default: the model's)")
    parser.add_argument("--env", help="reinforcement-learning models (q_learning, dqn): the gymnasium environment "
                                      "to learn, e.g. CartPole-v1, Taxi-v4 (default: the model's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's; overrides --set epochs)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's; overrides --set)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default: the recipe's; overrides "
                        "--set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model hyperparameter or recipe entry, e.g. --set dropout=0.2 (repeatable; "
                             "`tfzoo info MODEL` lists the keys; a key nothing reads is refused)")
    parser.add_argument("--run-id", help="run id; reuse an interrupted run's id to resume from its last epoch")
    parser.add_argument("--strategy", default="default", choices=run_config.STRATEGIES,
                        help="tf.distribute strategy; multi_worker reads the cluster from $TF_CONFIG")
    parser.add_argument("--runs-dir", help="runs root (default $TFZOO_RUNS_DIR or ./runs)")
    parser.add_argument("--models-dir", help="export root (default $TFZOO_MODELS_DIR or ./models)")
    parser.add_argument("--data-dir", help="TFDS data dir (default $TFZOO_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--no-export", action="store_true", help="train and evaluate only")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--profile-batches", type=batch_range, metavar="FIRST,LAST",
                        help="profile these training batches (counted from 1 over the run, e.g. 10,20) with "
                             "TensorFlow's profiler: TensorBoard's Profile tab shows the trace (needs the "
                             "tensorboard-plugin-profile package, a dependency)")


def batch_range(text: str) -> tuple[int, int]:
    """`--profile-batches` "10,20" (or one batch, "10") -> (10, 20)."""
    try:
        first, _, last = text.partition(",")
        batches = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST,LAST batch numbers, e.g. 10,20; got {text!r}") from None
    if not 1 <= batches[0] <= batches[1]:
        raise argparse.ArgumentTypeError(f"need 1 <= FIRST <= LAST; got {text!r}")
    return batches


def config_from_arguments(args: argparse.Namespace) -> RunConfig:
    """The RunConfig a `train` command line describes (flags over --set over the recipe)."""
    if args.env:
        import zoo

        if not zoo.get(args.model).task.endswith("reinforcement_learning"):
            raise UserError(f"--env names an environment for the reinforcement-learning models; {args.model} "
                            "learns from a dataset: use --dataset")
        if args.dataset:
            raise UserError("give --env or --dataset, not both")
    return run_config.resolve(args.model, dataset=args.env or args.dataset, sets=args.set, epochs=args.epochs,
                              batch_size=args.batch_size, learning_rate=args.learning_rate, strategy=args.strategy,
                              seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Run `train` from parsed arguments; print where the results are."""
    result = train(config_from_arguments(args), run_id=args.run_id, runs_dir=args.runs_dir,
                   models_dir=args.models_dir, data_dir=args.data_dir, export=not args.no_export,
                   profile_batches=args.profile_batches)
    print(f"run: {result.run_dir}")
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k.startswith("test_")
                               and isinstance(v, float)))
    if result.export_dir:
        print(f"exported: {result.export_dir}")
    print(f"inspect: tensorboard --logdir {result.run_dir.parent.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.train`."""
    return module_main("python -m pipelines.train", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
