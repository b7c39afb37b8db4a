"""Multi-worker training: real worker processes (`tfzoo train --workers N`, MultiWorkerMirroredStrategy on
loopback ports) against one-worker runs of the same recipe, a worker killed with SIGKILL and the run resumed,
and the errors of a malformed or unreachable cluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipelines import train
from pipelines.errors import UserError
from serving.launch import free_port

pytestmark = pytest.mark.integration
EPOCHS = 6
RECIPE = ["--epochs", str(EPOCHS), "--batch-size", "64", "--learning-rate", "3e-4"]  # loss still falling at the end
# Final losses of a 2-worker and a 1-worker run of the same seed, batch and data differ by float summation
# order and each worker's own dropout and augmentation draws: measured 0.036 apart
# (train loss 1.453 vs 1.489 after 6 epochs, still falling ~0.1 an epoch).
PARITY = 0.1


def tfzoo_train(tmp_path, *args: str, wait: bool = True, **popen):
    """`tfzoo train cnn` on the synthetic data with the test's runs/models dirs; TMPDIR in tmp_path (what the
    workers leave behind shows)."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pipelines.cli", "train", "cnn", "--dataset", "synthetic_fashion_mnist",
               "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), *RECIPE, *args]
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "TFZOO_DATA_DIR": os.environ.get("TFZOO_DATA_DIR", str(tmp_path / "data")), **popen.pop("env", {})}
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, **popen)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("two-workers")
    result = tfzoo_train(tmp, "--workers", "2", "--run-id", "both", env={"TFZOO_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("one-worker")
    return train.train("cnn", dataset="synthetic_fashion_mnist", recipe_overrides={
        "epochs": EPOCHS, "batch_size": 64, "learning_rate": 3e-4}, runs_dir=tmp / "runs", models_dir=tmp / "models",
        data_dir=data_dir, verbose=0)


def test_two_workers_train_one_run_that_only_the_chief_writes(two_workers):
    tmp, result = two_workers
    run_dir = tmp / "runs" / "cnn" / "both"
    assert f"run: {run_dir}" in result.stdout and "exported: " in result.stdout
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.json", "train", "validation",
                                                   "checkpoints"}
    assert not (run_dir / "backup").exists()  # BackupAndRestore removes it after a finished run
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "multi_worker"
    assert [p.name for p in (tmp / "models" / "cnn").iterdir()] == ["1"]  # one export, by the chief
    assert leftovers(tmp) == []  # the other worker's run dir and export are gone
    assert "Epoch 6/6" in result.stdout  # the chief's progress, streamed


def test_two_workers_reach_the_loss_of_one_on_the_same_seed_batch_and_data(two_workers, one_worker):
    tmp, _ = two_workers
    two = json.loads((tmp / "runs" / "cnn" / "both" / "metrics.json").read_text())
    one = one_worker.metrics
    assert two["epochs_this_session"] == one["epochs_this_session"] == EPOCHS
    for key in ("loss", "val_loss", "test_loss"):
        assert abs(two[key] - one[key]) < PARITY, (key, two[key], one[key])
    assert two["test_accuracy"] >= one["test_accuracy"] - 0.05


def test_a_killed_worker_stops_the_run_and_the_same_run_id_resumes_from_the_last_epoch(tmp_path, data_dir,
                                                                                     two_workers):
    env = {"TFZOO_DATA_DIR": str(data_dir)}
    launcher = tfzoo_train(tmp_path, "--workers", "2", "--run-id", "killed", wait=False, env=env)
    metadata = tmp_path / "runs" / "cnn" / "killed" / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 600
    while not (metadata.is_file() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2):
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    workers = [p for p in psutil.Process(launcher.pid).children(recursive=True)
               if '"index": 1' in p.environ().get("TF_CONFIG", "")]
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "worker 1 was killed by SIGKILL; the other workers were stopped" in stderr
    assert "--run-id killed" in stderr
    assert not (tmp_path / "models").exists()  # nothing exported by the interrupted run
    restored = json.loads(metadata.read_text())["epoch"]
    assert 2 <= restored < EPOCHS

    resumed = tfzoo_train(tmp_path, "--workers", "2", "--run-id", "killed", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "cnn" / "killed" / "metrics.json").read_text())
    assert metrics["epochs_this_session"] == EPOCHS - restored
    uninterrupted = json.loads((two_workers[0] / "runs" / "cnn" / "both" / "metrics.json").read_text())
    assert abs(metrics["test_loss"] - uninterrupted["test_loss"]) < PARITY
    assert [p.name for p in (tmp_path / "models" / "cnn").iterdir()] == ["1"]
    assert leftovers(tmp_path) == []


REDUCE = """
import json
import keras, tensorflow as tf
from pipelines import distributed
strategy = distributed.make_strategy(timeout=60)
task = strategy.cluster_resolver.task_id
def per_replica(make):
    return strategy.experimental_distribute_values_from_function(lambda _: make())
loss = strategy.reduce("MEAN", per_replica(lambda: tf.constant(2.0 + 2 * task)), axis=0)  # a scalar log, as Keras
total = strategy.reduce("SUM", per_replica(lambda: tf.fill([3], float(task + 1))), axis=0)
# How tf.distribute's iterator agrees that every worker's data has ended: a plain [1] tensor, summed.
having = strategy.reduce("SUM", tf.constant([task], tf.int64), axis=None)
# Keras builds from the datasets' specs: each pass of fit and evaluate is one pass over the data, none extra.
passes = []
def first(i):  # a pass that reads example 0
    if int(i) == 0:
        passes.append(1)
    return i
def example(i):
    i = tf.reshape(tf.py_function(first, [i], tf.int64), [])
    return tf.fill([4], tf.cast(i % 2, tf.float32)), i % 2
def dataset():  # known cardinality, as the zoo's TFDS splits
    return distributed.shard_by_data(tf.data.Dataset.range(100).map(example).batch(32))
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
distributed.build_from_specs(model)
model.fit(dataset(), epochs=2, verbose=0)
evaluated = model.evaluate(dataset(), verbose=0, return_dict=True)
print(json.dumps({"loss": float(loss), "total": float(total), "having": having.numpy().tolist(),
                  "passes": len(passes), "evaluated": sorted(evaluated)}))
"""


