"""Reinforcement learning: tiny agents trained on gymnasium, exported, served, and played through the server.

`q_learning` learns CliffWalking (Sutton & Barto's example 6.6: Q-learning's greedy path is the optimal one
along the cliff, return -13; SARSA's the safe one, -17), `dqn` learns CartPole in 5,000 steps (a policy that
learned nothing scores about 9 greedily and 22 at random). Both are served by one real model server and
played over REST and gRPC by `tfzoo play`, whose every action must be the exported policy's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from pipelines import cli, envs, evaluate, play, train
from pipelines import export as exporter
from serving import config
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.launch import ModelServerProcess
from tests import tensorboard_server
from tests.random_tensors import assert_random_tensors_never_break

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent

CLIFF = {"epochs": 2, "steps_per_epoch": 5_000, "eval_episodes": 5, "test_episodes": 10, "learning_rate": 0.5,
         "exploration_fraction": 0.3, "exploration_final_eps": 0.1}
CARTPOLE = {"epochs": 2, "steps_per_epoch": 2_500, "learning_starts": 500, "train_frequency": 50,
            "gradient_steps": 25, "buffer_size": 5_000, "exploration_fraction": 0.3, "target_update_interval": 50,
            "eval_episodes": 3, "test_episodes": 5, "learning_rate": 1e-3}
NOTHING_LEARNED = 25.0  # CartPole: a random policy's mean return is about 22, a constant action's about 9


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rl")
    return root / "runs", root / "models"


@pytest.fixture(scope="module")
def cliff(roots):
    runs, models = roots
    return train.train("q_learning", dataset="CliffWalking-v1", recipe_overrides=CLIFF, runs_dir=runs,
                       models_dir=models, verbose=0)


@pytest.fixture(scope="module")
def cartpole(roots):
    runs, models = roots
    return train.train("dqn", dataset="CartPole-v1", overrides={"hidden_units": (64, 64)},
                       recipe_overrides=CARTPOLE, runs_dir=runs, models_dir=models, verbose=0)


@pytest.fixture(scope="module")
def server(roots, cliff, cartpole):
    del cliff, cartpole  # exported under the models root
    _, models = roots
    with ModelServerProcess(embedded=True,
                            extra_args=[f"--model_config_file={config.write_models_config(models)}"]) as process:
        yield process


def test_q_learning_walks_the_cliff_edge_and_sarsa_the_safe_path(cliff, roots):
    assert cliff.metrics["test_return_mean"] == -13.0  # the shortest path, along the cliff
    sarsa = train.train("q_learning", dataset="CliffWalking-v1", recipe_overrides={**CLIFF, "algorithm": "sarsa"},
                        runs_dir=roots[0], export=False, verbose=0)
    assert sarsa.metrics["test_return_mean"] == -17.0  # on-policy under exploration: away from the edge
    assert cliff.config.hparams["num_states"] == 48 and cliff.config.hparams["num_actions"] == 4


def test_dqn_learns_cartpole_and_logs_what_an_rl_run_shows_in_tensorboard(cartpole):
    metrics = cartpole.metrics
    assert metrics["test_return_mean"] > NOTHING_LEARNED, metrics
    assert metrics["test_episodes"] == CARTPOLE["test_episodes"] and metrics["epochs_this_session"] == 2
    assert cartpole.config.hparams["observation_shape"] == (4,)
    with tensorboard_server.serve(cartpole.run_dir.parent.parent) as url:
        run = f"dqn/{cartpole.run_dir.name}"
        tags = tensorboard_server.wait_for_run(url, "/data/plugin/scalars/tags", f"{run}/train")
        assert {"episode_return", "episode_return_mean100", "epsilon", "loss", "mean_max_q",
                "steps_per_second"} <= set(tags[f"{run}/train"])
        assert {"greedy_return_mean", "greedy_return_std"} <= set(tags[f"{run}/validation"])
        epsilon = tensorboard_server.get_json(url, "/data/plugin/scalars/scalars", run=f"{run}/train", tag="epsilon")
        # [wall time, step, value] every 1,000 steps: linear from 1 to 0.04 over 30% of 5,000 steps, then flat
        assert [(step, round(value, 4)) for _, step, value in epsilon] == [
            (1_000, 0.36), (2_000, 0.04), (3_000, 0.04), (4_000, 0.04), (5_000, 0.04)]
        images = tensorboard_server.get_json(url, "/data/plugin/images/images", run=f"{run}/validation",
                                             tag="greedy_episode")
        assert [image["step"] for image in images] == [2_500, 5_000]
        strip = requests.get(f"{url}/data/plugin/images/individualImage?{images[-1]['query']}", timeout=30)
        assert strip.content[:8] == b"\x89PNG\r\n\x1a\n"
        hparams = requests.post(f"{url}/data/plugin/hparams/experiment", json={"experimentName": ""},
                                headers={"X-XSRF-Protected": "1"}, timeout=30).json()
        assert {"train.gradient_steps", "model.hidden_units"} <= {h["name"] for h in hparams["hparamInfos"]}
        assert "greedy_return_mean" in {m["name"]["tag"] for m in hparams["metricInfos"]}


def test_the_export_acts_greedily_and_its_card_describes_the_environment(cartpole, cliff):
    loaded = tf.saved_model.load(str(cartpole.export_dir))
    assert {"serving_default", "act"} <= set(loaded.signatures)
    observations = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    answer = loaded.signatures["serving_default"](observation=tf.constant(observations))
    assert answer["action"].dtype == tf.int64 and answer["q_values"].shape == (7, 2)
    np.testing.assert_array_equal(answer["action"].numpy(), np.argmax(answer["q_values"].numpy(), -1))
    card = exporter.read_model_card(cartpole.export_dir)
    assert card["environment"]["id"] == "CartPole-v1" and card["environment"]["num_actions"] == 2
    assert card["environment"]["observation_shape"] == [4] and card["algorithm"] == "double_dqn"
    assert card["metrics"]["test_return_mean"] == cartpole.metrics["test_return_mean"]
    # `tfzoo evaluate` replays the test episodes through the export: the training run's own figure.
    assert evaluate.evaluate(cliff.export_dir)["return_mean"] == -13.0
    table = tf.saved_model.load(str(cliff.export_dir)).signatures["act"](state=tf.range(48, dtype=tf.int64))
    assert table["q_values"].shape == (48, 4)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tfzoo_play_acts_through_the_server_as_the_export_does(server, cartpole, cliff, protocol, tmp_path):
    port = server.rest_port if protocol == "rest" else server.grpc_port
    for result, observations in ((cartpole, np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)),
                                 (cliff, np.arange(48))):
        name = result.config.model
        served = play.served_policy(name, f"127.0.0.1:{port}", protocol)(observations)
        loaded = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
        local = next(iter(loaded.structured_input_signature[1]))
        expected = loaded(**{local: tf.constant(observations)})["action"].numpy()
        np.testing.assert_array_equal(served, expected)

    gif = tmp_path / "cartpole.gif"
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "play", "dqn", "--env", "CartPole-v1",
                          "--episodes", "5", "--protocol", protocol, "--server", f"127.0.0.1:{port}", "--json",
                          "--gif", str(gif)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    in_process = envs.run_episodes(
        lambda obs: tf.saved_model.load(str(cartpole.export_dir)).signatures["serving_default"](
            observation=tf.constant(obs, tf.float32))["action"].numpy(),
        "CartPole-v1", range(envs.TEST_SEEDS, envs.TEST_SEEDS + 5))
    assert summary["return_mean"] == float(in_process.returns.mean()) == cartpole.metrics["test_return_mean"]
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_bad_observations_are_client_errors_and_never_break_the_server(server):
    rest = RestClient("127.0.0.1", server.rest_port)
    grpc_client = GrpcClient("127.0.0.1", server.grpc_port)
    for client in (rest, grpc_client):
        for states in (np.array([48]), np.array([-1])):  # CliffWalking has states 0..47
            with pytest.raises(ServingClientError) as e:
                client.predict("q_learning", {"state": states})
            assert e.value.code in (400, __import__("grpc").StatusCode.INVALID_ARGUMENT)
            assert "state out of range [0, 48)" in e.value.message
        with pytest.raises(ServingClientError) as e:
            client.predict("dqn", {"observation": np.zeros((2, 3), np.float32)})
        assert e.value.code in (400, __import__("grpc").StatusCode.INVALID_ARGUMENT)
    grpc_client.close()
    assert_random_tensors_never_break(server, ["q_learning", "dqn"])


def test_a_run_killed_mid_epoch_resumes_from_its_last_epoch(tmp_path):
    recipe = {"epochs": 3, "steps_per_epoch": 1_500, "learning_starts": 200, "train_frequency": 50,
              "gradient_steps": 20, "buffer_size": 10_000, "eval_episodes": 2, "test_episodes": 2}
    command = [sys.executable, "-m", "pipelines.train", "dqn", "--env", "CartPole-v1", "--run-id", "killed",
               "--runs-dir", str(tmp_path), "--no-export", "--set", "hidden_units=32,32",
               *[arg for key, value in recipe.items() for arg in ("--set", f"{key}={value}")]]
    backup = tmp_path / "dqn" / "killed" / "backup"
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (backup / "checkpoint").is_file():  # the first epoch's save
        assert first.poll() is None and time.monotonic() < deadline, "the run never saved its first epoch"
        time.sleep(0.2)
    time.sleep(1.0)  # into the second epoch
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert tf.train.load_checkpoint(str(backup / "ckpt-1500")).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 1500

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "dqn" / "killed" / "metrics.json").read_text())
    assert metrics["epochs_this_session"] < 3 and metrics["train_examples_per_second"] > 0
    final = tf.train.load_checkpoint(str(backup / "ckpt-4500"))
    # Gradient steps over the whole run, counted as an uninterrupted run counts them: the step counter, the
    # update counter (the target network's schedule) and the optimizer came back from the first session.
    rounds = sum(1 for step in range(200, 4_500) if (step + 1) % 50 == 0)
    assert final.get_tensor("updates/.ATTRIBUTES/VARIABLE_VALUE") == rounds * 20
    assert final.get_tensor("model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == rounds * 20
    with np.load(backup / "ckpt-4500.npz") as saved:  # the replay buffer, every transition of both sessions
        assert len(saved["buffer_actions"]) == 4_500


def test_environment_errors_are_one_line_before_training(capsys):
    assert cli.main(["train", "dqn", "--env", "NoSuchGame-v0"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "NoSuchGame-v0" in message and "CartPole-v1" in message
    assert cli.main(["train", "dqn", "--env", "Pendulum-v1"]) == 2
    assert "Discrete action space" in capsys.readouterr().err
    assert cli.main(["train", "dqn", "--env", "Taxi-v4"]) == 2
    assert "train `q_learning` on it" in capsys.readouterr().err
    assert cli.main(["train", "q_learning", "--set", "batch_size=32"]) == 2
    assert "no hyperparameter or recipe entry 'batch_size'" in capsys.readouterr().err
    assert cli.main(["train", "dqn", "--set", "num_actions=3"]) == 2
    assert "disagrees with CartPole-v1" in capsys.readouterr().err
    assert cli.main(["train", "cnn", "--env", "CartPole-v1"]) == 2
    assert "use --dataset" in capsys.readouterr().err
