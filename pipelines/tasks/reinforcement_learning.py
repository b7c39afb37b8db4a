"""Reinforcement learning: agents that learn by acting in a gymnasium environment (the run's `--env`).

Two tasks share one loop (`Agent.fit`): `reinforcement_learning` (`dqn`: Double DQN with a target network,
Huber loss, a replay buffer and an epsilon schedule; acting and the gradient steps are compiled tf.functions)
and `tabular_reinforcement_learning` (`q_learning`: Q-learning, or SARSA with `--set algorithm=sarsa`, on a
[states, actions] table). The recipe counts in environment steps: `epochs` evaluations, `steps_per_epoch` steps
apart. After each epoch the greedy policy plays `eval_episodes` episodes on the validation seeds (TensorBoard:
their mean return, and a strip of frames of the first; each evaluation is also a line of evaluations.jsonl),
and the run's state is saved to backup/ (networks, optimizer, step counter, replay buffer, random state, the
best epoch so far): a run killed at any point resumes from its last epoch with the same `--run-id` (the
episode in progress is started again). With `keep_best` (the default) the run ends with the values of its best
epoch by greedy validation return; with `stop_at_threshold` it stops at the first epoch whose greedy
validation return reaches the environment's reward threshold (gymnasium's `spec.reward_threshold`). The test is
`test_episodes` greedy episodes on fixed seeds (`pipelines.envs.TEST_SEEDS`), never played in training or
validation.

The exported policy's `serving_default` (also named `act`) maps observations [N, ...] (or states [N]) to
`action` [N] (int64) and `q_values` [N, actions].
"""
from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from typing_extensions import override

from pipelines import envs, paths
from pipelines.errors import UserError
from pipelines.fitting import FitOptions, Fitted
from pipelines.tasks.base import Splits, Task, WarmupRequests
from pipelines.tasks.common import BufferedScalars

# Recipe entries every agent reads; the number of steps is epochs x steps_per_epoch.
AGENT_RECIPE: Mapping[str, Any] = {
    "steps_per_epoch": 5_000,  # environment steps between evaluations (and saves)
    "gamma": 0.99,
    "exploration_initial_eps": 1.0,
    "exploration_final_eps": 0.05,
    "exploration_fraction": 0.5,  # of all steps, over which epsilon falls linearly to its final value
    "eval_episodes": 10,  # greedy episodes on the validation seeds after each epoch
    "test_episodes": 100,  # greedy episodes on the test seeds at the end
    "log_every": 1_000,  # steps between TensorBoard scalars and progress-bar updates
    "keep_best": True,  # end with the values of the epoch whose greedy validation return was highest
    "stop_at_threshold": False,  # stop once the greedy validation return reaches the environment's threshold
}
BACKUP = "backup"


