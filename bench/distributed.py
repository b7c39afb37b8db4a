"""Multi-worker training on one machine: correctness and overhead of MultiWorkerMirroredStrategy, not speed-up.

For cnn and resnet on Fashion-MNIST, three runs of the same recipe and seed through the command line: the
plain trainer (one process, TensorFlow's threads on every core), `--workers 1` and `--workers 2`, each worker
held to one thread (TF_NUM_INTRAOP_THREADS=1, TF_NUM_INTEROP_THREADS=1), so two workers use the two cores one
process would. Reported: train examples/s, test accuracy, CPU minutes. Then the all-reduce alone: two worker
processes all-reduce a float32 tensor the size of each model's gradients, timed per call (median and range of
3 rounds of 100). Then recovery: two workers train cnn, worker 1 is killed with SIGKILL after the second epoch's
backup; the time until every worker is stopped, and from the restart until the chief trains again (TensorFlow
start, cluster, restore of the backup), 3 times.

    .venv/bin/python bench/distributed.py                 # ~25 CPU minutes on 2 cores
    .venv/bin/python bench/distributed.py --epochs cnn=3 resnet=1
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(BENCH))  # after the repository: bench/serving.py must not shadow the serving package
from provenance import children_cpu, git_commit  # noqa: E402

RESULTS = BENCH / "results" / "distributed.md"
RECORD = BENCH / "results" / "distributed.json"
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
CONFIGS = {"one process (all cores)": ([], {}), "--workers 1 (1 thread)": (["--workers", "1"], ONE_THREAD),
           "--workers 2 (1 thread each)": (["--workers", "2"], ONE_THREAD)}


def tfzoo_train(model: str, args: list[str], env: dict, work: Path, run_id: str) -> tuple[list[str], dict, float]:
    """`tfzoo train` as a subprocess: (its command, metrics.json, CPU minutes)."""
    command = ["train", model, *args, "--run-id", run_id, "--runs-dir", str(work / "runs"), "--models-dir",
               str(work / "models"), "--no-export"]
    before = children_cpu()
    subprocess.run([sys.executable, "-m", "pipelines.cli", *command], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    metrics = json.loads((work / "runs" / model / run_id / "metrics.json").read_text())
    return command, metrics, round((children_cpu() - before) / 60, 2)


ALL_REDUCE = """
import json, os, statistics, sys, time
import tensorflow as tf
from pipelines import distributed
strategy = distributed.make_strategy()
size, rounds, calls = int(sys.argv[1]), 3, 100
x = tf.ones([size])
@tf.function
def step():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", x))
for _ in range(10):
    step()
ms = []
for _ in range(rounds):
    started = time.perf_counter()
    for _ in range(calls):
        step()
    ms.append(1000 * (time.perf_counter() - started) / calls)
if strategy.cluster_resolver.task_id == 0:
    print(json.dumps(ms))
