"""Vision zoo benchmark: quality, training CPU time and throughput of each vision model, one table.

Each configuration trains its zoo model through `pipelines.train.train` (the one trainer) on its
default dataset's train split, scores the exported SavedModel on the test split with
`pipelines.evaluate.evaluate` (the metric a served model would get), then serves that export with
tfzoo-model-server and counts gRPC `serving_default` predictions per second (batch 1, 4 client
threads, 10 s). CPU minutes are this process's user + system time during training
(`resource.getrusage`), which on a shared machine is fairer than wall time.

    .venv/bin/python bench/vision.py cnn unet      # run these configurations, then rewrite the report
    .venv/bin/python bench/vision.py --list        # configurations and what they set
    .venv/bin/python bench/vision.py --report      # rewrite bench/results/vision.md from recorded runs
    .venv/bin/python bench/vision.py --xla unet    # XLA off vs on: training images per CPU-second

resnet's row is the mean of bench/resnet_seeds.py's 3 seeds (`vision.py resnet` runs that script), never one run.

Every run is recorded in bench/results/vision.json (kept across invocations, one entry per
configuration, the latest run wins); bench/results/vision.md is rendered from all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
RECORD = RESULTS / "vision.json"
XLA_RECORD = RESULTS / "vision-xla.json"
REPORT = RESULTS / "vision.md"
WORK = BENCH / ".vision"
SERVE_SECONDS, SERVE_THREADS = 10.0, 4

sys.path.insert(0, str(REPO))
import resnet_seeds  # noqa: E402  (bench/: resnet's row is the mean of its seeds)

# name -> model, hyperparameter overrides, recipe overrides, the metric and its target (None: no target).
CONFIGS = {
    "cnn": ("cnn", {"dropout": 0.3}, {"epochs": 30, "batch_size": 128, "learning_rate": 2e-3,
                                      "label_smoothing": 0.1, "augment": False}, "accuracy", 0.915),
    "resnet": ("resnet", {"depth": 20}, {"epochs": 30}, "accuracy", 0.945),
    "unet": ("unet", {}, {"epochs": 8}, "mean_iou", 0.90),
    "detector": ("detector", {}, {"epochs": 12}, "map50", 0.85),
    "mobilenet_v2": ("mobilenet_v2", {"weights": "none", "backbone_size": 32}, {"epochs": 1}, "accuracy", None),
}
RESNET_CPU_MINUTES = 60  # the resnet target holds within this much training CPU time
NOTES = {
    "resnet": "the mean over the seeds of bench/resnet_seeds.py (each seed's figures in "
              "bench/results/resnet-seeds.md), the recipe chosen on validation in bench/results/resnet-recipe.md.",
    "mobilenet_v2": "random weights (ImageNet weights cannot be downloaded here), the smallest backbone input "
                    "(32x32) and one epoch: a throughput figure, not a transfer-learning result.",
}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serving_throughput(export_dir: Path, model: str) -> float:
    """gRPC serving_default predictions/s of tfzoo-model-server on `export_dir`, batch 1."""
    import tensorflow as tf

    from serving.client import GrpcClient
    from serving.launch import ModelServerProcess

    loaded = tf.saved_model.load(str(export_dir))
    (name, spec), = loaded.signatures["serving_default"].structured_input_signature[1].items()
    shape = [1, *spec.shape[1:]]
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    count, stop = [0], threading.Event()

    def client(port: int):
        grpc = GrpcClient("127.0.0.1", port)
        while not stop.is_set():
            grpc.predict(model, {name: image})
            count[0] += 1
        grpc.close()

    with ModelServerProcess(model_name=model, model_base_path=str(export_dir.parent), embedded=True) as server:
        GrpcClient("127.0.0.1", server.grpc_port).predict(model, {name: image})
        threads = [threading.Thread(target=client, args=(server.grpc_port,)) for _ in range(SERVE_THREADS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(SERVE_SECONDS)
        stop.set()
        for t in threads:
            t.join()
        return count[0] / (time.perf_counter() - start)


def xla_speed(config: str, steps: int = 15) -> dict:
    """Training images per CPU-second with XLA off and on: `steps` fit steps on one real batch, after a warm-up."""
    import tensorflow as tf

    from pipelines import config as run_config
    from pipelines import tasks

    model_name, hparams, recipe, _, _ = CONFIGS[config]
    run = run_config.resolve(model_name, hparams=hparams, recipe=recipe)
    splits = tasks.get(run.task)(run).load_splits(None)
    batch = next(iter(splits.train))
    images = int(tf.shape(batch[0])[0])
    speeds = {}
    for jit in (False, True):
        model = run.build()
        jit_run = run_config.resolve(model_name, hparams=hparams, recipe={**recipe, "jit_compile": jit})
        tasks.get(run.task)(jit_run).compile(model, splits.steps_per_epoch)
        data = tf.data.Dataset.from_tensors(batch).repeat()
        model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # trace (and compile)
        before = cpu_seconds()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        speeds["on" if jit else "off"] = round(steps * images / (cpu_seconds() - before), 1)
    return speeds


def run(config: str) -> dict:
    """Train, evaluate and serve one configuration; return its record."""
    from pipelines import evaluate, tasks, train

    model, hparams, recipe, metric, target = CONFIGS[config]
    before = cpu_seconds()
    result = train.train(model, overrides=hparams, recipe_overrides=recipe, runs_dir=WORK / "runs",
                         models_dir=WORK / "models", verbose=2)
    train_cpu = cpu_seconds() - before
    scores = evaluate.evaluate(result.export_dir, split=tasks.TEST_SPLIT)
    run_config = json.loads((result.run_dir / "config.json").read_text())
    sets = " ".join(f"--set {k}={v}" for k, v in {**hparams, **recipe}.items())
    return {
        "config": config, "model": model, "dataset": run_config["dataset"], "splits": run_config["splits"],
        "metric": metric, "value": scores[metric], "target": target, "test_examples": scores["examples"],
        "train_cpu_minutes": round(train_cpu / 60, 2),
        "train_wall_minutes": round(result.metrics["train_seconds"] / 60, 2),
        "train_images_per_second": result.metrics["train_examples_per_second"],
        "serving_predictions_per_second": round(serving_throughput(result.export_dir, model), 1),
        "hparams": run_config["hparams"], "recipe": run_config["recipe"],
        "command": f"tfzoo train {model} {sets}".strip() + f"   # or: .venv/bin/python bench/vision.py {config}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": __import__("provenance").git_commit(),
    }


def seeds_record() -> dict | None:
    """resnet's row: the mean of bench/resnet_seeds.py's seeds (trained and tested once each, the same
    pipeline, export and served measurement as `run`), so that its figure is never one lucky seed."""
    import statistics

    seeds = json.loads(resnet_seeds.RECORD.read_text()) if resnet_seeds.RECORD.is_file() else []
    if not seeds:
        return None

    def mean(key: str, digits: int) -> float:
        return round(statistics.fmean(r[key] for r in seeds), digits)

    last = seeds[-1]
    accuracies = [r["test_accuracy"] for r in seeds]
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else float("nan")
    return {
        "config": "resnet", "model": "resnet", "dataset": last["dataset"], "splits": last["splits"],
        "metric": "accuracy", "value": statistics.fmean(accuracies), "target": CONFIGS["resnet"][4],
        "test_examples": last["test_examples"], "train_cpu_minutes": mean("train_cpu_minutes", 2),
        "train_wall_minutes": mean("train_wall_minutes", 2),
        "train_images_per_second": mean("train_images_per_second", 1),
        "serving_predictions_per_second": mean("serving_predictions_per_second", 1),
        "hparams": last["hparams"], "recipe": last["recipe"],
        "command": f"tfzoo train resnet --seed {last['seed']}   # each seed in turn: "
                   ".venv/bin/python bench/resnet_seeds.py",
        "machine": f"{last['cores']} cores, load average at the end of each seed's training "
                   f"{', '.join(str(r['load_average']) for r in seeds)}",
        "date": ", ".join(r["date"] for r in seeds),
        "commit": ", ".join(sorted({r["commit"] for r in seeds})),
        "seeds": f"mean of {len(seeds)} seeds ({', '.join(f'{a:.4f}' for a in accuracies)}; sd {sd:.4f})",
        "seed_count": len(seeds),
    }


def verdict(record: dict) -> str:
    """MET / NOT MET against the target (the resnet target also bounds the training CPU time)."""
    if record["target"] is None:
        return "no target"
    if record.get("seed_count", len(resnet_seeds.SEEDS)) < len(resnet_seeds.SEEDS):
        return f"not judged: {record['seed_count']} of {len(resnet_seeds.SEEDS)} seeds"
    met = record["value"] >= record["target"]
    if record["model"] == "resnet":
        met = met and record["train_cpu_minutes"] <= RESNET_CPU_MINUTES
    return "MET" if met else "NOT MET"


def report(records: dict) -> str:
    """The markdown report of all recorded runs."""
    lines = [
        "# Vision zoo benchmark", "",
        "Written by `bench/vision.py` (see its docstring). Quality is measured on the exported SavedModel",
        "(`pipelines.evaluate`) on the test split named below; CPU minutes are the training process's user +",
        "system time; serving is tfzoo-model-server, gRPC `serving_default`, batch 1, 4 client threads, 10 s,",
        "on the same machine (its cores and load are in each configuration's section below: other jobs on it",
        "slow the wall-clock figures, up to 2x, not the quality).", "",
        "| config | data (test split) | metric | value | target | verdict | train CPU min | train wall min "
        "| train images/s | serving predictions/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records.values():
        target = "-" if r["target"] is None else f"≥ {r['target']}"
        lines.append(f"| {r['config']} | {r['dataset']} ({r['splits']['test']}, {r['test_examples']} examples) "
                     f"| {r['metric']} | {r['value']:.4f} | {target} | {verdict(r)} | {r['train_cpu_minutes']} "
                     f"| {r['train_wall_minutes']} | {r['train_images_per_second']} "
                     f"| {r['serving_predictions_per_second']} |")
    speeds = json.loads(XLA_RECORD.read_text()) if XLA_RECORD.is_file() else {}
    if speeds:
        lines += ["", "## XLA (`jit_compile`) on the CPU", "",
                  "Training images per CPU-second, 15 `fit` steps on one real batch of the configuration's recipe "
                  "after a warm-up (`.venv/bin/python bench/vision.py --xla CONFIG ...`); CPU time, not wall time, "
                  "so that other jobs on the machine matter less.", "",
                  "| config | XLA off | XLA on | on / off |", "|---|---|---|---|"]
        lines += [f"| {c} | {v['off']} | {v['on']} | {v['on'] / v['off']:.2f}x |" for c, v in speeds.items()]
    lines += ["", "## Recipes and commands", ""]
    for r in records.values():
        recipe = r["recipe"]
        lines += [f"### {r['config']} ({r['date']}, {r['machine']}, commit "
                  f"{r.get('commit', 'not recorded: measured before commits were recorded')})", "",
                  f"- command: `{r['command']}`",
                  f"- splits: train `{r['splits']['train']}`, validation `{r['splits']['validation']}`, "
                  f"test `{r['splits']['test']}`",
                  f"- hyperparameters: `{json.dumps(r['hparams'])}`",
                  f"- recipe: `{json.dumps(recipe)}`",
                  *([f"- seeds: {r['seeds']}"] if "seeds" in r else []),
                  *([f"- note: {NOTES[r['config']]}"] if r["config"] in NOTES else []),
                  f"- speed features: XLA jit_compile {'on' if recipe.get('jit_compile') else 'off'}, float32 "
                  "(no mixed precision), tf.data cache + prefetch on", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the named configurations (or none with --report) and rewrite the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help=f"configurations to run: {', '.join(CONFIGS)}")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from recorded runs")
    parser.add_argument("--xla", action="store_true",
                        help="measure training images per CPU-second with XLA off and on for the named configurations")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; known: {', '.join(CONFIGS)} (see --list)")
    if args.list:
        for name, (model, hparams, recipe, metric, target) in CONFIGS.items():
            print(f"{name:14s} {model:14s} {metric:9s} target {target}  hparams {hparams}  recipe {recipe}")
        return 0
    records = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    if args.xla:
        speeds = json.loads(XLA_RECORD.read_text()) if XLA_RECORD.is_file() else {}
        for config in args.configs:
            speeds[config] = xla_speed(config)
            XLA_RECORD.write_text(json.dumps(speeds, indent=2))
            print(config, speeds[config], flush=True)
        args.configs = []
    for config in [] if args.report else args.configs:
        if config == "resnet":  # its row is the mean of bench/resnet_seeds.py's seeds
            resnet_seeds.main([])
            continue
        records[config] = run(config)
        RECORD.write_text(json.dumps(records, indent=2))
        print(json.dumps(records[config], indent=2), flush=True)
    seeds = seeds_record()
    if seeds is not None:
        records["resnet"] = seeds
        RECORD.write_text(json.dumps(records, indent=2))
    REPORT.write_text(report(records))
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