class Agent(Task):
    """What both agents share: the environment, the training loop, evaluation, checkpoints and export."""

    # The trainer's recipe keys an agent does not read (refused by --set).
    unused_trainer_keys: ClassVar[frozenset[str]] = frozenset({"early_stopping_patience", "steps_per_execution"})
    single_worker_reason: ClassVar[str | None] = ("acts and learns in its own loop, which tf.distribute does not "
                                                   "split between workers")

    @classmethod
    @override
    def dataset_hparams(cls, dataset: str) -> dict[str, Any]:
        found = envs.spaces(dataset)
        return cls.hparams_of(found)

    @classmethod
    def hparams_of(cls, found: envs.Spaces) -> dict[str, Any]:
        """The model's hyperparameters that the environment's spaces fix."""
        raise NotImplementedError(f"{cls.__name__}.hparams_of")

    @property
    def env_id(self) -> str:
        return self.run.dataset

    # --- data: an environment, no dataset ---------------------------------------------------------------------

    @override
    def load_splits(self, data_dir) -> Splits:  # noqa: ARG002 (environments need no data dir)
        """No pipelines: the splits are seed ranges of the environment's episodes; the sample batch is four
        first observations (the warmup request)."""
        env = envs.make(self.env_id)
        observations = np.stack([np.asarray(env.reset(seed=envs.VALIDATION_SEEDS + i)[0]) for i in range(4)])
        env.close()
        validation, test = self.recipe["eval_episodes"], self.recipe["test_episodes"]
        return Splits(train=None, validation=None, test=None, sample_batch=(observations, None),
                      steps_per_epoch=self.recipe["steps_per_epoch"],
                      names={"train": f"{self.env_id} episodes seeded from the run's seed ({self.run.seed})",
                             "validation": f"{self.env_id} seeds {envs.VALIDATION_SEEDS}.."
                                           f"{envs.VALIDATION_SEEDS + validation - 1}",
                             "test": f"{self.env_id} seeds {envs.TEST_SEEDS}..{envs.TEST_SEEDS + test - 1}"})

    # --- the agent's part of the loop (each subclass) ---------------------------------------------------------

    def start(self, model: keras.Model) -> None:
        """Make the agent's state for `model` (before any restore); `self.rng` is the run's generator."""
        raise NotImplementedError(f"{type(self).__name__}.start")

    def explore(self, model: keras.Model, observation, step: int, total: int) -> int:
        """The behaviour policy's action: epsilon-greedy."""
        if self.rng.random() < self.epsilon(step, total):
            return int(self.rng.integers(self.hparams["num_actions"]))
        return int(self.greedy(model, np.asarray(observation)[None])[0])

    def greedy(self, model: keras.Model, observations: np.ndarray) -> np.ndarray:
        """Greedy actions [N] for observations [N, ...] (in training, from the agent's current values)."""
        raise NotImplementedError(f"{type(self).__name__}.greedy")

    def learn(self, step: int, observation, action: int, reward: float, next_observation, terminated: bool,
              done: bool) -> dict[str, float]:
        """Take one transition in (after it happened; `done`: terminated or truncated, the episode is over);
        return scalars to log (e.g. the loss) when it learned."""
        raise NotImplementedError(f"{type(self).__name__}.learn")

    def trackables(self) -> dict[str, Any]:
        """TensorFlow objects to save besides the model and the step counter (target network, optimizer)."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """NumPy state to save (a replay buffer); `restore_arrays` gets it back."""
        return {}

    def restore_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:  # noqa: ARG002 (no arrays by default)
        """Put back what `arrays` saved."""

    def sync(self, model: keras.Model) -> None:  # noqa: ARG002 (the model is the agent's values by default)
        """Write the agent's values into `model` (before a save, an evaluation and the export)."""

    def adopt(self, model: keras.Model) -> None:  # noqa: ARG002 (the model is the agent's values by default)
        """Take the agent's values from `model` (after the best epoch's weights were put back)."""

    # --- training ---------------------------------------------------------------------------------------------

    def epsilon(self, step: int, total: int) -> float:
        """The exploration rate at `step`: linear from the initial to the final value over the first
        `exploration_fraction` of the run, then constant."""
        r = self.recipe
        progress = min(1.0, step / max(1.0, r["exploration_fraction"] * total))
        return r["exploration_initial_eps"] + progress * (r["exploration_final_eps"] - r["exploration_initial_eps"])

    @override
    def fit(self, model: keras.Model, splits: Splits, options: FitOptions) -> Fitted:
        """Act, learn, evaluate after every epoch, save; resume from backup/ if a previous session saved."""
        r, run_dir = self.recipe, options.run_dir
        if options.profile_batches or options.extra_callbacks:
            raise UserError("--profile-batches and Keras callbacks act on Keras fit's steps; an agent trains in "
                            "its own loop of environment steps")
        total = r["epochs"] * r["steps_per_epoch"]
        self.rng = np.random.default_rng(self.run.seed)
        self.start(model)
        state = tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64),
                                    episodes=tf.Variable(0, dtype=tf.int64), **self.trackables())
        manager = tf.train.CheckpointManager(state, str(run_dir / BACKUP), max_to_keep=2)
        self.best: tuple[float, list[np.ndarray]] | None = None  # (greedy validation return, model weights)
        if manager.latest_checkpoint:  # ckpt-<step>, its NumPy state in ckpt-<step>.npz (written before it)
            state.restore(manager.latest_checkpoint).expect_partial()
            with np.load(f"{manager.latest_checkpoint}.npz") as saved:
                self.restore_arrays(saved)
                self.rng.bit_generator.state = json.loads(str(saved["rng_state"]))
                if "best_return" in saved:
                    self.best = (float(saved["best_return"]),
                                 [saved[f"best_{i}"] for i in range(len(model.get_weights()))])
        step, episodes = int(state.step.numpy()), int(state.episodes.numpy())
        threshold = envs.spaces(self.env_id).reward_threshold if r["stop_at_threshold"] else None
        if r["stop_at_threshold"] and threshold is None:
            raise UserError(f"stop_at_threshold: {self.env_id} has no reward threshold")

        train_log = tf.summary.create_file_writer(str(run_dir / "train"))
        episode_log = BufferedScalars(train_log, ("episode_return", "episode_length", "episode_return_mean100"))
        validation_log = tf.summary.create_file_writer(str(run_dir / "validation"))
        with validation_log.as_default():
            hp.hparams(options.hparams, trial_id=options.run_id)
        progress = keras.utils.Progbar(total, unit_name="step", verbose=options.verbose if options.verbose in (0, 2)
                                       else 1,
                                       stateful_metrics=["return_mean100", "epsilon", "greedy_return"])
        if step:
            progress.update(step)

        env = envs.make(self.env_id)
        observation, _ = env.reset(seed=self.run.seed * 1_000_003 + episodes)
        recent = collections.deque(maxlen=100)
        episode_return, episode_length, learned = 0.0, 0, collections.defaultdict(list)
        history: dict[str, list[float]] = collections.defaultdict(list)
        start, start_step, clock = time.perf_counter(), step, (time.perf_counter(), step)
        cpu_start = time.process_time()
        stopped = False
        try:
            while step < total and not stopped:
                action = self.explore(model, observation, step, total)
                next_observation, reward, terminated, truncated, _ = env.step(action)
                for key, value in self.learn(step, observation, action, float(reward), next_observation,
                                             terminated, terminated or truncated).items():
                    learned[key].append(value)
                step += 1
                episode_return += float(reward)
                episode_length += 1
                observation = next_observation
                if terminated or truncated:
                    episodes += 1
                    recent.append(episode_return)
                    episode_log.add(step, episode_return, episode_length, np.mean(recent))
                    episode_return, episode_length = 0.0, 0
                    observation, _ = env.reset(seed=self.run.seed * 1_000_003 + episodes)
                if step % r["log_every"] == 0:
                    episode_log.flush()
                    now = time.perf_counter()
                    with train_log.as_default(step=step):
                        tf.summary.scalar("epsilon", self.epsilon(step, total))
                        tf.summary.scalar("steps_per_second", (step - clock[1]) / max(now - clock[0], 1e-9))
                        for key, values in learned.items():
                            tf.summary.scalar(key, np.mean(values))
                    clock, learned = (now, step), collections.defaultdict(list)
                    if step % r["steps_per_epoch"]:  # (an epoch's end updates the bar itself)
                        progress.update(step, [("return_mean100", np.mean(recent) if recent else 0.0),
                                               ("epsilon", self.epsilon(step, total))])
                if step % r["steps_per_epoch"] == 0:
                    evaluation = self.evaluate(model, validation_log, step)
                    if self.best is None or evaluation["return_mean"] > self.best[0]:
                        self.best = (evaluation["return_mean"], model.get_weights())
                    stopped = threshold is not None and evaluation["return_mean"] >= threshold
                    history["greedy_return_mean"].append(evaluation["return_mean"])
                    history["episode_return_mean100"].append(float(np.mean(recent)) if recent else 0.0)
                    with (run_dir / "evaluations.jsonl").open("a") as log:
                        log.write(json.dumps({"step": step, "train_episodes": episodes, "cpu_seconds_this_session":
                                              round(time.process_time() - cpu_start, 2), **evaluation}) + "\n")
                    progress.update(step, [("return_mean100", np.mean(recent) if recent else 0.0),
                                           ("epsilon", self.epsilon(step, total)),
                                           ("greedy_return", evaluation["return_mean"])], finalize=stopped or None)
                    state.step.assign(step)
                    state.episodes.assign(episodes)
                    self.save(model, manager, step, run_dir, step // r["steps_per_epoch"])
                    # The episode in progress goes on; a resumed run starts the next episode afresh.
        finally:
            env.close()
            episode_log.flush()
            train_log.close()
            validation_log.close()
        seconds = time.perf_counter() - start
        self.sync(model)
        if r["keep_best"] and self.best is not None:
            model.set_weights(self.best[1])
            self.adopt(model)
        return Fitted(history=dict(history), epochs_run=len(history["greedy_return_mean"]),
                      examples=step - start_step, seconds=seconds, stopped_early=stopped)

    def evaluate(self, model: keras.Model, log: tf.summary.SummaryWriter, step: int) -> dict[str, float]:
        """Greedy episodes on the validation seeds: their return to TensorBoard, and the first as a strip."""
        self.sync(model)
        episodes = envs.run_episodes(lambda obs: self.greedy(model, obs), self.env_id,
                                     range(envs.VALIDATION_SEEDS, envs.VALIDATION_SEEDS + self.recipe["eval_episodes"]))
        # The first episode again (the policy is greedy, the seed the same: the same episode), rendered at 8
        # steps spread over it: rendering every step costs more than playing.
        length = int(episodes.lengths[0])
        replay = envs.run_episodes(lambda obs: self.greedy(model, obs), self.env_id, [envs.VALIDATION_SEEDS],
                                   render={round(x) for x in np.linspace(0, length, 8)})
        summary = episodes.summary()
        with log.as_default(step=step):
            tf.summary.scalar("greedy_return_mean", summary["return_mean"])
            tf.summary.scalar("greedy_return_std", summary["return_std"])
            tf.summary.image("greedy_episode", envs.strip(replay.frames)[None], step=step,
                             description=f"The greedy policy's episode on seed {envs.VALIDATION_SEEDS}: {length} "
                                         f"steps, return {replay.returns[0]:g}; frames at steps "
                                         f"{', '.join(str(round(x)) for x in np.linspace(0, length, 8))}, left "
                                         "to right")
        log.flush()
        return summary

    def save(self, model: keras.Model, manager: tf.train.CheckpointManager, step: int, run_dir: Path,
             epoch: int) -> None:
        """The run's state to backup/ as ckpt-<step>, its NumPy part (random state, replay buffer or table) in
        ckpt-<step>.npz written first (a kill between the two leaves the previous checkpoint the latest, and
        whole); and the model's weights as this epoch's checkpoint (`tfzoo export --epoch`)."""
        self.sync(model)
        backup = run_dir / BACKUP
        backup.mkdir(parents=True, exist_ok=True)
        partial = backup / f"ckpt-{step}.partial.npz"
        best = {} if self.best is None else {"best_return": np.array(self.best[0]),
                                             **{f"best_{i}": w for i, w in enumerate(self.best[1])}}
        np.savez(partial, rng_state=np.array(json.dumps(self.rng.bit_generator.state)), **self.arrays(), **best)
        os.replace(partial, backup / f"ckpt-{step}.npz")
        manager.save(checkpoint_number=step)
        kept = {f"{Path(path).name}.npz" for path in manager.checkpoints}
        for stale in backup.glob("ckpt-*.npz"):
            if stale.name not in kept:
                stale.unlink()
        weights = Path(str(paths.checkpoint_pattern(run_dir)).format(epoch=epoch))
        weights.parent.mkdir(exist_ok=True)
        model.save_weights(str(weights))

    @override
    def test(self, model: keras.Model, splits: Splits) -> dict[str, float]:  # noqa: ARG002 (no dataset)
        """Greedy episodes on the test seeds: mean, std, min and max of their return."""
        episodes = range(envs.TEST_SEEDS, envs.TEST_SEEDS + self.recipe["test_episodes"])
        return envs.run_episodes(lambda obs: self.greedy(model, obs), self.env_id, episodes).summary()

    # --- export -----------------------------------------------------------------------------------------------

    @override
    def warmup_requests(self, sample_batch) -> WarmupRequests:
        observations, _ = sample_batch
        return [("serving_default", {self.input_name: observations})]

    input_name: ClassVar[str]

    @override
    def model_card(self, model: keras.Model) -> dict[str, Any]:  # noqa: ARG002 (the environment's, not the model's)
        return {"environment": envs.spaces(self.env_id).card(), "policy": "greedy: action = argmax of q_values",
                "test_seeds": [envs.TEST_SEEDS, envs.TEST_SEEDS + self.recipe["test_episodes"] - 1]}

    # --- evaluation of an exported version --------------------------------------------------------------------

    @classmethod
    @override
    def load_evaluation(cls, dataset: str, split: str, *, batch_size: int, data_dir=None) -> tf.data.Dataset:
        """The seeds of 100 episodes of `split`: test from TEST_SEEDS, validation from VALIDATION_SEEDS (the ranges
        training evaluated on). Episodes are played, not read: `batch_size` and `data_dir` mean nothing here."""
        del batch_size, data_dir  # episodes are played, not read
        first = {"test": envs.TEST_SEEDS, "validation": envs.VALIDATION_SEEDS}.get(split)
        if first is None:
            raise UserError(f"an agent is evaluated on 'test' or 'validation' episodes, not {split!r}")
        envs.make(dataset).close()
        return tf.data.Dataset.range(first, first + 100)

    @classmethod
    @override
    def evaluate_export(cls, loaded, ds: tf.data.Dataset, card: Mapping[str, Any]) -> dict[str, Any]:
        """The exported greedy policy's episodes on the seeds `ds` holds, every action from its serving_default
        signature."""
        act = loaded.signatures["serving_default"]
        name = next(iter(act.structured_input_signature[1]))

        def policy(observations):
            return act(**{name: tf.constant(observations, act.structured_input_signature[1][name].dtype)}
                       )["action"].numpy()

        return envs.run_episodes(policy, card["environment"]["id"], [int(s) for s in ds.as_numpy_iterator()]
                                 ).summary()


class ReplayBuffer:
    """The last `capacity` transitions, in NumPy arrays, sampled uniformly."""

    def __init__(self, capacity: int, observation_shape: tuple, observation_dtype: str):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.observations = np.zeros((capacity, *observation_shape), observation_dtype)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)

    def add(self, observation, action: int, reward: float, next_observation, terminated: bool) -> None:
        i = self.position
        self.observations[i], self.actions[i], self.rewards[i] = observation, action, reward
        self.next_observations[i], self.terminated[i] = next_observation, terminated
        self.position, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """Transitions at uniform random indices, as arrays of `shape` (e.g. [gradient steps, batch])."""
        i = rng.integers(0, self.size, shape)
        return (self.observations[i], self.actions[i], self.rewards[i], self.next_observations[i],
                self.terminated[i])

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {"buffer_position": np.array(self.position), "buffer_observations": self.observations[:n],
                "buffer_next_observations": self.next_observations[:n], "buffer_actions": self.actions[:n],
                "buffer_rewards": self.rewards[:n], "buffer_terminated": self.terminated[:n]}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        n = len(arrays["buffer_actions"])
        self.observations[:n], self.next_observations[:n] = arrays["buffer_observations"], arrays[
            "buffer_next_observations"]
        self.actions[:n], self.rewards[:n] = arrays["buffer_actions"], arrays["buffer_rewards"]
        self.terminated[:n] = arrays["buffer_terminated"]
        self.size, self.position = n, int(arrays["buffer_position"])


