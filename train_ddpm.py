"""Train a DDPM with accelerate and write a diffusers DDPMPipeline folder you can load and share.

    accelerate launch train_ddpm.py                      # built-in digits, CPU-sized model, ~10 minutes
    accelerate launch train_ddpm.py --train_data_dir my_images --resolution 32 --output_dir my-ddpm

Flags follow diffusers' examples/unconditional_image_generation/train_unconditional.py where they overlap.
The result loads with stock diffusers: `DDPMPipeline.from_pretrained(output_dir)(batch_size=8)`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger("train_ddpm")


@dataclass
class TrainingSummary:
    """What `main` returns: where the model is and how fast training ran (data fetch included; checkpoint,
    sample-grid and export time excluded from train_seconds)."""

    output_dir: Path
    steps: int
    images: int
    train_seconds: float
    wall_seconds: float
    final_loss: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.train_seconds, 1e-9)
RUN_ARTIFACTS = ("model_index.json", "unet", "scheduler", "README.md", "samples", "logs", "loss_curve.png")


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's example lines as written and shows each default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _OneLineParser(description=__doc__, formatter_class=_HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset_name", default=None,
                      help="a hub dataset id, a local dataset saved with save_to_disk, or 'digits' (built in; the "
                           "default when --train_data_dir is not given)")
    data.add_argument("--dataset_config_name", default=None, help="the dataset's config name")
    data.add_argument("--train_data_dir", default=None, help="a folder of images, scanned recursively")
    data.add_argument("--image_column", default=None, help="the image column of a datasets dataset (default: 'image')")
    data.add_argument("--cache_dir", default=None, help="where datasets caches downloads")
    data.add_argument("--resolution", type=int, default=16, help="training resolution (pixels, square)")
    data.add_argument("--num_channels", type=int, default=None, choices=(1, 3),
                      help="1 or 3; default follows the data (1 for grayscale, 3 for colour)")
    data.add_argument("--center_crop", action="store_true", help="center-crop instead of random-crop")
    data.add_argument("--random_flip", action="store_true", help="random horizontal flips")

    model = p.add_argument_group("model and diffusion")
    model.add_argument("--model_config_name_or_path", default=None,
                       help="a UNet2DModel config JSON (file or folder with config.json); default: a CPU-sized UNet")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the number of diffusion steps")
    model.add_argument("--ddpm_num_inference_steps", type=int, default=1000, help="DDPM steps for sample grids")
    model.add_argument("--ddpm_beta_schedule", default="linear", help="linear, scaled_linear, squaredcos_cap_v2, "
                                                                      "sigmoid")
    model.add_argument("--prediction_type", default="epsilon", help="epsilon, sample or v_prediction")
    model.add_argument("--loss_type", default="simple", help="simple (L_simple) or hybrid (L_simple + lambda L_vlb "
                                                             "with a learned_range variance, Improved DDPM)")
    model.add_argument("--vlb_weight", type=float, default=0.001, help="lambda of the hybrid loss")
    model.add_argument("--snr_gamma", type=float, default=None, help="min-SNR-gamma loss weighting (e.g. 5.0)")
    model.add_argument("--noise_offset", type=float, default=0.0, help="noise offset (e.g. 0.05)")

    train = p.add_argument_group("optimisation")
    train.add_argument("--output_dir", default="ddpm-digits-16", help="where the pipeline, checkpoints, samples go")
    train.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier run in output_dir")
    train.add_argument("--train_batch_size", type=int, default=64, help="batch size per process")
    train.add_argument("--eval_batch_size", type=int, default=16, help="images per sample grid")
    train.add_argument("--num_epochs", type=int, default=36, help="passes over the data (unless --max_train_steps)")
    train.add_argument("--max_train_steps", type=int, default=None, help="optimizer steps; overrides --num_epochs")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    train.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate")
    train.add_argument("--lr_scheduler", default="cosine", help="a diffusers get_scheduler name (cosine, linear, "
                                                                "constant, constant_with_warmup, ...)")
    train.add_argument("--lr_warmup_steps", type=int, default=100, help="linear warm-up steps")
    train.add_argument("--adam_beta1", type=float, default=0.95)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-6)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    train.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True,
                       help="keep an exponential moving average of the weights and export it")
    train.add_argument("--ema_inv_gamma", type=float, default=1.0)
    train.add_argument("--ema_power", type=float, default=3 / 4)
    train.add_argument("--ema_max_decay", type=float, default=0.999)
    train.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"),
                       help="autocast precision (bf16 is fast on CPUs with AMX)")
    train.add_argument("--seed", type=int, default=0, help="seed for data order, noise and sample grids")

    out = p.add_argument_group("logging, checkpoints, hub")
    out.add_argument("--logger", default="tensorboard", choices=("tensorboard", "wandb", "none"))
    out.add_argument("--logging_dir", default="logs", help="tensorboard folder, relative to output_dir")
    out.add_argument("--save_images_epochs", type=int, default=12, help="sample grid every N epochs")
    out.add_argument("--save_model_epochs", type=int, default=12, help="export the pipeline every N epochs")
    out.add_argument("--checkpointing_steps", type=int, default=500, help="full training state every N steps")
    out.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most N checkpoints")
    out.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint path, or 'latest'")
    out.add_argument("--push_to_hub", action="store_true", help="upload the pipeline folder to the Hugging Face Hub")
    out.add_argument("--hub_model_id", default=None, help="repo id (default: output_dir's name)")
    out.add_argument("--hub_token", default=None, help="token for the upload (used, never written anywhere)")
    out.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    return p.parse_args(argv)


def main(args: argparse.Namespace, hub_api=None) -> TrainingSummary:
    """Train and export. `hub_api` replaces huggingface_hub.HfApi (the network boundary) for --push_to_hub."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from ddpm_hub.checkpointing import load_checkpoint, resolve_resume_checkpoint, save_checkpoint
    from ddpm_hub.data import load_image_dataset
    from ddpm_hub.errors import InputError
    from ddpm_hub.scheduling_ddpm import DDPMScheduler
    from ddpm_hub.training import (LossConfig, build_unet, diffusion_loss, read_unet_config, steps_per_epoch,
                                   unet_config_for)

    # 1. check the flags and output_dir before anything slow
    _check_args(args)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    output_dir = Path(args.output_dir)
    loss_config = LossConfig(args.prediction_type, args.snr_gamma, args.noise_offset, args.loss_type, args.vlb_weight)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                                    prediction_type=args.prediction_type, variance_type=loss_config.variance_type)
    # accelerate forms gloo ranks from torchrun's WORLD_SIZE on a CPU-only machine only when told cpu=True
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    _use_all_cpu_cores(accelerator)
    _check_output_dir(output_dir, args, accelerator)
    resume_path = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    set_seed(args.seed, device_specific=True)

    # 2. data, decoded once into uint8 tensors, with the channels a user's UNet config asks for
    user_config = read_unet_config(args.model_config_name_or_path)
    channels = _channels(args.num_channels, user_config)
    dataset = load_image_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column,
                                 args.resolution, args.center_crop, args.random_flip, channels, args.cache_dir)
    unet_config = unet_config_for(user_config, args.resolution, dataset.num_channels,
                                  learned_variance=args.loss_type == "hybrid")
    accelerator.print(dataset.summary())
    # Only the training loss may draw from the global RNG, so that its saved state makes resume exact:
    # augmentation is seeded per (seed, epoch, image), and the DataLoader gets its own generator (each new
    # iterator draws a base seed, and a resumed run creates one more iterator).
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(args.seed),
                                             collate_fn=lambda batch: batch)

    # 3. model, EMA, optimizer, learning-rate schedule
    unet = build_unet(unet_config)
    ema = _make_ema(unet, args) if args.use_ema else None
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon, foreach=True)
    updates_per_epoch = steps_per_epoch(math.ceil(len(dataset) / (args.train_batch_size * accelerator.num_processes)),
                                        args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    # accelerate steps a prepared LR schedule once per process per update: lengths count process-steps
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_train_steps * accelerator.num_processes)
    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    _register_checkpoint_hooks(accelerator, ema)

    # 4. resume: weights, optimizer, LR schedule, EMA, RNG states, position in the data
    global_step, loss_history = 0, []
    if resume_path is not None:
        state = load_checkpoint(accelerator, resume_path)
        global_step, loss_history = state["global_step"], state.get("loss_history", [])
        accelerator.print(f"resumed from {resume_path} at step {global_step}")
    first_epoch = global_step // updates_per_epoch
    resume_batches = (global_step % updates_per_epoch) * args.gradient_accumulation_steps

    if accelerator.is_main_process and args.logger != "none":
        accelerator.init_trackers("train_ddpm", config=_loggable(args))

    # 5. the loop
    progress = tqdm(total=max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc="training", unit="step")
    started, images_seen, train_seconds = time.perf_counter(), 0, 0.0
    last_tick = started
    for epoch in range(first_epoch, num_epochs):
        unet.train()
        dataloader.set_epoch(epoch)
        dataset.set_epoch(epoch, seed=args.seed)
        batches = accelerator.skip_first_batches(dataloader, resume_batches) if epoch == first_epoch else dataloader
        for clean in batches:
            with accelerator.accumulate(unet):
                loss = diffusion_loss(unet, clean, noise_scheduler, loss_config)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            images_seen += clean.shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            now = time.perf_counter()
            train_seconds, last_tick = train_seconds + now - last_tick, now
            if ema is not None:
                ema.step(unet.parameters())
            global_step += 1
            step_loss = accelerator.gather(loss.detach()).mean().item()
            if not math.isfinite(step_loss):
                raise InputError(f"the loss became {step_loss} at step {global_step}: lower --learning_rate "
                                 f"(now {args.learning_rate}) or --max_grad_norm, or check the data")
            loss_history.append(round(step_loss, 6))
            logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            if ema is not None:
                logs["ema_decay"] = ema.cur_decay_value
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
                save_checkpoint(accelerator, output_dir, global_step,
                                {"epoch": epoch, "loss_history": loss_history}, args.checkpoints_total_limit)
                last_tick = time.perf_counter()
            if global_step >= max_train_steps:
                break
        resume_batches = 0
        last_epoch = epoch == num_epochs - 1 or global_step >= max_train_steps
        if (epoch + 1) % args.save_images_epochs == 0 or last_epoch:
            _save_samples(accelerator, unet, ema, noise_scheduler, args, epoch, global_step, loss_history)
        if (epoch + 1) % args.save_model_epochs == 0 or last_epoch:
            _export(accelerator, unet, ema, noise_scheduler, args, loss_history)
        last_tick = time.perf_counter()
        if global_step >= max_train_steps:
            break
    progress.close()
    if accelerator.num_processes > 1:  # every rank must hold the same weights after synchronised updates
        print(f"[rank {accelerator.process_index}] weights sha256 {_weights_digest(unet)}", flush=True)

    # 6. share, summarise
    if accelerator.is_main_process and args.push_to_hub:
        from ddpm_hub.hub import push_to_hub

        url = push_to_hub(output_dir, args.hub_model_id or output_dir.resolve().name, token=args.hub_token,
                          private=args.hub_private_repo, api=hub_api)
        accelerator.print(f"pushed to {url}")
    accelerator.end_training()
    summary = TrainingSummary(output_dir, global_step, images_seen, train_seconds, time.perf_counter() - started,
                              _recent_loss(loss_history))
    accelerator.print(f"done: {summary.steps} steps in {summary.wall_seconds:.0f}s ({summary.images_per_second:.1f} "
                      f"images/s while training, final loss {summary.final_loss:.4f}); model in {output_dir}")
    return summary


