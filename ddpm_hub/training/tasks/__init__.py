"""The tasks train_ddpm.py trains, by --task name. A new task is a new file with a `Task` subclass, added here."""

from __future__ import annotations

import argparse

from ...errors import InputError
from .base import CardInputs, Phase, Task, TrainingParts
from .class_conditional import ClassConditionalTask
from .distill import DistillTask
from .text_to_image import TextToImageTask
from .unconditional import UnconditionalTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (UnconditionalTask, TextToImageTask, ClassConditionalTask,
                                                               DistillTask)}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Every task's flags, each class's `add_arguments` called once: a base or mixin that several tasks share (the
    unconditional task under the class-conditional one, the guidance flags of both conditional tasks) adds its flags
    once, in a group of its own."""
    added: set[type] = set()
    for task in TASKS.values():
        for klass in reversed(task.__mro__):
            if "add_arguments" in vars(klass) and klass not in added:
                added.add(klass)
                vars(klass)["add_arguments"].__func__(task, parser)


def selected_task(args: argparse.Namespace) -> str:
    """The task to train: the one whose switch flag was given (--class_conditional: class-conditional), else --task.
    A switch and a --task naming another task contradict each other: InputError naming both."""
    for task in TASKS.values():
        if task.switch and getattr(args, task.switch, False):
            if "task" in args.given_flags and args.task != task.name:
                raise InputError(f"--{task.switch} and --task {args.task} contradict each other: --{task.switch} "
                                 f"means --task {task.name}; give one")
            return task.name
    return args.task


def flag_owners(flag: str) -> list[str]:
    """The names of the tasks that read `flag` beyond the common flags."""
    return [name for name, task in TASKS.items() if flag in task.own_flags()]


def foreign_flags(name: str) -> frozenset[str]:
    """The flags other tasks read and task `name` does not: given with `name`, they are an error, and they never
    reach its model card."""
    own = TASKS[name].own_flags()
    return frozenset(flag for other in TASKS.values() for flag in other.own_flags()) - own


def all_artifacts() -> tuple[str, ...]:
    """Every name any task writes into output_dir (--overwrite_output_dir deletes them all: the earlier run may
    have been of another task)."""
    return tuple(dict.fromkeys(name for task in TASKS.values() for name in task.artifacts))


__all__ = ["TASKS", "CardInputs", "Phase", "Task", "TrainingParts", "add_task_arguments", "all_artifacts", "flag_owners",
           "foreign_flags", "selected_task"]
