"""The training loop every task shares: AdamW with a warm-up and decay schedule, EMA, crash-safe checkpoints and
exact resume, the loss curve and logger, and, at the end of an epoch, sample grids, evaluations and exports on
their schedules. A task may split the run into phases (`Task.phases`), each a fresh optimisation with its own
budget, schedule and EMA, ending on a grid, an evaluation, an export and a checkpoint. What differs between tasks (data, models, loss, grids, evaluation, export) is the task's
(`ddpm_hub.training.tasks.base.Task`).

Exact resume: only the loss draws from the global RNG (augmentation is seeded per (seed, epoch, image), the
DataLoader has its own generator), so the RNG states accelerate saves in each checkpoint make a resumed run end
with the weights of an uninterrupted one. Not with --streaming data (a torch IterableDataset): its length is unknown
(--max_train_steps counts), and a resumed run restarts the stream at the beginning of the checkpoint's epoch.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.streaming import NOT_EXACT
from ..errors import InputError
from .checkpointing import load_checkpoint, resolve_resume_checkpoint, save_checkpoint
from .ema import averaged_copy, make_ema, register_checkpoint_hooks
from .tasks.base import CardInputs, Phase, Task


@dataclass
class TrainingSummary:
    """What a run returns: where the model is and how fast training ran (data fetch included; checkpoint,
    sample-grid, evaluation and export time excluded from train_seconds)."""

    output_dir: Path
    steps: int
    images: int
    train_seconds: float
    wall_seconds: float
    final_loss: float
    phase_seconds: tuple[float, ...] = ()  # wall seconds from the start to the end of each phase this run finished

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.train_seconds, 1e-9)


def train(task: Task, accelerator, args: argparse.Namespace) -> TrainingSummary:
    """Run the loop for `task` through its phases to the last step, exporting at the end of each; returns the summary.
    Call on every process."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    output_dir = Path(args.output_dir)
    resume_path = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    set_seed(args.seed, device_specific=True)
    started = time.perf_counter()

    # 1. the task's data and models; the DataLoader keeps its own generator (each new iterator draws a base seed,
    #    and a resumed run creates one more iterator)
    parts = task.setup(accelerator)
    accelerator.print(parts.dataset.summary())
    if resume_path is None:
        load_weights(parts.models, task.begin_phase(0, None))
    streaming = isinstance(parts.train_data, torch.utils.data.IterableDataset)
    if streaming:  # items in stream order, collated; accelerate's dispatcher gives each process its slice
        dataloader = torch.utils.data.DataLoader(parts.train_data, batch_size=args.train_batch_size)
    else:
        dataloader = torch.utils.data.DataLoader(parts.train_data, batch_size=args.train_batch_size, shuffle=True,
                                                 generator=torch.Generator().manual_seed(args.seed),
                                                 collate_fn=lambda batch: batch)

    # 2. EMA, optimizer (one parameter group per model), the phases and their learning-rate schedules
    models = parts.models
    emas = {name: make_ema(model, args.ema_max_decay, args.ema_inv_gamma, args.ema_power)
            for name, model in models.items()} if args.use_ema else {}
    groups = [{"params": list(model.parameters()), **({"lr": parts.learning_rates[name]}
                                                        if name in parts.learning_rates else {})}
              for name, model in models.items()]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon, foreach=True)
    if streaming:  # a stream's length is unknown: as many passes as --max_train_steps takes (one phase)
        updates_per_epoch = None
    else:
        batches = math.ceil(len(parts.dataset) / (args.train_batch_size * accelerator.num_processes))
        updates_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    phases = task.phases(updates_per_epoch)
    phase_ends = list(itertools.accumulate(phase.steps for phase in phases))
    max_train_steps = phase_ends[-1]
    num_epochs = sys.maxsize if streaming else math.ceil(max_train_steps / updates_per_epoch)
    lr_scheduler = learning_rate_schedule(optimizer, args, [phase.steps for phase in phases],
                                          accelerator.num_processes)
    *prepared, optimizer, dataloader, lr_scheduler = accelerator.prepare(*models.values(), optimizer, dataloader,
                                                                          lr_scheduler)
    model_classes = {name: type(model) for name, model in models.items()}
    models = dict(zip(models, prepared))
    for ema in emas.values():
        ema.to(accelerator.device)
    register_checkpoint_hooks(accelerator, model_classes, emas)

    # 3. resume: weights, optimizer, LR schedule, EMA, RNG states, position in the data, the phase and the task's
    #    own state; a run resumed at the end of a phase (or extended by more phases) first crosses into the next
    global_step, loss_history, card_metrics, phase, state = 0, [], {}, 0, {}
    if resume_path is not None:
        state = load_checkpoint(accelerator, resume_path)
        global_step, loss_history = state["global_step"], state.get("loss_history", [])
        phase = resumed_phase(state, phases, phase_ends, resume_path)
        task.load_state(resume_path, phase)
        accelerator.print(f"resumed from {resume_path} at step {global_step} ({phases[phase].name})")
        while global_step == phase_ends[phase] and phase + 1 < len(phases):
            phase += 1
            next_phase(task, accelerator, args, models, emas, optimizer, phase)
    if streaming:  # the stream restarts at the beginning of the checkpoint's epoch: not exact, and said so
        first_epoch, resume_batches = int(state.get("epoch", 0)), 0
        if resume_path is not None:
            accelerator.print(NOT_EXACT)
    else:
        first_epoch = global_step // updates_per_epoch
        resume_batches = (global_step % updates_per_epoch) * args.gradient_accumulation_steps
    if accelerator.is_main_process and args.logger != "none":
        accelerator.init_trackers("train_ddpm", config=task_hyperparameters(task, args),
                                  init_kwargs={"tensorboard": TENSORBOARD_WRITER})

    # 4. the loop; at the end of each phase: its grid, evaluation and export, a checkpoint, then the next phase
    phase_start = lambda index: phase_ends[index] - phases[index].steps  # noqa: E731
    new_bar = lambda index: tqdm(  # noqa: E731
        total=phases[index].steps, initial=global_step - phase_start(index), unit="step",
        disable=not accelerator.is_local_main_process,
        desc=phases[index].name if len(phases) > 1 else "training")
    progress = new_bar(phase)
    images_seen, train_seconds, last_tick, acted_at = 0, 0.0, time.perf_counter(), None
    phase_seconds: list[float] = []
    with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's grad mode
        for epoch in range(first_epoch, num_epochs if global_step < max_train_steps else first_epoch):
            for model in models.values():
                model.train()
            dataloader.set_epoch(epoch)
            parts.dataset.set_epoch(epoch, seed=args.seed)
            epoch_batches = accelerator.skip_first_batches(dataloader, resume_batches) \
                if epoch == first_epoch and not streaming else dataloader
            for batch in epoch_batches:
                with accelerator.accumulate(*models.values()):
                    loss = task.loss(batch, models)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        parameters = [p for model in models.values() for p in model.parameters()]
                        accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                images_seen += task.batch_size(batch) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                now = time.perf_counter()
                train_seconds, last_tick = train_seconds + now - last_tick, now
                for name, ema in emas.items():
                    ema.step(models[name].parameters())
                global_step += 1
                step_loss = accelerator.gather(loss.detach()).mean().item()
                if not math.isfinite(step_loss):
                    raise InputError(f"the loss became {step_loss} at step {global_step}: lower --learning_rate "
                                     f"(now {args.learning_rate}) or --max_grad_norm, or check the data")
                loss_history.append(round(step_loss, 6))
                logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
                if len(phases) > 1:
                    logs["phase"] = phase
                if emas:
                    logs["ema_decay"] = next(iter(emas.values())).cur_decay_value
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{logs['lr']:.2e}")
                log_scalars(accelerator, logs, global_step)
                phase_end = global_step == phase_ends[phase]
                if phase_end:
                    card_metrics = _end_of_epoch(task, accelerator, args, models, emas, epoch, global_step, True,
                                                 loss_history, card_metrics)
                    acted_at = global_step
                if phase_end or global_step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, global_step,
                                    {"epoch": epoch, "loss_history": loss_history, "phase": phase,
                                     "phase_steps": [p.steps for p in phases]},
                                    args.checkpoints_total_limit, write_extra=task.save_state)
                if phase_end:
                    phase_seconds.append(time.perf_counter() - started)
                    if phase + 1 < len(phases):
                        progress.close()
                        phase += 1
                        next_phase(task, accelerator, args, models, emas, optimizer, phase)
                        progress = new_bar(phase)
                    last_tick = time.perf_counter()
                elif global_step % args.checkpointing_steps == 0:
                    last_tick = time.perf_counter()
                if global_step >= max_train_steps:
                    break
            resume_batches = 0
            if acted_at != global_step:  # nothing trained since a phase's end: its grid and export stand
                card_metrics = _end_of_epoch(task, accelerator, args, models, emas, epoch, global_step, False,
                                             loss_history, card_metrics)
            last_tick = time.perf_counter()
            if global_step >= max_train_steps:
                break
    progress.close()
    if accelerator.num_processes > 1:  # every rank must hold the same weights after synchronised updates
        print(f"[rank {accelerator.process_index}] weights sha256 {weights_digest(*models.values())}", flush=True)
    accelerator.end_training()
    summary = TrainingSummary(output_dir, global_step, images_seen, train_seconds, time.perf_counter() - started,
                              recent_loss(loss_history), tuple(phase_seconds))
    accelerator.print(f"done: {summary.steps} steps in {summary.wall_seconds:.0f}s ({summary.images_per_second:.1f} "
                      f"images/s while training, final loss {summary.final_loss:.4f}); model in {output_dir}")
    return summary