# ----------------------------------------------------------------------------- helpers
def _check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check; one InputError each."""
    from ddpm_hub.errors import InputError
    from ddpm_hub.scheduling_ddpm import BETA_SCHEDULES, PREDICTION_TYPES
    from ddpm_hub.training import LOSS_TYPES

    positive = ("train_batch_size", "eval_batch_size", "num_epochs", "gradient_accumulation_steps",
                "ddpm_num_steps", "ddpm_num_inference_steps", "save_images_epochs", "save_model_epochs",
                "checkpointing_steps", "resolution")
    for name in positive:
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise InputError(f"--max_train_steps must be a positive integer, got {args.max_train_steps}")
    if args.ddpm_num_inference_steps > args.ddpm_num_steps:
        raise InputError(f"--ddpm_num_inference_steps {args.ddpm_num_inference_steps} exceeds --ddpm_num_steps "
                         f"{args.ddpm_num_steps}")
    for name, allowed in (("prediction_type", PREDICTION_TYPES), ("ddpm_beta_schedule", BETA_SCHEDULES[:4]),
                          ("loss_type", LOSS_TYPES)):
        if getattr(args, name) not in allowed:
            raise InputError(f"--{name} {getattr(args, name)!r} is not supported; choose one of {', '.join(allowed)}")
    if args.learning_rate <= 0:
        raise InputError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.logger == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise InputError("--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard")


def _check_output_dir(output_dir: Path, args: argparse.Namespace, accelerator) -> None:
    """Refuse a file, and an earlier run unless --overwrite_output_dir or --resume_from_checkpoint says what to do."""
    from ddpm_hub.errors import InputError

    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {str(output_dir)!r} is a file; give a folder")
    earlier = output_dir.is_dir() and any(
        (output_dir / name).exists() for name in ("model_index.json", "unet")) or any(output_dir.glob("checkpoint-*"))
    if earlier and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        raise InputError(f"--output_dir {str(output_dir)!r} holds an earlier run; pass --resume_from_checkpoint latest "
                         "to continue it or --overwrite_output_dir to replace it")
    if earlier and args.overwrite_output_dir and not args.resume_from_checkpoint:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for path in [*(output_dir / name for name in RUN_ARTIFACTS), *output_dir.glob("checkpoint-*")]:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        accelerator.wait_for_everyone()


def _channels(num_channels: int | None, user_config: dict | None) -> int | None:
    """--num_channels, else the user's UNet in_channels, else None (follow the data)."""
    from ddpm_hub.errors import InputError

    configured = (user_config or {}).get("in_channels")
    if num_channels and configured and num_channels != configured:
        raise InputError(f"--num_channels {num_channels} contradicts in_channels={configured} of "
                         "--model_config_name_or_path; drop one of them")
    if configured not in (None, 1, 3):
        raise InputError(f"--model_config_name_or_path has in_channels={configured}; images have 1 or 3 channels")
    return num_channels or configured


