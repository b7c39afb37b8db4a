"""TensorBoard: the real `tensorboard` server reads a finished run's scalars, images and hparams."""
import subprocess
import sys
import time

import pytest
import requests
import tensorboard_server
from tensorboard_server import get_json, wait_for_run

from serving.launch import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tensorboard(trained_cnn):
    with tensorboard_server.serve(trained_cnn.run_dir.parent.parent) as url:
        yield url, trained_cnn.run_dir.name


def scalars(url: str, run: str, tag: str) -> list[float]:
    response = requests.get(f"{url}/data/plugin/scalars/scalars", params={"run": run, "tag": tag}, timeout=10)
    response.raise_for_status()
    return [value for _, _, value in response.json()]


def test_tensorboard_serves_train_and_validation_loss_accuracy_and_learning_rate(tensorboard, trained_cnn):
    url, run_id = tensorboard
    deadline = time.monotonic() + 60
    while f"cnn/{run_id}/validation" not in requests.get(f"{url}/data/runs", timeout=5).json():
        assert time.monotonic() < deadline, "TensorBoard never listed the validation run"
        time.sleep(1)
    train_loss = scalars(url, f"cnn/{run_id}/train", "epoch_loss")
    val_accuracy = scalars(url, f"cnn/{run_id}/validation", "epoch_accuracy")
    assert len(train_loss) == 2 and len(val_accuracy) == 2
    assert val_accuracy[-1] == pytest.approx(trained_cnn.metrics["val_accuracy"], rel=1e-5)
    learning_rate = scalars(url, f"cnn/{run_id}/train", "epoch_learning_rate")
    assert learning_rate[1] < learning_rate[0]  # cosine decay


def test_tensorboard_shows_sample_images_and_hparams(tensorboard):
    url, run_id = tensorboard
    tags = requests.get(f"{url}/data/plugin/images/tags", timeout=10).json()
    assert "samples" in tags[f"cnn/{run_id}/validation"]
    response = requests.post(f"{url}/data/plugin/hparams/experiment",
                             json={"experimentName": ""}, headers={"X-XSRF-Protected": "1"}, timeout=10)
    names = {h["name"] for h in response.json()["hparamInfos"]}
    assert {"model.dropout", "train.learning_rate", "train.epochs"} <= names


