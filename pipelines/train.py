"""One trainer for every zoo model: run config -> data -> compile -> fit (TensorBoard, checkpoints) -> test -> export.

    python -m pipelines.train cnn --dataset fashion_mnist --epochs 2
    tfzoo train cnn --set dropout=0.2 --batch-size 256

A run lives in runs/<model>/<run-id>/: config.json (the RunConfig), metrics.json, TensorBoard logs (train/,
validation/, HParams), checkpoints/ (weights after every epoch) and backup/ (Keras's BackupAndRestore state).
Running again with an interrupted run's `--run-id` resumes it from its last completed epoch. The export itself
(signatures, model card, warmup records, the versioned write) is `pipelines.export`.

On several workers (`--workers N` on this machine, or `--strategy multi_worker` on each host of a cluster in
$TF_CONFIG), see `pipelines.distributed`: the chief writes the run, the others a temporary directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from pipelines import config as run_config
from pipelines import data, distributed, fitting, paths, tasks
from pipelines import export as exporter
from pipelines.config import RunConfig
from pipelines.errors import UserError, module_main


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict
    export_dir: Path | None
    config: RunConfig


_run_ids: dict[str, int] = {}  # the ids this process has handed out, by their timestamp-and-pid part


def make_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus process id, plus a count from the second id this process
    makes within one second (two runs of a model in one second would otherwise share a run directory, and the
    second would resume the first's backup)."""
    base = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    count = _run_ids[base] = _run_ids.get(base, 0) + 1
    return base if count == 1 else f"{base}-{count}"


def make_strategy(name: str, cluster_timeout: float = distributed.CLUSTER_TIMEOUT) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local devices) or `multi_worker` (cluster from $TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return distributed.make_strategy(cluster_timeout)
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
    cluster_timeout: float = distributed.CLUSTER_TIMEOUT,
) -> RunResult:
    """Train a zoo model, evaluate it on the test split and export it; return the run.

    `model` is a RunConfig, or a model name resolved with `dataset`, `overrides` (hyperparameters),
    `recipe_overrides`, `strategy` and `seed` by `pipelines.config.resolve`. `profile_batches` (first, last)
    captures those training batches with TensorFlow's profiler for TensorBoard's Profile tab.
    """
    run = model if isinstance(model, RunConfig) else run_config.resolve(
        model, dataset=dataset, hparams=overrides, recipe=recipe_overrides, strategy=strategy, seed=seed)
    if run.strategy == "multi_worker" and run.recipe.get("jit_compile") and not tf.config.list_physical_devices("GPU"):
        # XLA cannot compile the all-reduce on CPU ("Collectives are not yet implemented for CPU devices").
        print(f"tfzoo train: {run.model}: jit_compile off: XLA has no CPU collectives for multi-worker training",
              file=sys.stderr)
        run = dataclasses.replace(run, recipe={**run.recipe, "jit_compile": False})
    task = tasks.get(run.task)(run)
    if run.strategy == "multi_worker":
        check_distributable(task)
        if not run_id:
            raise UserError("--strategy multi_worker needs --run-id, the same on every worker: an interrupted run "
                            "resumes on every worker from the chief's backup of that run")
    dist = make_strategy(run.strategy, cluster_timeout)
    chief = distributed.is_chief(dist)
    run_id = run_id or make_run_id()
    chief_dir = paths.runs_dir(runs_dir) / run.model / run_id
    # The other workers write what the chief writes to a temporary directory (deleted at the end).
    run_dir = chief_dir if chief else Path(tempfile.mkdtemp(prefix=f"tfzoo-{distributed.task_name(dist)}-"))
    try:
        return _train(run, task, dist, run_id, run_dir, chief_dir, chief, models_dir, data_dir, export,
                      extra_callbacks, verbose, profile_batches)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)


def check_distributable(task: tasks.Task) -> None:
    if task.single_worker_reason:
        raise UserError(f"{task.run.model} ({task.run.task}) {task.single_worker_reason}: train it on one worker "
                        "(no --workers, --strategy default)")


def _train(run: RunConfig, task: tasks.Task, dist: tf.distribute.Strategy, run_id: str, run_dir: Path,
           chief_dir: Path, chief: bool, models_dir, data_dir, export: bool, extra_callbacks: tuple,
           verbose: int | str, profile_batches: tuple[int, int] | None) -> RunResult:
    recipe = run.recipe
    keras.utils.set_random_seed(run.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = task.load_splits(data_dir)
    if run.strategy == "multi_worker":  # each worker its share of every batch (the splits are one file each)
        splits = dataclasses.replace(splits, train=distributed.shard_by_data(splits.train),
                                     validation=distributed.shard_by_data(splits.validation),
                                     test=distributed.shard_by_data(splits.test))
    if chief:
        (run_dir / "config.json").write_text(json.dumps({**run.to_json(), "run_id": run_id,
                                                         "splits": splits.names}, indent=2))

    with dist.scope():
        model = run.build()
        task.adapt(model, splits)
        task.compile(model, splits.steps_per_epoch)
        if run.strategy == "multi_worker" and not model.built:
            # Built eagerly on real inputs: under a strategy Keras builds from symbolic ones before fit, which a
            # model that decodes text in its call (seq2seq) cannot take.
            model(splits.sample_batch[0])
        if run.strategy == "multi_worker":
            distributed.build_from_specs(model)
        if dist.num_replicas_in_sync > 1:
            distributed.synchronize_batch_norm(model)

    hp_values = {f"model.{k}": _hp_value(v) for k, v in run.hparams.items()}
    hp_values.update({f"train.{k}": _hp_value(v) for k, v in recipe.items()})
    fitted = task.fit(model, splits, fitting.FitOptions(
        run_dir=run_dir, run_id=run_id, hparams=hp_values, verbose=verbose if chief else 0,
        profile_batches=profile_batches, extra_callbacks=tuple(extra_callbacks),
        chief_backup=None if chief else chief_dir / "backup"))
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
    if chief:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    export_dir = None
    if export:
        exported = model
        if run.strategy == "multi_worker":  # the chief exports a plain copy: distributed variables do not save
            weights = model.get_weights()  # on every worker: reading them may all-reduce
            exported = distributed.plain_copy(run, task, weights, splits) if chief else None
        if chief:
            export_dir = exporter.export_model(exported, task, splits.sample_batch, models_dir,
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
                        help="tf.distribute strategy; multi_worker reads the cluster from $TF_CONFIG (run the same "
                             "command, with the same --run-id, on every host of the cluster)")
    parser.add_argument("--workers", type=positive, metavar="N",
                        help="train on N worker processes of this machine (MultiWorkerMirroredStrategy on free "
                             "loopback ports): the recipe's batch is split between them; the chief's progress is "
                             "shown, and if one worker dies the others are stopped (resume with --run-id)")
    parser.add_argument("--cluster-timeout", type=float, default=distributed.CLUSTER_TIMEOUT, metavar="SECONDS",
                        help="multi-worker: how long a worker waits for the others to start before it gives up "
                             f"(default {distributed.CLUSTER_TIMEOUT})")
    parser.add_argument("--runs-dir", help="runs root (default $TFZOO_RUNS_DIR or ./runs)")
    parser.add_argument("--models-dir", help="export root (default $TFZOO_MODELS_DIR or ./models)")
    parser.add_argument("--data-dir", help="TFDS data dir (default $TFZOO_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--no-export", action="store_true", help="train and evaluate only")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--profile-batches", type=batch_range, metavar="FIRST,LAST",
                        help="profile these training batches (counted from 1 over the run, e.g. 10,20) with "
                             "TensorFlow's profiler: TensorBoard's Profile tab shows the trace (needs the "
                             "tensorboard-plugin-profile package, a dependency). With steps_per_execution above 1 "
                             "(the language models' 10), Keras counts calls: batch N is the N-th call of that "
                             "many steps")


def positive(text: str) -> int:
    """`--workers`: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of workers >= 1, got {text!r}")
    return int(text)


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
    if args.workers:
        return launch_workers(args)
    if args.strategy == "multi_worker":
        return distributed.as_worker(lambda: train_and_report(args))
    return train_and_report(args)


def train_and_report(args: argparse.Namespace) -> int:
    result = train(config_from_arguments(args), run_id=args.run_id, runs_dir=args.runs_dir,
                   models_dir=args.models_dir, data_dir=args.data_dir, export=not args.no_export,
                   profile_batches=args.profile_batches, cluster_timeout=args.cluster_timeout)
    if result.export_dir is None and not args.no_export:  # a multi-worker run's other worker: the chief reports
        return 0
    report(result.run_dir, result.metrics, result.export_dir)
    return 0


def report(run_dir: Path, metrics: dict, export_dir: Path | None) -> None:
    print(f"run: {run_dir}")
    print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test_")
                               and isinstance(v, float)))
    if export_dir:
        print(f"exported: {export_dir}")
    print(f"inspect: tensorboard --logdir {run_dir.parent.parent}")


def launch_workers(args: argparse.Namespace) -> int:
    """`--workers N`: the run on N local worker processes (`pipelines.distributed.launch`)."""
    if args.strategy != "default":
        raise UserError("give --workers N (workers on this machine) or --strategy, not both")
    if args.profile_batches:
        raise UserError("--profile-batches profiles one process: train without --workers to profile")
    run = dataclasses.replace(config_from_arguments(args), strategy="multi_worker")
    check_distributable(tasks.get(run.task)(run))
    if run.dataset in data.list_datasets() or run.dataset.startswith("tfds:"):
        data.builder(run.dataset, args.data_dir)  # a TFDS dataset: prepared once, before the workers read it
    run_id = args.run_id or make_run_id()
    status = distributed.launch(args.workers, {
        "run": run.to_json(), "run_id": run_id, "runs_dir": args.runs_dir, "models_dir": args.models_dir,
        "data_dir": args.data_dir, "export": not args.no_export}, timeout=args.cluster_timeout)
    if status:
        return status
    run_dir = paths.runs_dir(args.runs_dir) / run.model / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    export_dir = None
    if not args.no_export:
        from pipelines import evaluate

        export_dir = evaluate.latest_version_dir(paths.models_dir(args.models_dir) / run.model, None)
    report(run_dir, metrics, export_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.train`."""
    return module_main("python -m pipelines.train", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
