"""Tasks: what a kind of problem adds around a model. The contract is `pipelines.tasks.base.Task`.

    task_class = tasks.get("image_classification")   # the Task subclass
    task = task_class(run_config)                     # its hooks for one run
"""
from __future__ import annotations

import zoo
from pipelines.tasks.base import TEST_SPLIT, TRAIN_SPLIT, VALIDATION_SPLIT, Splits, Task
from pipelines.tasks.detection import Detection
from pipelines.tasks.forecasting import Forecasting
from pipelines.tasks.image_classification import ImageClassification
from pipelines.tasks.image_generation import ImageGeneration
from pipelines.tasks.language_modelling import LanguageModelling
from pipelines.tasks.reinforcement_learning import DeepQLearning, TabularQLearning
from pipelines.tasks.segmentation import Segmentation
from pipelines.tasks.text_classification import TextClassification
from pipelines.tasks.translation import Translation

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    ImageClassification, Segmentation, Detection, ImageGeneration, LanguageModelling, TextClassification,
    Translation, Forecasting, DeepQLearning, TabularQLearning)}
assert set(TASKS) == set(zoo.TASKS), "every task the registry names has one Task subclass"


def get(name: str) -> type[Task]:
    """The Task subclass of task `name` (a name from `zoo.TASKS`)."""
    try:
        return TASKS[name]
    except KeyError:
        raise zoo.ZooError(f"unknown task {name!r}; one of {', '.join(TASKS)}") from None


__all__ = ["TASKS", "TEST_SPLIT", "TRAIN_SPLIT", "VALIDATION_SPLIT", "Splits", "Task", "get"]