def learning_rate_schedule(optimizer, args: argparse.Namespace, phase_steps: list[int], num_processes: int):
    """--lr_scheduler with --lr_warmup_steps over each phase: diffusers' `get_scheduler`, restarted at the first
    step of every phase. accelerate steps a prepared schedule once per process per update, so lengths count
    process-steps.

    One phase: `get_scheduler` itself. Several: a LambdaLR whose multiplier at a step is that of the step's own
    phase, counted from the phase's start; diffusers builds its multipliers only inside `get_scheduler`, so each is
    taken from a schedule built over a throwaway optimizer at the same learning rate (polynomial decay reads it)."""
    from diffusers.optimization import get_scheduler

    def schedule(target, steps: int):
        return get_scheduler(args.lr_scheduler, target, num_warmup_steps=args.lr_warmup_steps * num_processes,
                             num_training_steps=steps * num_processes)

    if len(phase_steps) == 1:
        return schedule(optimizer, phase_steps[0])
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.learning_rate)
    multipliers = [schedule(probe, steps).lr_lambdas[0] for steps in phase_steps]
    starts = [0, *itertools.accumulate(steps * num_processes for steps in phase_steps[:-1])]

    def multiplier(step: int) -> float:
        index = bisect.bisect_right(starts, step) - 1
        return multipliers[index](step - starts[index])

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def resumed_phase(state: dict, phases: list[Phase], phase_ends: list[int], path: Path) -> int:
    """The phase a checkpoint's models belong to (a checkpoint without one: the phase holding its step), after
    checking that the phases before it have the budgets they had when it was saved and that its own still reaches
    its step (a run may be resumed with a longer last phase, or more phases)."""
    step = state["global_step"]
    phase = state.get("phase", min(bisect.bisect_left(phase_ends, step), len(phases) - 1))
    current = [p.steps for p in phases]
    saved = state.get("phase_steps", current[:phase])
    if phase >= len(phases) or saved[:phase] != current[:phase] or step > phase_ends[phase]:
        raise InputError(f"checkpoint {path} (step {step}) was saved by a run whose phases had {saved} steps, now "
                         f"{current}: resume with the flags of that run (only its current phase may grow, and later "
                         "ones change)")
    return phase


