"""Gymnasium environments for the reinforcement-learning tasks and `tfzoo play`: making one by id (with a clear
error), what its spaces fix in a model, and running greedy episodes of a policy on fixed seeds.

    env = envs.make("CartPole-v1")
    result = envs.run_episodes(policy, "CartPole-v1", seeds=range(1_000_000, 1_000_100))

A policy is a function from a batch of observations ([N, ...], as the environment gives them) to actions [N]:
the in-process model's, or a served model's answers (`tfzoo play`). Episodes of one call run side by side, so
each policy call acts for every episode still running.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np

from pipelines.errors import UserError

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders rgb_array frames without a display
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

Policy = Callable[[np.ndarray], np.ndarray]

# Seeds of the episodes each use plays: training episodes start from the run's seed; a validation (greedy
# evaluation during training) and the test (the final evaluation, metrics.json) each use their own range.
VALIDATION_SEEDS = 10_000
TEST_SEEDS = 1_000_000
DEFAULT_TIME_LIMIT = 1_000


def installed() -> list[str]:
    """Ids of the environments gymnasium can make here (the newest version of each)."""
    import gymnasium as gym

    newest: dict[str, tuple[int, str]] = {}
    for env_id, spec in gym.registry.items():
        if spec.entry_point is None:
            continue
        name = f"{spec.namespace}/{spec.name}" if spec.namespace else spec.name
        if (spec.version or 0) >= newest.get(name, (-1, ""))[0]:
            newest[name] = (spec.version or 0, env_id)
    return sorted(env_id for _, env_id in newest.values())


def make(env_id: str, *, render: bool = False):
    """The gymnasium environment `env_id` (rgb_array rendering when `render`); an unknown id is a UserError
    that lists the registered ones. An environment registered without a time limit (CliffWalking) gets one of
    DEFAULT_TIME_LIMIT steps, so that a policy that never reaches the end still finishes its episodes."""
    import gymnasium as gym

    try:
        spec = gym.spec(env_id)
        limit = {} if spec.max_episode_steps else {"max_episode_steps": DEFAULT_TIME_LIMIT}
        return gym.make(env_id, render_mode="rgb_array" if render else None, **limit)
    except gym.error.Error as e:
        known = installed()
        raise UserError(f"cannot make environment {env_id!r} ({e}); registered environments: {', '.join(known)}"
                        ) from None


@dataclasses.dataclass(frozen=True)
class Spaces:
    """What an environment's spaces fix: discrete states (`num_states`) or an observation array, and the
    number of discrete actions; with the spaces' own description and the environment's spec."""

    env_id: str
    num_actions: int
    num_states: int | None  # a Discrete observation space's size
    observation_shape: tuple[int, ...]
    observation_dtype: str
    observation_space: str
    action_space: str
    reward_threshold: float | None
    max_episode_steps: int | None

    def card(self) -> dict[str, Any]:
        """The model card's description of the environment."""
        return {"id": self.env_id, **{k: v for k, v in dataclasses.asdict(self).items() if k != "env_id"}}


def spaces(env_id: str) -> Spaces:
    """The spaces of `env_id`; an action space that is not Discrete is a UserError (these agents choose one of
    N actions)."""
    import gymnasium as gym

    env = make(env_id)
    try:
        action, observation = env.action_space, env.observation_space
        if not isinstance(action, gym.spaces.Discrete):
            raise UserError(f"{env_id} has a {type(action).__name__} action space ({action}); the zoo's agents "
                            "choose one of N discrete actions: use an environment with a Discrete action space, "
                            "e.g. CartPole-v1 or Acrobot-v1")
        described = dict(env_id=env_id, num_actions=int(action.n), observation_space=str(observation),
                         action_space=str(action), reward_threshold=env.spec.reward_threshold,
                         max_episode_steps=env.spec.max_episode_steps)
        if isinstance(observation, gym.spaces.Discrete):
            return Spaces(num_states=int(observation.n), observation_shape=(), observation_dtype="int64",
                          **described)
        if isinstance(observation, gym.spaces.Box):
            return Spaces(num_states=None, observation_shape=tuple(observation.shape),
                          observation_dtype=str(observation.dtype), **described)
        raise UserError(f"{env_id} has a {type(observation).__name__} observation space ({observation}); the "
                        "zoo's agents read a Discrete state or a Box of numbers")
    finally:
        env.close()


@dataclasses.dataclass
class Episodes:
    """Returns and lengths of finished episodes, and the rendered frames of the first (when asked)."""

    returns: np.ndarray
    lengths: np.ndarray
    frames: list[np.ndarray]

    def summary(self) -> dict[str, float]:
        return {"return_mean": float(self.returns.mean()), "return_std": float(self.returns.std()),
                "return_min": float(self.returns.min()), "return_max": float(self.returns.max()),
                "length_mean": float(self.lengths.mean()), "episodes": len(self.returns)}


def run_episodes(policy: Policy, env_id: str, seeds: Iterable[int], *, render: bool | Collection[int] = False,
                 parallel: int = 16) -> Episodes:
    """One episode per seed, up to `parallel` side by side (each policy call acts for all of them), every
    action from `policy`. `render`: True keeps every frame of the first episode, a collection of step numbers
    only those frames (0: the start). An environment that finishes an episode starts the next seed's: few are
    made (making one can cost more than an episode)."""
    seeds = list(seeds)
    render_first = bool(render)
    wanted = (lambda _: True) if render is True else (lambda step: step in render)
    envs = [make(env_id, render=render_first and i == 0) for i in range(min(parallel, len(seeds)))]
    returns, lengths = np.zeros(len(seeds)), np.zeros(len(seeds), dtype=np.int64)
    playing: dict[int, int] = {}  # env index -> episode index
    observations: dict[int, Any] = {}
    next_episode = 0

    def begin(slot: int) -> None:
        nonlocal next_episode
        if next_episode < len(seeds):
            playing[slot], observations[slot] = next_episode, envs[slot].reset(seed=int(seeds[next_episode]))[0]
            next_episode += 1
        else:
            playing.pop(slot, None)

    for slot in range(len(envs)):
        begin(slot)
    frames = [envs[0].render()] if render_first and wanted(0) else []
    try:
        while playing:
            slots = list(playing)
            actions = np.asarray(policy(np.stack([np.asarray(observations[slot]) for slot in slots])))
            for slot, action in zip(slots, actions, strict=True):
                episode = playing[slot]
                observations[slot], reward, terminated, truncated, _ = envs[slot].step(int(action))
                returns[episode] += float(reward)
                lengths[episode] += 1
                if render_first and episode == 0 and wanted(lengths[0]):
                    frames.append(envs[0].render())
                if terminated or truncated:
                    begin(slot)
    finally:
        for env in envs:
            env.close()
    return Episodes(returns, lengths, frames)


def strip(frames: list[np.ndarray], count: int = 8, height: int = 96) -> np.ndarray:
    """`count` frames evenly spaced over an episode, each scaled to `height` pixels, side by side: one image
    (uint8 [H, W, 3]) that shows how the episode went."""
    from PIL import Image

    picks = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))]
    scaled = [np.asarray(Image.fromarray(f).resize((max(1, round(f.shape[1] * height / f.shape[0])), height)))
              for f in picks]
    gap = np.full((height, 2, 3), 255, dtype=np.uint8)
    return np.concatenate([part for frame in scaled for part in (frame, gap)][:-1], axis=1)


def save_gif(frames: list[np.ndarray], path: str | os.PathLike, fps: int = 30) -> None:
    """Write `frames` as an animated GIF."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
