"""The model registry: one `ModelSpec` per zoo entry, registered by a decorator on its builder."""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

import keras

# Tasks a spec may name; `pipelines.tasks` has one module per task.
TASKS = (
    "image_classification",
    "segmentation",
    "detection",
    "image_generation",
    "language_modelling",
    "text_classification",
    "translation",
    "forecasting",
    "reinforcement_learning",
    "tabular_reinforcement_learning",
)


class ZooError(KeyError):
    """A model name or hyperparameter the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a zoo model is: builder, task, default dataset, hyperparameters, inputs, labels, recipe.

    `hparams` are the builder's keyword arguments; `train` is the model's own training recipe (epochs, batch
    size, learning rate, ...): the entries where it departs from its task's and the trainer's defaults
    (`pipelines.config.resolve` merges them into a run's config; the spec itself never changes).
    """

    name: str
    task: str
    builder: Callable[..., keras.Model]
    default_dataset: str
    hparams: dict[str, Any]
    input_spec: dict[str, Any]
    labels: tuple[str, ...] = ()
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""

    def resolve_hparams(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with `overrides`, each override cast to the default's type."""
        merged = dict(self.hparams)
        for key, value in (overrides or {}).items():
            if key not in self.hparams:
                known = ", ".join(sorted(self.hparams))
                raise ZooError(f"model {self.name!r} has no hyperparameter {key!r}; known: {known}")
            merged[key] = coerce(value, self.hparams[key])
        return merged


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    task: str,
    default_dataset: str,
    hparams: dict[str, Any],
    input_spec: dict[str, Any],
    labels: tuple[str, ...] = (),
    train: dict[str, Any] | None = None,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register the decorated builder under `name`; its docstring's first line becomes the description."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(
            name=name,
            task=task,
            builder=builder,
            default_dataset=default_dataset,
            hparams=dict(hparams),
            input_spec=dict(input_spec),
            labels=tuple(labels),
            train=dict(train or {}),
            description=doc[0] if doc else "",
        )
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style `pattern`, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get(name: str) -> ModelSpec:
    """The spec registered under `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def build(name: str, **overrides: Any) -> keras.Model:
    """An uncompiled Keras model for `name`, with hyperparameter `overrides`."""
    spec = get(name)
    return spec.builder(**spec.resolve_hparams(overrides))


def coerce(value: Any, default: Any) -> Any:
    """Cast a CLI string (or any value) to the type of `default`."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(default, (tuple, list)):
        items = [v for v in value.split(",") if v]
        return type(default)(coerce(v, default[0]) if default else v for v in items)
    return type(default)(value)
