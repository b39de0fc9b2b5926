"""The interface between the training loop and a task (unconditional, text-to-image, ...).

The loop (`ddpm_hub.training.loop`) owns everything every task needs: accelerate, the optimizer and learning-rate
schedule, EMA, crash-safe checkpoints and exact resume, logging, and when grids, evaluations and exports happen.
A task owns what differs: its own flags, its data and models (`setup`), the loss of a batch, what a sample grid
shows, its evaluation, and the folder it exports. A new task is a new file with a `Task` subclass, registered in
`ddpm_hub.training.tasks.TASKS`.

A run is one or more phases (`Task.phases`; one by default). Each phase is a fresh optimisation of the same models
with its own step budget: the learning-rate schedule (warm-up and decay), the AdamW moments and the EMA start over,
and the grid, evaluation and export come at its end. Between phases the task may hand the models new weights and
change what its loss computes (`begin_phase`: progressive distillation's student becomes the next round's teacher);
what it keeps besides the models goes into each checkpoint (`save_state` / `load_state`), so a run resumes in the
middle of any phase.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch


@dataclass
class TrainingParts:
    """What a task's `setup` hands the loop.

    dataset: the training data: `len`, `set_epoch(epoch, seed=)` (per-epoch augmentation), `summary()`.
    train_data: what the DataLoader reads (the dataset, or a cached view of it such as VAE posteriors); its
        `__getitems__` returns a whole batch.
    models: the models the optimizer trains, by name, the denoiser first; each gets an EMA, a checkpoint folder
        and an AdamW parameter group.
    learning_rates: a model's own peak learning rate (the others use --learning_rate).
    """

    dataset: Any
    train_data: Any
    models: dict[str, torch.nn.Module]
    learning_rates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """One phase of a run: a name for its progress bar and logs, and its budget of optimizer updates."""

    name: str
    steps: int


@dataclass
class CardInputs:
    """What the loop knows that a model card shows: the hyperparameters (this task's flags), the recent loss, the
    latest sample grid (relative to output_dir, or None), the latest evaluation, and the Hub repo when pushing."""

    hyperparameters: dict[str, Any]
    final_loss: float
    sample_grid: str | None
    metrics: dict[str, Any]
    repo_id: str | None


class Task:
    """One kind of model train_ddpm.py trains. Subclasses set `name`, `defaults` and `artifacts`, add their flags in
    `add_arguments`, and implement the methods below; `args` is the parsed command line."""

    name: ClassVar[str]
    help: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}  # flag defaults that differ for this task (a given flag always wins)
    artifacts: ClassVar[tuple[str, ...]] = ()  # what it writes into output_dir besides the loop's files
    switch: ClassVar[str | None] = None  # a store_true flag of its own that selects it like --task NAME does
    # None if it trains from --streaming data (setup's train_data is then a torch IterableDataset), else why not
    no_streaming: ClassVar[str | None] = "this task needs the whole dataset on disk"
    # common flags this task does not read (given, they are an error; they never reach the model card), with why
    unused_flags: ClassVar[dict[str, str]] = {}

    @classmethod
    def defaults_line(cls, aside: str = "") -> str:
        """The help sentence that lists `defaults` (its argument group's description), `aside` before its stop."""
        return ("Defaults that differ for this task (a flag given always wins): "
                + ", ".join(f"--{k} {v}" for k, v in cls.defaults.items()) + aside + ".")

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.output_dir = Path(args.output_dir)

    # ---------------------------------------------------------------------------------------------- flags
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the flags only this task reads (a task that extends another adds only its new ones)."""

    @classmethod
    def own_flags(cls) -> frozenset[str]:
        """The flags this task reads beyond the common ones: what `add_arguments` adds here and in its bases."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if "add_arguments" in vars(klass):
                probe = argparse.ArgumentParser(add_help=False)
                vars(klass)["add_arguments"].__func__(cls, probe)
                names.update(action.dest for action in probe._actions)
        return frozenset(names)

    def check_args(self) -> None:
        """Flag values of this task argparse cannot check: one InputError each, before anything slow."""

    @functools.cached_property
    def loss_config(self):
        """How the loss weighs a batch (`LossConfig`), from the common flags."""
        from ..objectives import LossConfig

        args = self.args
        return LossConfig(args.prediction_type, args.snr_gamma or None, args.noise_offset, args.loss_type,
                          args.vlb_weight)

    def noise_scheduler(self, **overrides):
        """The forward process to train with (our DDPMScheduler) from the flags: T, beta schedule, prediction type,
        timestep spacing; `overrides` add what the task sets itself."""
        from ...scheduling_ddpm import DDPMScheduler

        args = self.args
        return DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                             prediction_type=args.prediction_type, timestep_spacing=args.timestep_spacing,
                             **overrides)

    @property
    def grid_epochs(self) -> int:
        """A sample grid every this many epochs (and at the end of each phase)."""
        return self.args.save_images_epochs

    # ------------------------------------------------------------------------------------------ phases
    def phases(self, updates_per_epoch: int) -> list[Phase]:
        """The run's phases in order. Default: one, of --max_train_steps updates (else --num_epochs epochs of
        `updates_per_epoch`)."""
        args = self.args
        return [Phase("training", args.max_train_steps or args.num_epochs * updates_per_epoch)]

    def begin_phase(self, index: int, finished: dict[str, torch.nn.Module] | None) -> dict[str, dict] | None:
        """Phase `index` begins (on every process, before its first step; not again when a run resumes inside it).
        `finished`: the models as the phase before left them (EMA weights when EMA is on; None for the first
        phase). Returns the state dicts the trained models start this phase from, by model name (None: they keep
        their weights)."""
        return None

    def save_state(self, folder: Path) -> None:
        """Write what the task keeps besides the models (a teacher, figures) into checkpoint `folder` (main process,
        before the checkpoint's manifest)."""

    def load_state(self, folder: Path, phase: int) -> None:
        """Restore what `save_state` wrote, on every process of a run resuming inside phase `phase`."""

    # --------------------------------------------------------------------------------------- the run
    def setup(self, accelerator) -> TrainingParts:
        """Load the data and build the models (on `accelerator.device`): cheap checks first, then anything slow."""
        raise NotImplementedError

    def loss(self, batch: Any, models: dict[str, torch.nn.Module]) -> torch.Tensor:
        """The scalar loss of one batch, drawing its randomness from torch's global RNG (saved by checkpoints)."""
        raise NotImplementedError

    def batch_size(self, batch: Any) -> int:
        """Images in a batch."""
        return batch.shape[0]

    def sample_grid(self, models: dict[str, torch.nn.Module]) -> tuple[torch.Tensor, int | None]:
        """Images for the sample grid, float [N x H x W x C] in [0, 1], and how many go in a row (None: square).
        `models` hold the EMA weights when EMA is on."""
        raise NotImplementedError

    def evaluate(self, models: dict[str, torch.nn.Module], step: int) -> tuple[dict[str, float], dict[str, Any]]:
        """(scalars for the logger as eval/<name>, labelled rows for the model card's Evaluation table)."""
        return {}, {}

    def export(self, models: dict[str, torch.nn.Module], card: CardInputs) -> None:
        """Write the pipeline folder and its model card into output_dir (main process only)."""
        raise NotImplementedError