def test_reduce_and_build_as_keras_needs_them_on_two_workers():
    """Scalar logs are averaged (Keras reduces them along an axis they lack), the iterator's count of workers
    with data is all-reduced, and Keras builds from the datasets' specs: no stray iterator, no extra pass."""
    cluster = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    workers = [subprocess.Popen([sys.executable, "-c", REDUCE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(
                                    {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        assert "ran out of data" not in err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["loss"] for r in results] == [3.0, 3.0]  # mean of 2 and 4 on both
    assert [r["total"] for r in results] == [3 * 3.0] * 2  # (1 + 2) summed along the axis of 3 elements
    assert [r["having"] for r in results] == [[1], [1]]  # all-reduced: else the workers' last steps disagree
    assert [r["passes"] for r in results] == [3, 3]  # two epochs and one evaluation
    assert results[0]["evaluated"] == ["accuracy", "loss"]


BATCH_NORM = """
import json
import keras, tensorflow as tf
from pipelines import distributed
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # two replicas, as two workers
result = {}
for synchronized in (False, True):
    with strategy.scope():
        model = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization(momentum=0.0)])
        if synchronized:
            result["layers"] = distributed.synchronize_batch_norm(model)
    shares = strategy.experimental_distribute_values_from_function(  # replica r's share: four times 10 r
        lambda context: tf.fill([4, 1], 10.0 * context.replica_id_in_sync_group))
    tf.function(lambda x: strategy.run(lambda v: model(v, training=True), args=(x,)))(shares)
    result[str(synchronized)] = [float(v.numpy()[0]) for v in
                                 strategy.experimental_local_results(model.layers[0].moving_mean.value)]
print(json.dumps(result))
"""


def test_batch_norm_trained_on_several_replicas_uses_the_global_batchs_statistics():
    """Two replicas, each half of a batch: synchronized, both normalize with (and keep) the whole batch's mean, as
    one worker would; Keras's default keeps each replica's own, and the copies drift apart."""
    out = subprocess.run([sys.executable, "-c", BATCH_NORM], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["layers"] == 1
    assert result["False"] == [0.0, 10.0]  # per replica: each its own share's mean
    assert result["True"] == [5.0, 5.0]  # the global batch's mean on both


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_do_not_outlive_their_launcher(tmp_path, data_dir, how):
    """A launcher stopped by a scheduler (SIGTERM) stops its workers and removes its scratch directory; one
    killed outright takes its workers with it (they would otherwise wait in a collective for ever)."""
    launcher = tfzoo_train(tmp_path, "--workers", "2", "--run-id", "orphans", wait=False,
                           env={"TFZOO_DATA_DIR": str(data_dir)})
    deadline = time.monotonic() + 300
    while len(workers := psutil.Process(launcher.pid).children()) < 2:
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    os.kill(launcher.pid, how)
    launcher.communicate(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []
    if how == signal.SIGTERM:
        assert launcher.returncode == 128 + signal.SIGTERM
        assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("tfzoo-workers-")] == []


def test_a_malformed_or_unreachable_cluster_is_one_line_and_leaves_nothing(tmp_path, data_dir):
    env = {"TFZOO_DATA_DIR": str(data_dir)}
    malformed = tfzoo_train(tmp_path, "--strategy", "multi_worker", "--run-id", "x",
                            env={**env, "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1"]}'})
    assert malformed.returncode == 2
    assert "tfzoo train: error: $TF_CONFIG is not a cluster and a task" in malformed.stderr
    cluster = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # worker 0 is never started
    lonely = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": 1}}
    unreachable = tfzoo_train(tmp_path, "--strategy", "multi_worker", "--run-id", "x", "--cluster-timeout", "5",
                              env={**env, "TF_CONFIG": json.dumps(lonely)})
    assert unreachable.returncode == 2
    assert "tfzoo train: error: worker 1 did not reach the cluster in $TF_CONFIG" in unreachable.stderr
    assert "within 5 s" in unreachable.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_what_cannot_run_on_several_workers_is_refused_before_any_worker_starts(tmp_path):
    parser = train_parser()
    with pytest.raises(UserError, match="dqn .* acts and learns in its own loop"):
        train.run(parser.parse_args(["dqn", "--workers", "2", "--runs-dir", str(tmp_path)]))
    with pytest.raises(UserError, match="seq2seq .* tokenizes its string pairs"):
        train.run(parser.parse_args(["seq2seq", "--workers", "2"]))
    with pytest.raises(UserError, match="--workers N .* or --strategy, not both"):
        train.run(parser.parse_args(["cnn", "--workers", "2", "--strategy", "mirrored"]))
    with pytest.raises(UserError, match="needs --run-id, the same on every worker"):
        train.train("cnn", strategy="multi_worker", runs_dir=tmp_path)
    with pytest.raises(SystemExit):
        parser.parse_args(["cnn", "--workers", "0"])
    assert not (tmp_path / "dqn").exists()


def leftovers(tmp) -> list[str]:
    """tfzoo's temporary directories left in the run's TMPDIR (TFDS leaves an empty `tmp*tfds` of its own)."""
    return [p.name for p in (tmp / "tmp").iterdir() if p.name.startswith("tfzoo-")]


def train_parser():
    import argparse

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser
