"""tfzoo's model zoo: what each model IS. `list_models()`, `get(name)` -> spec, `build(name, **overrides)`."""
from zoo.registry import TASKS, ModelSpec, build, get, list_models, register_model

# Model families register themselves on import.
from zoo import cnn  # noqa: E402,F401  isort: skip

__all__ = ["TASKS", "ModelSpec", "build", "get", "list_models", "register_model"]