def test_tensorboard_captures_a_profile_of_served_requests_from_the_model_servers_grpc_port(trained_cnn, tmp_path):
    """As TF Serving's guide does it (Capture Profile at the server's gRPC address): the trace holds the model's
    TensorFlow ops, and the real TensorBoard's profile plugin lists the capture; a capture while no request
    arrives gets TensorFlow's client message and leaves the server serving."""
    import threading

    import numpy as np
    import tensorflow as tf

    from serving.client import GrpcClient
    from serving.launch import ModelServerProcess

    image = {"image": np.zeros((1, 28, 28, 1), np.float32)}
    with ModelServerProcess(embedded=True, model_name="cnn",
                            model_base_path=str(trained_cnn.export_dir.parent)) as server:
        client, done = GrpcClient("127.0.0.1", server.grpc_port), threading.Event()

        def send():
            while not done.is_set():
                client.predict("cnn", image)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            tf.profiler.experimental.client.trace(f"grpc://127.0.0.1:{server.grpc_port}", str(tmp_path / "logs"), 2000)
        finally:
            done.set()
            sender.join()
        with pytest.raises(RuntimeError, match="No trace event was collected"):
            tf.profiler.experimental.client.trace(f"grpc://127.0.0.1:{server.grpc_port}", str(tmp_path / "idle"),
                                                  500, num_tracing_attempts=1)
        assert client.predict("cnn", image)["probabilities"].shape == (1, 10)  # still serving
    traces = list((tmp_path / "logs").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1
    data = traces[0].read_bytes()
    assert b"Conv2D" in data and b"MatMul" in data  # the cnn's ops, run for the requests during the capture
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "logs"),
                             "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline and not runs:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                runs = requests.get(f"http://127.0.0.1:{port}/data/plugin/profile/runs", timeout=2).json()
            except (requests.ConnectionError, ValueError):
                time.sleep(0.5)
        assert runs == [traces[0].parent.name]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serving_logs_of_a_known_mix_of_requests_read_back_through_tensorboard(trained_cnn, tmp_path):
    """--tensorboard_logdir: 20 answered requests and 5 refused ones to cnn over REST; the real TensorBoard reads
    back the counts, the error code, latency, the predicted-class histogram, the input pixel histogram and the
    drift from the training labels, which must equal the total variation computed here from the model's own
    answers and the label shares its model card records."""
    import json as json_lib

    import numpy as np
    import tensorflow as tf

    from serving.launch import ModelServerProcess
    from serving.server.tensorboard_log import total_variation

    images = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    card = json_lib.loads((trained_cnn.export_dir / "assets.extra" / "model_card.json").read_text())
    shares = np.array(card["label_distribution"]["shares"])
    assert card["label_distribution"]["split"] == "train[:90%]" and abs(shares.sum() - 1) < 1e-5
    predicted = tf.saved_model.load(str(trained_cnn.export_dir)).signatures["serving_default"](
        image=tf.constant(images))["probabilities"].numpy().argmax(axis=1)
    expected_drift = total_variation(np.bincount(predicted, minlength=10) / 20, shares)
    logdir = tmp_path / "serving"
    with ModelServerProcess(embedded=True, model_name="cnn", model_base_path=str(trained_cnn.export_dir.parent),
                            extra_args=[f"--tensorboard_logdir={logdir}",
                                        "--tensorboard_log_interval_seconds=3600"]) as server:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/cnn:predict"
        for image in images:
            assert requests.post(url, json={"instances": image[None].tolist()}, timeout=30).ok
        for _ in range(5):
            assert requests.post(url, json={"instances": [[1.0, 2.0]]}, timeout=30).status_code == 400
    # One interval (stopping the server writes it), run "cnn/<version>".
    run = f"cnn/{trained_cnn.export_dir.name}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                             "--host", "127.0.0.1", "--load_fast", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if run in requests.get(f"{base}/data/runs", timeout=2).json():
                    break
            except (requests.ConnectionError, ValueError):
                pass
            time.sleep(0.5)
        assert scalars(base, run, "requests") == [25.0]
        assert scalars(base, run, "errors/INVALID_ARGUMENT") == [5.0]
        assert scalars(base, run, "latency_ms/p50")[0] > 0
        assert scalars(base, run, "drift/total_variation") == pytest.approx([expected_drift], abs=1e-5)
        wanted, tags = {"outputs/predicted_class", "inputs/pixel_mean", "inputs/pixel_std"}, {}
        while time.monotonic() < deadline and not wanted <= set(tags):  # TensorBoard reads the file in steps
            tags = requests.get(f"{base}/data/plugin/histograms/tags", timeout=10).json().get(run, {})
            time.sleep(0.5)
        assert wanted <= set(tags)
        images_tags = requests.get(f"{base}/data/plugin/images/tags", timeout=10).json()[run]
        assert "class_distribution" in images_tags
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_serving_logdir_that_cannot_be_written_is_a_startup_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "serving.server", f"--model_base_path={tmp_path}",
                             "--port=0", f"--tensorboard_logdir={blocker / 'logs'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and f"--tensorboard_logdir {blocker / 'logs'} cannot be written" in result.stderr