def next_phase(task: Task, accelerator, args: argparse.Namespace, models: dict, emas: dict, optimizer,
               index: int) -> None:
    """Start phase `index` on every process: the task's `begin_phase` sees the finished models (EMA weights when
    EMA is on) and may hand the trained models new weights; AdamW's moments and the EMA start over."""
    finished = {name: averaged_copy(accelerator.unwrap_model(model), emas.get(name)) for name, model in models.items()}
    load_weights({name: accelerator.unwrap_model(model) for name, model in models.items()},
                 task.begin_phase(index, finished))
    optimizer.state.clear()
    for name in emas:
        emas[name] = make_ema(accelerator.unwrap_model(models[name]), args.ema_max_decay, args.ema_inv_gamma,
                              args.ema_power)
        emas[name].to(accelerator.device)


def load_weights(models: dict[str, torch.nn.Module], weights: dict[str, dict] | None) -> None:
    """Copy state dicts into the models of the same name (in place, so an optimizer and a wrapper keep them)."""
    for name, state_dict in (weights or {}).items():
        models[name].load_state_dict(state_dict)


def _end_of_epoch(task: Task, accelerator, args: argparse.Namespace, models: dict, emas: dict, epoch: int,
                  global_step: int, phase_end: bool, loss_history: list[float], card_metrics: dict) -> dict:
    """The sample grid, the evaluation and the export when their epoch comes (and at the end of each phase), on the
    main process, from one averaged copy of the models (EMA weights when EMA is on; training goes on with the raw
    weights). Returns the card metrics of the latest evaluation."""
    due = lambda every: every and ((epoch + 1) % every == 0 or phase_end)  # noqa: E731
    grid, evaluate, export = due(task.grid_epochs), due(args.eval_epochs), due(args.save_model_epochs)
    if not accelerator.is_main_process or not (grid or evaluate or export):
        return card_metrics
    # grids, evaluations and exports may build models or sample without a generator: under a fork of the RNG the
    # loss draws from, so how often they run does not change what the run trains
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        sampling_models = {name: averaged_copy(accelerator.unwrap_model(model), emas.get(name))
                           for name, model in models.items()}
        output_dir = Path(args.output_dir)
        if grid:
            images, nrow = task.sample_grid(sampling_models)
            save_grid(accelerator, images, nrow, output_dir, epoch, global_step, loss_history)
        if evaluate:
            scalars, card_metrics = task.evaluate(sampling_models, global_step)
            scalars = {name: value for name, value in scalars.items() if value is not None}
            log_scalars(accelerator, {f"eval/{name}": value for name, value in scalars.items()}, global_step)
            accelerator.print(f"evaluation at step {global_step}: "
                              + ", ".join(f"{name} {value:.4g}" for name, value in scalars.items()))
        if export:
            latest = output_dir / "samples" / "latest.png"
            task.export(sampling_models, CardInputs(
                hyperparameters=task_hyperparameters(task, args), final_loss=recent_loss(loss_history),
                sample_grid="samples/latest.png" if latest.is_file() else None, metrics=card_metrics,
                repo_id=args.hub_model_id if args.push_to_hub else None))
    return card_metrics


