"""tfzoo's model zoo: what each model IS. `list_models()`, `get(name)` -> spec, `build(name, **overrides)`.

Every module of this package except `registry` and `labels` is a model family that registers its
entries on import, so a new family appears in the registry (CLI, docs, tests) by adding its file.
"""
import importlib
import pkgutil

from zoo.registry import TASKS, ModelSpec, ZooError, build, get, list_models, register_model

_NOT_FAMILIES = {"registry", "labels"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_FAMILIES and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "ModelSpec", "ZooError", "build", "get", "list_models", "register_model"]
