"""Training on several workers: `tf.distribute.MultiWorkerMirroredStrategy` under Keras 3's `fit`.

    tfzoo train cnn --workers 2                       # N local worker processes on free loopback ports
    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        tfzoo train cnn --strategy multi_worker       # on each host of a real cluster, its own task index

Every worker runs the same trainer: the model and optimizer are mirrored, each train batch of the recipe's
(global) batch size is split between the workers (tf.data's `AutoShardPolicy.DATA`: every worker reads the
pipeline, keeps its share of the examples, and the batch is re-batched to batch/N per worker), and gradients are
all-reduced every step, so the learning-rate schedule counts global steps exactly as on one machine. Only the
chief (worker 0, or the `chief` task) writes the run directory, TensorBoard logs, checkpoints, `metrics.json`
and the export; the others write theirs to a temporary directory, deleted at the end (TensorFlow's guide does
the same: saving may run collective ops every worker must join). The runs directory must be shared by the
workers (one machine, or a shared volume): after an interruption, every worker restores the chief's backup.

Keras 3's TensorFlow trainer mishandles two things under this strategy (keras-team/keras#20585). At the start of
every `fit` and `evaluate` it takes one batch from a new iterator of the dataset, all-reduces it whole (text, which
no all-reduce sums, and partial batches of different sizes abort it) and leaves that iterator behind while a second
one reads the pass: over a `.cache()`d split the two raced, and an evaluation ended early on 82% of the test split
(seen in bench/distributed.py). `build_from_specs` makes Keras build from the dataset's element spec instead, so no
batch is taken. And its scalar logs are reduced along an axis they do not have: `MultiWorkerStrategy` reduces a
scalar without one; nothing else differs from TensorFlow's strategy.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf
from typing_extensions import override

from pipelines.errors import UserError

CLUSTER_TIMEOUT = 300  # seconds a worker waits for the others to start
LAUNCHER_PID = "TFZOO_LAUNCHER_PID"  # set by `launch` in its workers' environment
WORKER_JOBS = ("chief", "worker")


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TensorFlow's MultiWorkerMirroredStrategy with `reduce` as Keras 3's trainer calls it (see the module doc)."""

    @override
    def reduce(self, reduce_op, value, axis):
        local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else tf.convert_to_tensor(value)
        return super().reduce(reduce_op, value, axis if local.shape.rank else None)


def build_from_specs(model: keras.Model) -> None:
    """Make Keras's trainer build `model`'s metrics and losses from each dataset's element spec (shapes and
    dtypes, batch dimension unknown) rather than from a batch it takes from a new iterator (see the module doc)."""
    original = model._maybe_symbolic_build

    def build(iterator=None, data_batch=None):
        if data_batch is None and iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        return original(data_batch=data_batch)

    model._maybe_symbolic_build = build


def synchronize_batch_norm(model: keras.Model) -> int:
    """Every BatchNormalization layer of `model` normalizes a training batch with the statistics of the whole
    global batch (Keras's `synchronized=True`: sums all-reduced between the replicas), as one worker training on
    that batch would; the number of layers changed. Otherwise each replica normalizes its share alone, and since
    Keras 3 creates the moving statistics without an aggregation, each replica's copy drifts apart from the
    others' (the chief exports its own)."""
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def cluster_config(environ=os.environ) -> dict:
    """$TF_CONFIG, checked: a cluster of chief/worker addresses and this process's task in it."""
    text = environ.get("TF_CONFIG")
    example = ('{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}')
    if not text:
        raise UserError(f"--strategy multi_worker reads the cluster from $TF_CONFIG, which is not set; e.g. "
                        f"TF_CONFIG='{example}' (or train on this machine's workers with --workers N)")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        addresses = {job: list(cluster[job]) for job in cluster}
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"$TF_CONFIG is not a cluster and a task ({type(e).__name__}: {e}); expected e.g. "
                        f"{example}") from None
    if kind not in WORKER_JOBS or kind not in addresses or not 0 <= index < len(addresses[kind]):
        raise UserError(f"$TF_CONFIG's task {task} is not one of its cluster's {sorted(addresses)} tasks "
                        f"(type chief or worker, index counted from 0)")
    for job, hosts in addresses.items():
        for host in hosts:
            if not isinstance(host, str) or not host.rpartition(":")[2].isdigit():
                raise UserError(f"$TF_CONFIG: {job} address {host!r} is not HOST:PORT")
    return config


def make_strategy(timeout: float = CLUSTER_TIMEOUT) -> MultiWorkerStrategy:
    """The strategy of the cluster in $TF_CONFIG; a worker that cannot reach the others within `timeout`
    seconds is a UserError (TensorFlow's default is to wait for them for an hour)."""
    # TensorFlow's coordination service, configured as the strategy would, with a registration deadline: the
    # strategy then raises DeadlineExceeded (a Python watchdog thread cannot fire: the wait holds the GIL).
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    config = cluster_config()
    task, cluster = config["task"], tf.train.ClusterSpec(config["cluster"])
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
                          for job in WORKER_JOBS if job in cluster.jobs],
        cluster_register_timeout_in_ms=int(timeout * 1000))
    try:
        return MultiWorkerStrategy()
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
        raise UserError(f"{task['type']} {task['index']} did not reach the cluster in $TF_CONFIG "
                        f"({json.dumps(config['cluster'])}) within {timeout:.0f} s ({type(e).__name__}): start every "
                        "task listed there, and check the addresses and that the ports are open") from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run (one machine: always)."""
    return strategy.extended.should_checkpoint


def task_name(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{resolver.task_type}{resolver.task_id}" if resolver and resolver.task_type else "local"


class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
    """A non-chief worker's BackupAndRestore: restores from the chief's backup (so every worker resumes at the
    same epoch with the same weights) and saves its own, identical, state to its temporary directory."""

    def __init__(self, chief_backup: Path, own_backup: Path):
        # Two copies, as the chief keeps (pipelines.fitting): a restore falls back to the previous one alike.
        super().__init__(str(own_backup), double_checkpoint=True)
        self.chief = keras.callbacks.BackupAndRestore(str(chief_backup), double_checkpoint=True)

    @override
    def on_train_begin(self, logs=None):
        self.chief.set_model(self.model)
        self.chief.on_train_begin(logs)


def shard_by_data(dataset: tf.data.Dataset | None) -> tf.data.Dataset | None:
    """`dataset` split between workers example by example (each keeps every N-th example of the same order):
    the pipelines' sources are TFDS splits of one file, too few for file sharding."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# --- the local launcher -----------------------------------------------------------------------------------------


