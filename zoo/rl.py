"""Reinforcement-learning agents' networks: `q_learning` (a Q-table) and `dqn` (a deep Q-network).

Both map an observation to one value per action (`q_values`); the policy acts greedily on them. What an
environment fixes (the number of states or the observation shape, and the number of actions) comes from the
environment a run names (`--env`), through the task; the defaults here are Taxi's and CartPole's.
"""
from __future__ import annotations

import keras
from keras import layers

from zoo.registry import register_model


@register_model(
    "q_learning",
    task="tabular_reinforcement_learning",
    default_dataset="Taxi-v4",
    hparams={"num_states": 500, "num_actions": 6},
    input_spec={"state": {"shape": [], "dtype": "int64", "range": [0, "num_states - 1"]}},
    # 10 epochs of 25,000 steps: on Taxi the greedy validation return reaches 8.05 at 150,000 steps
    # (bench/results/rl.md).
    train={"steps_per_epoch": 25_000},
)
def q_learning(num_states: int, num_actions: int) -> keras.Model:
    """Tabular Q-learning (or SARSA) for discrete environments: the Q-table is one [states, actions] variable."""
    state = keras.Input((), dtype="int64", name="state")
    # An Embedding is a lookup table: row `state` holds that state's action values.
    q_values = layers.Embedding(num_states, num_actions, embeddings_initializer="zeros", name="q_table")(state)
    return keras.Model(state, layers.Identity(name="q_values")(q_values), name="q_learning")


@register_model(
    "dqn",
    task="reinforcement_learning",
    default_dataset="CartPole-v1",
    hparams={"observation_shape": (4,), "num_actions": 2, "hidden_units": (256, 256), "observation_dtype": "float32"},
    input_spec={"observation": {"shape": ["observation_shape"], "dtype": "observation_dtype"}},
)
def dqn(observation_shape: tuple, num_actions: int, hidden_units: tuple, observation_dtype: str) -> keras.Model:
    """Deep Q-network: an MLP for vector observations, the Nature-DQN conv net for stacked frames (H, W, C)."""
    observation = keras.Input(tuple(observation_shape), dtype=observation_dtype, name="observation")
    if len(observation_shape) == 3:  # Mnih et al. 2015: 32 8x8/4, 64 4x4/2, 64 3x3/1, dense 512
        x = layers.Rescaling(1 / 255.0)(observation) if observation_dtype == "uint8" else observation
        x = layers.Conv2D(32, 8, strides=4, activation="relu")(x)
        x = layers.Conv2D(64, 4, strides=2, activation="relu")(x)
        x = layers.Conv2D(64, 3, strides=1, activation="relu")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(512, activation="relu")(x)
    else:
        x = layers.Flatten()(observation) if len(observation_shape) > 1 else observation
        for units in hidden_units:
            x = layers.Dense(units, activation="relu")(x)
    q_values = layers.Dense(num_actions, name="q_values")(x)
    return keras.Model(observation, q_values, name="dqn")
