"""A run's configuration, apart from the registry's immutable spec.

A run is described by a `RunConfig`: the model, its hyperparameters, the training recipe, the dataset, the
distribution strategy and the seed. `resolve` builds it with one precedence rule, from lowest to highest:

    the trainer's defaults (TRAINER_RECIPE) < the task's (Task.recipe_defaults) < the model's recipe (its
    spec's `train`) < --set KEY=VALUE (and the `recipe` / `hparams` of the Python API) < the flags
    --epochs, --batch-size, --learning-rate (only when given)

Hyperparameters the dataset fixes (`Task.dataset_hparams`: an environment's observation shape and action
count) replace the model's defaults; a --set that disagrees with them is refused.

A key that neither the model's builder nor the trainer nor the task reads is refused, with the valid keys.
`config.json` in the run directory is `RunConfig.to_json()`; `RunConfig.from_json` reads it back.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import zoo
from pipelines.errors import UserError
from zoo.registry import coerce

# What the trainer (pipelines.train) itself reads from a recipe, with its defaults.
TRAINER_RECIPE: Mapping[str, Any] = MappingProxyType({
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "jit_compile": False,  # XLA for the training step (see the README: it helps Transformers, hurts small convnets)
    "early_stopping_patience": 0,  # stop after this many epochs without a better val_loss (0: never)
    # Training steps per call into TensorFlow (Keras's `steps_per_execution`): more than 1 saves Python's
    # per-step work where a step is short; batch callbacks then see one batch per call.
    "steps_per_execution": 1,
})
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: what the hooks of its task and the trainer read (never the registry's spec)."""

    model: str
    task: str
    dataset: str
    hparams: Mapping[str, Any]
    recipe: Mapping[str, Any]
    labels: tuple[str, ...] = ()
    strategy: str = "default"
    seed: int = 0

    def __post_init__(self):  # read-only views: a hook cannot change the run under the others
        object.__setattr__(self, "hparams", MappingProxyType(dict(self.hparams)))
        object.__setattr__(self, "recipe", MappingProxyType(dict(self.recipe)))

    @property
    def spec(self) -> zoo.ModelSpec:
        """The registry's spec of the model (its builder, input description and defaults)."""
        return zoo.get(self.model)

    def build(self):
        """The uncompiled Keras model with this run's hyperparameters."""
        return zoo.build(self.model, **self.hparams)

    def to_json(self) -> dict:
        return {"model": self.model, "task": self.task, "dataset": self.dataset, "hparams": dict(self.hparams),
                "recipe": dict(self.recipe), "labels": list(self.labels), "strategy": self.strategy,
                "seed": self.seed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        """A config as `to_json` wrote it (config.json); hparams and recipe as recorded, not re-resolved."""
        spec = zoo.get(data["model"])
        hparams = {key: _as_recorded(value, spec.hparams.get(key)) for key, value in data["hparams"].items()}
        return cls(model=data["model"], task=data.get("task", spec.task), dataset=data["dataset"], hparams=hparams,
                   recipe=data["recipe"], labels=tuple(data.get("labels", spec.labels)),
                   strategy=data.get("strategy", "default"), seed=data.get("seed", 0))


def _as_recorded(value: Any, default: Any) -> Any:
    """JSON turns tuples into lists: give a hyperparameter back the type of its default."""
    return type(default)(value) if isinstance(default, tuple) and isinstance(value, list) else value


def recipe_defaults(task: str) -> dict[str, Any]:
    """The trainer's recipe defaults with the task's on top: every recipe key a run of `task` may set."""
    from pipelines import tasks

    task_class = tasks.get(task)
    trainer = {key: value for key, value in TRAINER_RECIPE.items() if key not in task_class.unused_trainer_keys}
    return {**trainer, **task_class.recipe_defaults}


def resolve(model: str, *, dataset: str | None = None, sets: Iterable[str] = (),
            hparams: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
            epochs: int | None = None, batch_size: int | None = None, learning_rate: float | None = None,
            strategy: str = "default", seed: int = 0) -> RunConfig:
    """The RunConfig of training `model` with these overrides (see the module doc for the precedence).

    `sets` are `KEY=VALUE` strings (the command line's --set), each routed to the model's hyperparameters or
    the recipe by its key and typed like its default; `hparams` and `recipe` are the same from Python.
    """
    from pipelines import tasks

    spec = zoo.get(model)
    defaults = recipe_defaults(spec.task)
    if stray := sorted(set(spec.train) - set(defaults)):
        raise ValueError(f"zoo entry {model!r} sets recipe keys its task {spec.task!r} does not read: {stray}")
    valid = sorted({*spec.hparams, *defaults})
    model_overrides: dict[str, Any] = dict(hparams or {})
    recipe_overrides: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        if key in spec.hparams:
            model_overrides[key] = value
        elif key in defaults:
            recipe_overrides[key] = value
        else:
            raise UserError(f"{model} has no hyperparameter or recipe entry {key!r}: neither the model nor its task "
                            f"({spec.task}) nor the trainer reads it; valid keys: {', '.join(valid)}")
    for key, value in (recipe or {}).items():
        if key not in defaults:
            raise UserError(f"{model} has no recipe entry {key!r}; valid recipe keys: {', '.join(sorted(defaults))}")
        recipe_overrides[key] = value
    flags = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    recipe_overrides.update({key: value for key, value in flags.items() if value is not None})
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    base = {**defaults, **spec.train}
    dataset = dataset or spec.default_dataset
    try:
        merged_recipe = {**base, **{key: coerce(value, base[key]) for key, value in recipe_overrides.items()}}
        merged_hparams = spec.resolve_hparams(model_overrides)
        from_dataset = tasks.get(spec.task).dataset_hparams(dataset)
        fixed = spec.resolve_hparams(from_dataset)
    except (TypeError, ValueError) as e:
        raise UserError(f"{model}: {e}") from None
    except zoo.ZooError as e:
        raise UserError(str(e)) from None
    for key in from_dataset:
        if key in model_overrides and merged_hparams[key] != fixed[key]:
            raise UserError(f"{model}: {key}={merged_hparams[key]!r} disagrees with {dataset}, which fixes "
                            f"{key}={fixed[key]!r}; leave it out")
        merged_hparams[key] = fixed[key]
    return RunConfig(model=model, task=spec.task, dataset=dataset, hparams=merged_hparams,
                     recipe=merged_recipe, labels=spec.labels, strategy=strategy, seed=seed)