def launch(workers: int, worker_config: dict, *, timeout: float = CLUSTER_TIMEOUT) -> int:
    """Run `workers` trainer processes on free loopback ports, each with its TF_CONFIG, training the run in
    `worker_config` (`python -m pipelines.distributed CONFIG`). The chief's output is streamed; the others'
    go to log files. When one fails, the others are stopped and its last lines are shown. The exit status:
    0, or the failed worker's."""
    from serving.launch import free_port

    ports = [free_port() for _ in range(workers)]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    scratch = Path(tempfile.mkdtemp(prefix="tfzoo-workers-"))
    config_path = scratch / "run.json"
    config_path.write_text(json.dumps({**worker_config, "cluster_timeout": timeout}))
    processes, logs = [], []
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        for index in range(workers):
            # Each worker's temporary files in the launcher's scratch directory: removed even after a SIGKILL.
            (scratch / f"tmp{index}").mkdir()
            env = {**os.environ, "TMPDIR": str(scratch / f"tmp{index}"),
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            log = None if index == 0 else open(scratch / f"worker{index}.log", "wb")  # noqa: SIM115 (closed below)
            logs.append(log)
            processes.append(subprocess.Popen([sys.executable, "-m", "pipelines.distributed", str(config_path)],
                                              env={**env, LAUNCHER_PID: str(os.getpid())}, stdout=log,
                                              stderr=subprocess.STDOUT if log else None))
        while True:
            codes = [p.poll() for p in processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                # The cause: a worker killed by a signal, rather than the others failing on their lost peer.
                first = next((i for i in failed if codes[i] < 0), failed[0])
                stop(processes)
                how = (f"was killed by {signal.Signals(-codes[first]).name}" if codes[first] < 0
                       else f"exited with status {codes[first]}")
                tail = "" if first == 0 else _tail(scratch / f"worker{first}.log")
                print(f"tfzoo train: error: worker {first} {how}; the other workers were stopped.{tail} Run the "
                      f"same command with --run-id {worker_config['run_id']} to resume from the last completed "
                      "epoch.", file=sys.stderr, flush=True)
                return codes[first] if codes[first] > 0 else 1
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (a job scheduler, `timeout`, `kill`)
        stop(processes)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        for log in logs:
            if log:
                log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _exit_on_signal(signum, frame) -> None:  # noqa: ARG001 (a signal handler's signature)
    raise SystemExit(128 + signum)


def die_with_launcher() -> None:
    """In a launched worker, first thing: the kernel sends it SIGKILL when the launcher dies, however it dies
    (Linux's PR_SET_PDEATHSIG; a worker waiting in a collective for its lost peers would otherwise wait for ever).
    Set here rather than between fork and exec, which is unsafe in a process with threads; a launcher that died
    before this ran is seen as a changed parent."""
    launcher = os.environ.pop(LAUNCHER_PID, None)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(launcher):
        os._exit(1)


def stop(processes: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every process still running, SIGKILL those still there after `grace` seconds."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: Path, lines: int = 12) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    kept = [line for line in text if not line.startswith(("I0000", "W0000", "WARNING: All log"))][-lines:]
    return ("\nIts last lines:\n  " + "\n  ".join(kept) + "\n") if kept else ""


def as_worker(work: Callable[[], int]) -> int:
    """`work()` as one worker of a cluster: a user error is one line, and a failed worker leaves at once
    (os._exit) with status 2 or 1: its interpreter would otherwise wait at exit for the cluster's shutdown
    barrier, which the workers still training never reach."""
    from pipelines.errors import user_errors

    try:
        status = user_errors(lambda _: work(), None, "tfzoo train")
    except BaseException:  # noqa: BLE001 (any failure: shown, then the process ends)
        traceback.print_exc()
        status = 1
    if status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return 0


def worker_main(config_path: str) -> int:
    """One launched worker: the run in `config_path` under the cluster in $TF_CONFIG."""
    die_with_launcher()
    from pipelines import train
    from pipelines.config import RunConfig

    spec = json.loads(Path(config_path).read_text())

    def work() -> int:
        train.train(RunConfig.from_json(spec["run"]), run_id=spec["run_id"], runs_dir=spec["runs_dir"],
                    models_dir=spec["models_dir"], data_dir=spec["data_dir"], export=spec["export"],
                    cluster_timeout=spec["cluster_timeout"])
        return 0

    return as_worker(work)


def plain_copy(run, task, weights: list, splits) -> keras.Model:
    """A model of no strategy holding `weights` (the trained model's `get_weights()`, which every worker
    reads: reading may all-reduce): what the chief exports, as SavedModel signatures that read distributed
    variables do not save. Built and adapted on the train split as in training."""
    copy = run.build()
    task.adapt(copy, splits)
    copy.set_weights(weights)
    return copy


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
