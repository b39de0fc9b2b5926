"""The tasks train_ddpm.py trains, by --task name. A new task is a new file with a `Task` subclass, added here."""

from __future__ import annotations

from .base import CardInputs, Phase, Task, TrainingParts
from .distill import DistillTask
from .text_to_image import TextToImageTask
from .unconditional import UnconditionalTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (UnconditionalTask, TextToImageTask, DistillTask)}


def foreign_flags(name: str) -> frozenset[str]:
    """The flags other tasks read and task `name` does not: given with `name`, they are an error, and they never
    reach its model card."""
    own = TASKS[name].own_flags()
    return frozenset(flag for other in TASKS.values() for flag in other.own_flags()) - own


def all_artifacts() -> tuple[str, ...]:
    """Every name any task writes into output_dir (--overwrite_output_dir deletes them all: the earlier run may
    have been of another task)."""
    return tuple(dict.fromkeys(name for task in TASKS.values() for name in task.artifacts))


__all__ = ["TASKS", "CardInputs", "Phase", "Task", "TrainingParts", "all_artifacts", "foreign_flags"]