"""


def all_reduce_ms(size: int) -> list[float]:
    """Per-call ms of a `size`-float32 all-reduce between two one-thread worker processes (3 rounds of 100)."""
    from serving.launch import free_port

    cluster = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    workers = [subprocess.Popen([sys.executable, "-c", ALL_REDUCE, str(size)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **ONE_THREAD,
                                                "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {
                                                    "type": "worker", "index": i}})}) for i in range(2)]
    out = [w.communicate(timeout=600)[0] for w in workers]
    return json.loads(out[0].strip().splitlines()[-1])


def recovery(work: Path, attempt: int) -> dict:
    """Kill worker 1 of a 2-worker cnn run after its second epoch's backup; time the stop and the restart."""
    import psutil

    run_id = f"recovery-{attempt}"
    command = [sys.executable, "-m", "pipelines.cli", "train", "cnn", "--workers", "2", "--epochs", "4", "--run-id",
               run_id, "--runs-dir", str(work / "runs"), "--no-export"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **ONE_THREAD}
    metadata = work / "runs" / "cnn" / run_id / "backup" / "training_metadata.json"
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    while not (metadata.is_file() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2):
        if launcher.poll() is not None:
            raise RuntimeError(launcher.stderr.read())
        time.sleep(0.05)
    [victim] = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                if '"index": 1' in p.environ().get("TF_CONFIG", "")]
    killed = time.perf_counter()
    os.kill(victim.pid, signal.SIGKILL)
    launcher.communicate(timeout=300)
    stopped = time.perf_counter() - killed
    restored = json.loads(metadata.read_text())["epoch"]
    restarted = time.perf_counter()
    resumed = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    training = None
    for line in resumed.stdout:  # the chief's progress: Keras prints "Epoch k/4" as the resumed epoch starts
        if training is None and re.match(rf"Epoch {restored + 1}/4", line):
            training = time.perf_counter() - restarted
    resumed.wait(timeout=600)
    metrics = json.loads((work / "runs" / "cnn" / run_id / "metrics.json").read_text())
    return {"stop_s": round(stopped, 2), "restart_to_training_s": round(training, 2), "restored_epoch": restored,
            "epochs_after_restart": metrics["epochs_this_session"], "test_accuracy": metrics["test_accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", nargs="*", default=["cnn=3", "resnet=1"], metavar="MODEL=N",
                        help="models and their epochs (default cnn=3 resnet=1)")
    parser.add_argument("--report", action="store_true",
                        help=f"rewrite {RESULTS.name} from the last run's {RECORD.name} (no measurement)")
    args = parser.parse_args(argv)
    if args.report:
        record = json.loads(RECORD.read_text())
        RESULTS.write_text(report(record["rows"], record["all_reduce"], record["recovery"], record))
        return 0
    from pipelines import config

    started, commit = time.perf_counter(), git_commit()
    work = Path(tempfile.mkdtemp(prefix="tfzoo-distributed-bench-"))
    rows = []
    for item in args.epochs:
        model, _, epochs = item.partition("=")
        for name, (extra, env) in CONFIGS.items():
            command, metrics, cpu = tfzoo_train(model, ["--epochs", epochs, *extra], env, work,
                                                f"{name.split()[0].strip('-')}-{len(rows)}")
            rows.append({"model": model, "config": name, "command": "tfzoo " + " ".join(command[:-7]),
                         "examples_per_s": metrics["train_examples_per_second"],
                         "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
                         "train_loss": metrics["loss"], "cpu_minutes": cpu})
            print(json.dumps(rows[-1]), flush=True)
    reduces = {}
    for model in ("cnn", "resnet"):
        built = config.resolve(model).build()
        size = sum(int(v.numpy().size) for v in built.trainable_variables)
        reduces[model] = {"floats": size, "ms": [round(m, 3) for m in all_reduce_ms(size)]}
        print(model, reduces[model], flush=True)
    recoveries = [recovery(work, attempt) for attempt in range(3)]
    meta = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": round((time.perf_counter() - started) / 60, 1), "argv": args.epochs}
    RECORD.write_text(json.dumps({"rows": rows, "all_reduce": reduces, "recovery": recoveries, **meta}, indent=2))
    RESULTS.write_text(report(rows, reduces, recoveries, meta))
    print(RESULTS.read_text())
    return 0


def report(rows: list[dict], reduces: dict, recoveries: list[dict], meta: dict) -> str:
    lines = ["# Multi-worker training on one machine (MultiWorkerMirroredStrategy)", "",
             f"Command: `.venv/bin/python bench/distributed.py --epochs {' '.join(meta['argv'])}` · commit "
             f"{meta['commit']} · {meta['date']} · {os.cpu_count()} cores · took {meta['minutes']} min", "",
             "Fashion-MNIST: train = train[:90%], test = `test` (10,000 images), each model's recipe and seed 0, "
             "fewer epochs than the recipe (the point is the same result and the overhead, not a figure of merit). "
             "One run per cell (each is minutes of 2 cores); the all-reduce and recovery are repeated.", "",
             "BatchNorm is synchronized across the workers (`pipelines.distributed.synchronize_batch_norm`).", "",
             "Parity is read in the train loss: after one epoch of resnet's 30-epoch schedule (warm-up just ended, "
             "learning rate at its peak) its test accuracy swings by tens of points between runs that reach the "
             "same train loss, BatchNorm's moving statistics not yet settled; cnn's three runs agree in both.", "",
             "| model | run | train examples/s | last epoch's train loss | test loss | test accuracy | CPU min | "
             "command |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['examples_per_s']:,.0f} | {r['train_loss']:.4f} | "
                     f"{r['test_loss']:.4f} | {r['test_accuracy']:.4f} | {r['cpu_minutes']} | `{r['command']}` |")
    lines += ["", "## All-reduce per step", "",
              "Two one-thread worker processes on 127.0.0.1 all-reduce (sum) one float32 tensor the size of the "
              "model's trainable weights (what a step's gradients are): ms per call, median (range) of 3 rounds of "
              "100 calls.", ""]
    for model, r in reduces.items():
        lines.append(f"- {model} ({r['floats']:,} floats, {4 * r['floats'] / 1e6:.2f} MB): "
                     f"{statistics.median(r['ms']):.2f} ms ({min(r['ms']):.2f}-{max(r['ms']):.2f})")
    stop = [r["stop_s"] for r in recoveries]
    back = [r["restart_to_training_s"] for r in recoveries]
    lines += ["", "## Recovery after a killed worker", "",
              "`tfzoo train cnn --workers 2 --epochs 4` (one thread each); worker 1 killed with SIGKILL after the "
              "second epoch's backup; the same command with the same --run-id restarted at once. Three times.", "",
              f"- kill -> every worker stopped: median {statistics.median(stop):.1f} s (range {min(stop):.1f}-"
              f"{max(stop):.1f})",
              f"- restart -> the chief training the next epoch (TensorFlow start, cluster, backup restored): median "
              f"{statistics.median(back):.1f} s (range {min(back):.1f}-{max(back):.1f})",
              "- per attempt: " + "; ".join(f"restored epoch {r['restored_epoch']}, {r['epochs_after_restart']} "
                                             f"epochs after the restart, test accuracy {r['test_accuracy']:.4f}"
                                             for r in recoveries)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