class DeepQLearning(Agent):
    """Double DQN (van Hasselt et al. 2016) on a zoo Q-network: the online network picks the next action, the
    target network values it; Huber loss, gradients clipped by global norm, Adam. Every `train_frequency` steps
    (after `learning_starts`), `gradient_steps` updates on replay batches run in one compiled call; the target
    network copies the online one every `target_update_interval` updates. Defaults: RL Zoo's tuned CartPole
    DQN (Stable-Baselines3), with Double DQN's target."""

    name = "reinforcement_learning"
    input_name = "observation"
    recipe_defaults: ClassVar[Mapping[str, Any]] = {
        **AGENT_RECIPE,
        "epochs": 10,
        "batch_size": 64,
        "learning_rate": 2.3e-3,
        "buffer_size": 100_000,
        "learning_starts": 1_000,
        "train_frequency": 256,
        "gradient_steps": 128,
        "target_update_interval": 128,  # in gradient steps
        "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04,
        "max_grad_norm": 10.0,
    }

    @classmethod
    @override
    def hparams_of(cls, found: envs.Spaces) -> dict[str, Any]:
        if found.num_states is not None:
            raise UserError(f"{found.env_id} has discrete states ({found.num_states}): train `q_learning` on it; "
                            "dqn reads observation arrays (a Box space)")
        return {"observation_shape": found.observation_shape, "num_actions": found.num_actions,
                "observation_dtype": found.observation_dtype}

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:  # noqa: ARG002 (a constant rate)
        model.compile(optimizer=keras.optimizers.Adam(self.recipe["learning_rate"]))
        model.optimizer.build(model.trainable_variables)

    @override
    def start(self, model: keras.Model) -> None:
        r, hparams = self.recipe, self.hparams
        self.target = keras.models.clone_model(model)
        self.target.set_weights(model.get_weights())
        self.buffer = ReplayBuffer(r["buffer_size"], tuple(hparams["observation_shape"]),
                                   hparams["observation_dtype"])
        self.updates = tf.Variable(0, dtype=tf.int64)
        spec = tf.TensorSpec([None, *hparams["observation_shape"]], hparams["observation_dtype"])
        self.act = tf.function(lambda observation: tf.argmax(model(observation, training=False), -1),
                               input_signature=[spec])
        self.update = tf.function(self.updates_for(model), jit_compile=r["jit_compile"])

    def updates_for(self, model: keras.Model):
        """The compiled training step: `gradient_steps` Double-DQN updates on batches [G, B, ...]."""
        r, target, optimizer, updates = self.recipe, self.target, model.optimizer, self.updates
        huber = keras.losses.Huber()

        def update(observations, actions, rewards, next_observations, terminated):
            total_loss, total_q = tf.constant(0.0), tf.constant(0.0)
            count = tf.shape(actions)[0]
            for i in tf.range(count):
                next_action = tf.argmax(model(next_observations[i], training=False), -1)
                next_q = tf.gather(target(next_observations[i], training=False), next_action, batch_dims=1)
                y = rewards[i] + r["gamma"] * (1.0 - terminated[i]) * next_q
                with tf.GradientTape() as tape:
                    q = model(observations[i], training=True)
                    loss = huber(y[:, None], tf.gather(q, actions[i], batch_dims=1)[:, None])
                grads = tape.gradient(loss, model.trainable_variables)
                grads, _ = tf.clip_by_global_norm(grads, r["max_grad_norm"])
                optimizer.apply(grads, model.trainable_variables)
                updates.assign_add(1)
                if updates % r["target_update_interval"] == 0:
                    for copy, weight in zip(target.trainable_variables, model.trainable_variables, strict=True):
                        copy.assign(weight)
                total_loss += loss
                total_q += tf.reduce_mean(tf.reduce_max(q, axis=-1))
            n = tf.cast(count, tf.float32)
            return total_loss / n, total_q / n

        return update

    @override
    def greedy(self, model: keras.Model, observations: np.ndarray) -> np.ndarray:  # noqa: ARG002 (self.act's)
        return self.act(np.asarray(observations, self.hparams["observation_dtype"])).numpy()

    @override
    def learn(self, step: int, observation, action: int, reward: float, next_observation, terminated: bool,
              done: bool) -> dict[str, float]:  # noqa: ARG002 (a replay buffer keeps no episode boundaries)
        r = self.recipe
        self.buffer.add(observation, action, reward, next_observation, terminated)
        if step < r["learning_starts"] or (step + 1) % r["train_frequency"]:
            return {}
        loss, mean_max_q = self.update(*self.buffer.sample(self.rng, (r["gradient_steps"], r["batch_size"])))
        return {"loss": float(loss), "mean_max_q": float(mean_max_q)}

    @override
    def trackables(self) -> dict[str, Any]:
        return {"target": self.target, "updates": self.updates}

    @override
    def arrays(self) -> dict[str, np.ndarray]:
        return self.buffer.arrays()

    @override
    def restore_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.buffer.restore(arrays)

    @override
    def signatures(self, model: keras.Model) -> dict[str, Any]:
        hparams = self.hparams
        spec = tf.TensorSpec([None, *hparams["observation_shape"]], hparams["observation_dtype"], name="observation")

        @tf.function(input_signature=[spec])
        def act(observation):
            q_values = model(observation, training=False)
            return {"action": tf.argmax(q_values, axis=-1), "q_values": q_values}

        return {"serving_default": act, "act": act}

    @override
    def model_card(self, model: keras.Model) -> dict[str, Any]:
        return {**super().model_card(model), "algorithm": "double_dqn"}


