"""Play a gymnasium environment with a served policy: every action is the server's answer.

    tfzoo play dqn --env CartPole-v1 --episodes 100                      # REST on 127.0.0.1:8501
    tfzoo play q_learning --env Taxi-v4 --protocol grpc --server 127.0.0.1:8500 --gif taxi.gif

The episodes are seeded as the training run's test was (`pipelines.envs.TEST_SEEDS` on), so a served policy
that acts as the exported one scores what its model card records. Up to 16 episodes run side by side, each
policy call one predict request for all of them (the model's `serving_default` signature: observations in,
`action` out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines import envs, paths
from pipelines.errors import UserError, module_main


def served_policy(model: str, server: str, protocol: str, version: int | None = None) -> envs.Policy:
    """A policy whose every action comes from `model` on a TF Serving-protocol server (REST or gRPC)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    from serving import client

    host, _, port = server.rpartition(":")
    if not port.isdigit():
        raise UserError(f"--server expects HOST:PORT, got {server!r}")
    connection = (client.RestClient if protocol == "rest" else client.GrpcClient)(host or "127.0.0.1", int(port))
    try:
        inputs = client.signature(connection.metadata(model, version))["inputs"]
    except client.ServingClientError as e:
        raise UserError(f"{model} on {server} ({protocol}): {e.message}") from None
    except OSError as e:
        raise UserError(f"no server answers on {server} ({protocol}): {e}; start one with `tfzoo serve`") from None
    if len(inputs) != 1:
        raise UserError(f"{model}'s serving_default takes {sorted(inputs)}: a policy takes one observation input")
    (name, info), = inputs.items()
    dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(info["dtype"])).as_numpy_dtype

    def policy(observations: np.ndarray) -> np.ndarray:
        return connection.predict(model, {name: np.asarray(observations, dtype)}, version=version)["action"]

    return policy


def environment_of(model: str, models_dir: str | None) -> str:
    """The environment a model was trained on, from its newest local model card."""
    from pipelines import evaluate, export

    try:
        card = export.read_model_card(evaluate.latest_version_dir(paths.models_dir(models_dir) / model))
        return card["environment"]["id"]
    except (UserError, OSError, KeyError):
        raise UserError(f"say which environment to play: --env ENV (no local model card of {model} names one)"
                        ) from None


def run(args: argparse.Namespace) -> int:
    """`tfzoo play` from parsed arguments."""
    env_id = args.env or environment_of(args.model, args.models_dir)
    envs.make(env_id).close()  # an unknown id fails here, with the installed ones listed
    server = args.server or f"127.0.0.1:{8501 if args.protocol == 'rest' else 8500}"
    policy = served_policy(args.model, server, args.protocol, args.version)
    episodes = envs.run_episodes(policy, env_id, range(args.seed, args.seed + args.episodes),
                                 render=bool(args.gif))
    summary = episodes.summary()
    print(f"{args.model} on {env_id}, {args.episodes} episodes through {args.protocol} {server}: "
          f"mean return {summary['return_mean']:.2f} ± {summary['return_std']:.2f} "
          f"(min {summary['return_min']:g}, max {summary['return_max']:g})")
    if args.gif:
        envs.save_gif(episodes.frames, args.gif)
        print(f"episode 1 (seed {args.seed}, return {episodes.returns[0]:g}): {Path(args.gif).resolve()}")
    if args.json:
        print(json.dumps(summary))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `play` command line."""
    parser.add_argument("model", help="served model name (a reinforcement-learning policy: q_learning, dqn)")
    parser.add_argument("--env", help="gymnasium environment id (default: the one in the local model card)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes to play (default 100)")
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="the model server (default 127.0.0.1:8501 for REST, 127.0.0.1:8500 for gRPC)")
    parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    parser.add_argument("--version", type=int, help="model version (default: the server's choice)")
    parser.add_argument("--seed", type=int, default=envs.TEST_SEEDS,
                        help=f"seed of the first episode, the next ones count up (default {envs.TEST_SEEDS}: the "
                             "test episodes of training)")
    parser.add_argument("--gif", metavar="FILE", help="save the first episode as an animated GIF")
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")
    parser.add_argument("--models-dir", help="where to find the model card when --env is not given")


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.play`."""
    return module_main("python -m pipelines.play", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
