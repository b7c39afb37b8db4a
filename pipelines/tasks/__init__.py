"""Tasks: what a kind of problem adds around a model (loss, metrics, TensorBoard extras, signatures).

Each task module provides:
  preprocess(spec, recipe, training) -> fn(x, y) -> (x, y)   on batches from `pipelines.data.load`
  compile(model, spec, recipe, steps_per_epoch)       loss, metrics, optimizer with its schedule
  callbacks(spec, run_dir, sample_batch) -> [Callback]   TensorBoard extras
  signatures(model, spec) -> {name: tf.function}      the SavedModel's serving signatures
  warmup_requests(spec, sample_batch) -> [(signature_name, {input: ndarray})]
"""
from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {"image_classification": "pipelines.tasks.image_classification"}


def get(task: str) -> ModuleType:
    """The task module for `task` (a name from `zoo.TASKS`)."""
    if task not in _MODULES:
        raise NotImplementedError(f"task {task!r} has no pipeline yet; implemented: {sorted(_MODULES)}")
    return importlib.import_module(_MODULES[task])