def _use_all_cpu_cores(accelerator) -> None:
    """`accelerate launch` without --cpu exports OMP_NUM_THREADS=1 (meant to stop several processes from
    oversubscribing cores); a single CPU process then trains on one core. Give it the cores it may use."""
    import torch

    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ
    if (accelerator.device.type == "cpu" and accelerator.num_processes == 1 and launched_by_accelerate
            and os.environ.get("OMP_NUM_THREADS") == "1"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores > torch.get_num_threads():
            torch.set_num_threads(cores)
            accelerator.print(f"using {cores} CPU threads (accelerate launch had set OMP_NUM_THREADS=1)")


def _make_ema(unet, args: argparse.Namespace):
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel

    return EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
                    power=args.ema_power, foreach=True, model_cls=UNet2DModel, model_config=unet.config)


def _register_checkpoint_hooks(accelerator, ema) -> None:
    """Checkpoints hold the UNet (and its EMA) in diffusers' safetensors format, so each one is a usable model."""
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, "unet"))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        if ema is not None:
            with _quiet_diffusers_config_warnings():  # EMAModel.from_pretrained's own deprecated calls
                loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DModel, foreach=True)
            ema.load_state_dict(loaded.state_dict())
            ema.to(accelerator.device)
        while models:
            model = accelerator.unwrap_model(models.pop())
            loaded = UNet2DModel.from_pretrained(input_dir, subfolder="unet")
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