# tensorboard's SummaryWriter writes events from a background thread and flushes the file every flush_secs and at
# the end; accelerate's TensorBoardTracker.log also flushes on every call, which waits for that thread: about 70 ms a
# step on a 2-core machine, 45% of a step of the default run. `log_scalars` hands the writer every step's values
# without that flush.
TENSORBOARD_WRITER = {"flush_secs": 30, "max_queue": 1000}


def log_scalars(accelerator, values: dict[str, float], step: int) -> None:
    """Every value to the run's trackers at `step`: straight to tensorboard's writer (flushed on its timer and at
    the end of training), and through its own `log` to any other tracker (wandb)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for name, value in values.items():
                tracker.writer.add_scalar(name, value, global_step=step)
        else:
            tracker.log(values, step=step)


def save_grid(accelerator, images: torch.Tensor, nrow: int | None, output_dir: Path, epoch: int, global_step: int,
              loss_history: list[float]) -> None:
    """samples/epoch_E_step_S.png and samples/latest.png from images [N x H x W x C] in [0, 1] (nrow per row,
    upscaled to about 128 pixels each), the loss curve, and the images in tensorboard."""
    from ..plots import image_grid, save_loss_plot, save_png

    grid = image_grid(images, nrow=nrow, scale=max(1, 128 // images.shape[1]))
    save_png(grid, output_dir / "samples" / f"epoch_{epoch + 1:04d}_step_{global_step:06d}.png")
    save_png(grid, output_dir / "samples" / "latest.png")
    save_loss_plot(list(range(1, len(loss_history) + 1)), loss_history, output_dir / "loss_curve.png")
    tracker = next((t.writer for t in accelerator.trackers if t.name == "tensorboard"), None)
    if tracker is not None:
        tracker.add_images("samples", images.numpy(), global_step, dataformats="NHWC")


def task_hyperparameters(task: Task, args: argparse.Namespace) -> dict:
    """The flags of this run worth logging and publishing: the common ones this task reads and its own (never another
    task's), plain values only, no token."""
    skipped = getattr(args, "foreign_flags", frozenset()) | frozenset(task.unused_flags)
    return {name: value for name, value in vars(args).items()
            if name not in skipped and "token" not in name and isinstance(value, (int, float, str, bool))
            and value is not None}


def recent_loss(loss_history: list[float], window: int = 50) -> float:
    """The mean loss of the last `window` steps (NaN before the first)."""
    recent = loss_history[-window:]
    return sum(recent) / len(recent) if recent else float("nan")


def weights_digest(*models) -> str:
    """sha256 over the models' state dicts (names and bytes): equal on every rank after synchronised updates."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