def test_each_epoch_shows_the_validation_confusion_matrix_and_per_class_pr_curves(tensorboard, trained_cnn,
                                                                                   data_dir):
    """TensorFlow's image-summaries guide draws a confusion matrix for Fashion-MNIST; the PR curves plugin shows
    one curve per class. Both come from the whole validation pass itself (the ClassifierCurves metric)."""
    import numpy as np

    from pipelines import tasks

    url, run_id = tensorboard
    run, names = f"cnn/{run_id}/validation", list(trained_cnn.config.labels)
    splits = tasks.get(trained_cnn.config.task)(trained_cnn.config).load_splits(data_dir)
    labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in splits.validation])
    images = get_json(url, "/data/plugin/images/images", run=run, tag="confusion_matrix")
    assert [image["step"] for image in images] == [0, 1]
    assert set(get_json(url, "/data/plugin/pr_curves/tags")[run]) == {f"{name}/pr_curves" for name in names}
    confident = 0
    for index, name in enumerate(names):
        entries = get_json(url, "/data/plugin/pr_curves/pr_curves", run=run, tag=f"{name}/pr_curves")[run]
        assert [entry["step"] for entry in entries] == [0, 1]
        last = entries[-1]
        # at threshold 0 every validation example is called positive: TP = the class's examples, FP = the others
        assert last["true_positives"][0] == np.sum(labels == index)
        assert last["false_positives"][0] == np.sum(labels != index)
        assert last["true_positives"] == sorted(last["true_positives"], reverse=True)  # fewer as it rises
        if len(last["true_positives"]) > 51:
            confident += last["true_positives"][51]  # true-class probability > 0.51: an argmax, a right answer
    correct = round(trained_cnn.metrics["val_accuracy"] * len(labels))
    assert confident <= correct
    precision = np.asarray([get_json(url, "/data/plugin/pr_curves/pr_curves", run=run, tag=f"{n}/pr_curves")[run][-1]
                            ["precision"][0] for n in names])
    assert np.allclose(precision, np.bincount(labels, minlength=len(names)) / len(labels), atol=1e-6)


def test_the_projector_shows_penultimate_features_with_labels_and_a_sprite(tensorboard, trained_cnn):
    import numpy as np

    url, run_id = tensorboard
    run = f"cnn/{run_id}/embeddings"
    wait_for_run(url, "/data/plugin/projector/runs", run)
    config = get_json(url, "/data/plugin/projector/info", run=run)
    (embedding,) = config["embeddings"]
    rows = requests.get(f"{url}/data/plugin/projector/metadata", params={"run": run, "name": embedding["tensorName"]},
                        timeout=30).text.strip().split("\n")
    assert rows[0] == "label\tpredicted" and {r.split("\t")[0] for r in rows[1:]} <= set(trained_cnn.config.labels)
    tensor = requests.get(f"{url}/data/plugin/projector/tensor", params={"run": run, "name": embedding["tensorName"]},
                          timeout=30).content
    vectors = np.frombuffer(tensor, np.float32).reshape(len(rows) - 1, -1)
    assert vectors.shape[1] == 64 and np.std(vectors) > 0  # cnn's Dense(64) features, one row per image
    sprite = requests.get(f"{url}/data/plugin/projector/sprite_image", params={"run": run,
                          "name": embedding["tensorName"]}, timeout=30)
    assert sprite.status_code == 200 and sprite.content[:4] == b"\x89PNG"
    assert embedding["sprite"]["singleImageDim"] == [28, 28]


def test_profile_batches_capture_a_training_trace_for_the_profile_tab(tensorboard, trained_cnn):
    """`tfzoo train ... --profile-batches 2,3` (trained_cnn): the trace of those steps, with the model's ops,
    listed by the real TensorBoard's profile plugin."""
    url, _ = tensorboard
    traces = list((trained_cnn.run_dir / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and b"Conv2D" in traces[0].read_bytes()
    deadline, runs = time.monotonic() + 60, []
    while not any(traces[0].parent.name in r for r in runs):
        assert time.monotonic() < deadline, f"the profile plugin lists {runs}"
        time.sleep(1)
        runs = get_json(url, "/data/plugin/profile/runs")