@contextlib.contextmanager
def _quiet_diffusers_config_warnings():
    import warnings

    from diffusers.utils import logging as diffusers_logging

    config_logger = diffusers_logging.get_logger("diffusers.configuration_utils")
    level = config_logger.level
    config_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        config_logger.setLevel(level)


def _export_weights(accelerator, unet, ema):
    """The UNet to export or sample from: a copy holding the EMA weights when EMA is on."""
    import copy

    model = accelerator.unwrap_model(unet)
    if ema is None:
        return model
    model = copy.deepcopy(model)
    ema.copy_to(model.parameters())
    return model


def _save_samples(accelerator, unet, ema, scheduler, args, epoch: int, global_step: int, loss_history) -> None:
    from ddpm_hub.plots import image_grid, save_loss_plot, save_png
    from ddpm_hub.training import sample_images

    if not accelerator.is_main_process:
        return
    model = _export_weights(accelerator, unet, ema).eval()
    images = sample_images(model, scheduler.config, args.eval_batch_size, args.ddpm_num_inference_steps, seed=args.seed)
    output_dir = Path(args.output_dir)
    grid = image_grid(images, scale=max(1, 128 // args.resolution))
    save_png(grid, output_dir / "samples" / f"epoch_{epoch + 1:04d}_step_{global_step:06d}.png")
    save_png(grid, output_dir / "samples" / "latest.png")
    save_loss_plot(list(range(1, len(loss_history) + 1)), loss_history, output_dir / "loss_curve.png")
    tracker = _tensorboard(accelerator)
    if tracker is not None:
        tracker.add_images("samples", images.numpy(), global_step, dataformats="NHWC")


def _export(accelerator, unet, ema, scheduler, args, loss_history) -> None:
    from ddpm_hub.export import save_pipeline
    from ddpm_hub.model_card import render_model_card

    if not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    save_pipeline(output_dir, _export_weights(accelerator, unet, ema), dict(scheduler.config))
    grid = "samples/latest.png" if (output_dir / "samples" / "latest.png").is_file() else None
    render_model_card(output_dir, repo_id=args.hub_model_id if args.push_to_hub else None,
                      dataset_name=args.dataset_name or args.train_data_dir or "digits",
                      hyperparameters=_loggable(args), final_loss=_recent_loss(loss_history), sample_grid=grid)


def _weights_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tensorboard(accelerator):
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            return tracker.writer
    return None


def _loggable(args: argparse.Namespace) -> dict:
    """Hyperparameters safe to log and publish: no token, only plain values."""
    return {k: v for k, v in vars(args).items()
            if "token" not in k and isinstance(v, (int, float, str, bool)) and v is not None}


def _recent_loss(loss_history: list[float], window: int = 50) -> float:
    recent = loss_history[-window:]
    return sum(recent) / len(recent) if recent else float("nan")


def cli(argv: list[str] | None = None) -> int:
    """Run main; a user mistake prints one line and exits 2, anything else keeps its traceback."""
    from ddpm_hub.errors import run_cli

    return run_cli("train_ddpm.py", main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