class TabularQLearning(Agent):
    """Q-learning (Watkins 1989) or SARSA (`--set algorithm=sarsa`) on a table of [states, actions] values,
    updated in NumPy at every step (`learning_rate` is the step size alpha) and written into the model's table
    for evaluation, saving and export."""

    name = "tabular_reinforcement_learning"
    input_name = "state"
    unused_trainer_keys: ClassVar[frozenset[str]] = frozenset({"early_stopping_patience", "batch_size",
                                                               "jit_compile", "steps_per_execution"})
    recipe_defaults: ClassVar[Mapping[str, Any]] = {
        **AGENT_RECIPE,
        "epochs": 10,
        "steps_per_epoch": 50_000,
        "learning_rate": 0.1,
        "algorithm": "q_learning",
        "eval_episodes": 100,
        "log_every": 10_000,
    }
    ALGORITHMS = ("q_learning", "sarsa")

    @classmethod
    @override
    def hparams_of(cls, found: envs.Spaces) -> dict[str, Any]:
        if found.num_states is None:
            raise UserError(f"{found.env_id} observes a {found.observation_shape} array, not a discrete state: "
                            "train `dqn` on it; q_learning needs a Discrete observation space (e.g. Taxi-v4, "
                            "FrozenLake-v1, CliffWalking-v1)")
        return {"num_states": found.num_states, "num_actions": found.num_actions}

    @override
    def compile(self, model: keras.Model, steps_per_epoch: int) -> None:  # noqa: ARG002
        """No optimizer: the table is updated by the TD rule in NumPy."""
        if self.recipe["algorithm"] not in self.ALGORITHMS:
            raise UserError(f"algorithm={self.recipe['algorithm']!r}: one of {', '.join(self.ALGORITHMS)}")

    @override
    def start(self, model: keras.Model) -> None:
        self.table = np.array(model.get_layer("q_table").embeddings.numpy())
        self.next_action: int | None = None  # SARSA: the action already chosen for the next step

    @override
    def greedy(self, model: keras.Model, observations: np.ndarray) -> np.ndarray:  # noqa: ARG002 (the table's)
        return np.argmax(self.table[np.asarray(observations, np.int64)], axis=-1)

    @override
    def explore(self, model: keras.Model, observation, step: int, total: int) -> int:
        if self.next_action is not None:  # SARSA chose it when it learned from the last step
            action, self.next_action = self.next_action, None
            return action
        return super().explore(model, observation, step, total)

    @override
    def learn(self, step: int, observation, action: int, reward: float, next_observation, terminated: bool,
              done: bool) -> dict[str, float]:
        r, q = self.recipe, self.table
        if r["algorithm"] == "sarsa" and not done:  # on-policy: the value of the action taken next
            self.next_action = self.explore(None, next_observation, step + 1, r["epochs"] * r["steps_per_epoch"])
            ahead = q[next_observation, self.next_action]
        else:
            ahead = q[next_observation].max()
        error = reward + r["gamma"] * (0.0 if terminated else ahead) - q[observation, action]
        q[observation, action] += r["learning_rate"] * error
        return {"td_error_squared": error * error}

    @override
    def sync(self, model: keras.Model) -> None:
        model.get_layer("q_table").embeddings.assign(self.table)

    @override
    def adopt(self, model: keras.Model) -> None:
        self.table = np.array(model.get_layer("q_table").embeddings.numpy())

    @override
    def arrays(self) -> dict[str, np.ndarray]:
        return {"q_table": self.table}

    @override
    def restore_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.table[...] = arrays["q_table"]

    @override
    def signatures(self, model: keras.Model) -> dict[str, Any]:
        states = self.hparams["num_states"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="state")])
        def act(state):
            checks = [tf.debugging.assert_non_negative(state, message=f"state out of range [0, {states})"),
                      tf.debugging.assert_less(state, tf.constant(states, tf.int64),
                                               message=f"state out of range [0, {states})")]
            with tf.control_dependencies(checks):
                q_values = model(state, training=False)
            return {"action": tf.argmax(q_values, axis=-1), "q_values": q_values}

        return {"serving_default": act, "act": act}

    @override
    def model_card(self, model: keras.Model) -> dict[str, Any]:
        return {**super().model_card(model), "algorithm": self.recipe["algorithm"]}
