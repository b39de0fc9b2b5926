"""Train a DDPM with accelerate and write a diffusers DDPMPipeline folder you can load and share.

    accelerate launch --quiet train_ddpm.py                 # built-in digits, CPU-sized model, ~10 minutes
    accelerate launch --quiet train_ddpm.py --train_data_dir my_images --resolution 32 --output_dir my-ddpm
    accelerate launch --quiet train_ddpm.py --task text-to-image   # built-in captioned shapes, latent text-to-image

--quiet: a mistake ends on our one-line message, not on accelerate's launcher traceback.

Flags follow diffusers' examples/unconditional_image_generation/train_unconditional.py where they overlap, and
for --task text-to-image its examples/text_to_image/train_text_to_image.py.
The result loads with stock diffusers: `DDPMPipeline.from_pretrained(output_dir)(batch_size=8)`, or for
text-to-image `StableDiffusionPipeline.from_pretrained(output_dir, safety_checker=None)("a red circle")`.
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
RUN_ARTIFACTS = ("model_index.json", "unet", "scheduler", "README.md", "samples", "logs", "loss_curve.png",
                 "vae", "text_encoder", "tokenizer", "vae_reconstructions.png")
TASKS = ("unconditional", "text-to-image")
# Defaults that differ per task (flags whose argparse default is None, or that text-to-image sizes differently;
# a flag given on the command line always wins).
TASK_DEFAULTS = {
    "unconditional": {"resolution": 16, "output_dir": "ddpm-digits-16"},
    "text-to-image": {"resolution": 32, "output_dir": "ldm-shapes-32", "num_epochs": 40, "learning_rate": 1e-3,
                      "lr_warmup_steps": 200, "eval_epochs": 20, "eval_num_samples": 180,
                      "save_model_epochs": 20, "checkpointing_steps": 1000},
}
# Flags that only one task reads: given with the other task, they are an error rather than silently ignored.
TEXT_TO_IMAGE_FLAGS = ("caption_column", "num_images", "pretrained_model_name_or_path", "pretrained_vae_name_or_path",
                       "pretrained_text_encoder_name_or_path", "tokenizer_max_length", "conditioning_dropout_prob",
                       "text_encoder_learning_rate", "vae_num_steps", "vae_batch_size", "vae_learning_rate",
                       "vae_beta", "validation_prompts", "num_validation_images", "validation_epochs",
                       "guidance_scale")
UNCONDITIONAL_FLAGS = ("ddpm_num_inference_steps", "save_images_epochs", "vlb_weight", "eval_bpd_timesteps",
                       "eval_bpd_images")


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's example lines as written and shows each default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the per-task defaults (TASK_DEFAULTS) filled in; `args.given_flags` names the flags that were
    on the command line."""
    p = _parser()
    args = p.parse_args(argv)
    unset = object()
    probe = p.parse_args(argv, namespace=argparse.Namespace(**{name: unset for name in vars(args)}))
    args.given_flags = frozenset(name for name, value in vars(probe).items() if value is not unset)
    for name, value in TASK_DEFAULTS[args.task].items():
        if name not in args.given_flags:
            setattr(args, name, value)
    if args.timestep_spacing is None:
        args.timestep_spacing = "leading" if args.prediction_type == "epsilon" else "trailing"
    return args


def _parser() -> argparse.ArgumentParser:
    from ddpm_hub.evaluate import bpd_timesteps_arg
    from ddpm_hub.evaluation import SAMPLERS

    p = _OneLineParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--task", default="unconditional", choices=TASKS,
                   help="unconditional: a pixel-space DDPMPipeline; text-to-image: a latent, text-conditioned "
                        "StableDiffusionPipeline (VAE + CLIP text encoder + UNet2DConditionModel)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset_name", default=None,
                      help="a hub dataset id, a local dataset saved with save_to_disk, or 'digits' (built in; the "
                           "default when --train_data_dir is not given)")
    data.add_argument("--dataset_config_name", default=None, help="the dataset's config name")
    data.add_argument("--train_data_dir", default=None, help="a folder of images, scanned recursively")
    data.add_argument("--image_column", default=None, help="the image column of a datasets dataset (default: 'image')")
    data.add_argument("--cache_dir", default=None, help="where datasets caches downloads")
    data.add_argument("--resolution", type=int, default=None,
                      help="training resolution (pixels, square); None: 16, text-to-image 32 (fine-tuning: the "
                           "pretrained U-Net's)")
    data.add_argument("--num_channels", type=int, default=None, choices=(1, 3),
                      help="1 or 3; default follows the data (1 for grayscale, 3 for colour)")
    data.add_argument("--center_crop", action="store_true", help="center-crop instead of random-crop")
    data.add_argument("--random_flip", action="store_true", help="random horizontal flips")
    data.add_argument("--caption_column", default="text",
                      help="text-to-image: the caption column of the dataset or of --train_data_dir's metadata.jsonl")
    data.add_argument("--num_images", type=int, default=None,
                      help="text-to-image: how many built-in shapes to generate (None: 5000), or keep the first N "
                           "images of other data (None: all)")

    model = p.add_argument_group("model and diffusion")
    model.add_argument("--model_config_name_or_path", default=None,
                       help="a UNet2DModel config JSON (file or folder with config.json); default: a CPU-sized UNet")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the number of diffusion steps")
    model.add_argument("--ddpm_num_inference_steps", type=int, default=1000, help="DDPM steps for sample grids")
    model.add_argument("--ddpm_beta_schedule", default="squaredcos_cap_v2",
                       help="linear, scaled_linear, squaredcos_cap_v2, sigmoid")
    model.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                       help="saved in the scheduler config: how fewer-than-T sampling steps are spread, also for "
                            "DDIM/DPM-Solver swapped in from it. Default: trailing (starts at t = T-1) for v and "
                            "sample prediction; leading (diffusers' default) for epsilon, whose x0 = (x_t - "
                            "sqrt(1-abar) eps) / sqrt(abar) blows up at t = T-1 of the cosine schedule")
    model.add_argument("--prediction_type", default="v_prediction", help="epsilon, sample or v_prediction")
    model.add_argument("--loss_type", default="simple", help="simple (L_simple) or hybrid (L_simple + lambda L_vlb "
                                                             "with a learned_range variance, Improved DDPM)")
    model.add_argument("--vlb_weight", type=float, default=0.001, help="lambda of the hybrid loss")
    model.add_argument("--snr_gamma", type=float, default=5.0,
                       help="min-SNR-gamma loss weighting, Hang et al. 2023 (0 turns it off)")
    model.add_argument("--noise_offset", type=float, default=0.0, help="noise offset (e.g. 0.05)")

    train = p.add_argument_group("optimisation")
    train.add_argument("--output_dir", default=None, help="where the pipeline, checkpoints, samples go (None: "
                                                          "ddpm-digits-16, text-to-image ldm-shapes-32)")
    train.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier run in output_dir")
    train.add_argument("--train_batch_size", type=int, default=64, help="batch size per process")
    train.add_argument("--eval_batch_size", type=int, default=16, help="images per sample grid")
    train.add_argument("--num_epochs", type=int, default=45, help="passes over the data (unless --max_train_steps)")
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

    ev = p.add_argument_group("evaluation (ddpm_hub.evaluation; logged to tensorboard and the model card)")
    ev.add_argument("--eval_epochs", type=int, default=15,
                    help="evaluate every N epochs and after the last (0: never): bits/dim, and for the built-in "
                         "digits the Frechet digits distance to held-out digits, its floor, confidence, coverage")
    ev.add_argument("--eval_num_samples", type=int, default=256, help="images sampled for the digits metrics")
    ev.add_argument("--eval_scheduler", default="dpm", choices=SAMPLERS,
                    help="sampler for the evaluation (dpm: DPM-Solver++ 2M)")
    ev.add_argument("--eval_inference_steps", type=int, default=25,
                    help="sampling steps for the evaluation (at most --ddpm_num_steps)")
    ev.add_argument("--eval_bpd_timesteps", type=bpd_timesteps_arg, default=50,
                    help="bits/dim: 'full' (all T terms) or K for the unbiased K-term estimate (K >= T: full)")
    ev.add_argument("--eval_bpd_images", type=int, default=64,
                    help="images for bits/dim: held-out digits, or for other data the first N training images")

    t2i = p.add_argument_group("text-to-image (--task text-to-image; ddpm_hub.text_to_image)",
                               "Defaults that differ for this task (a flag given always wins): "
                               + ", ".join(f"--{k} {v}" for k, v in TASK_DEFAULTS["text-to-image"].items()) + ".")
    t2i.add_argument("--pretrained_model_name_or_path", default=None,
                     help="fine-tune a Stable Diffusion folder (or Hub id): its vae, text encoder, tokenizer and "
                          "scheduler are kept, only its U-Net trains")
    t2i.add_argument("--pretrained_vae_name_or_path", default=None,
                     help="a trained AutoencoderKL (folder or Hub id), used frozen (None: a small one is trained "
                          "first)")
    t2i.add_argument("--pretrained_text_encoder_name_or_path", default=None,
                     help="a CLIP tokenizer + CLIPTextModel (folder or Hub id), used frozen (None: a tokenizer "
                          "built from the captions and a small CLIPTextModel trained with the U-Net)")
    t2i.add_argument("--tokenizer_max_length", type=int, default=16,
                     help="tokens per caption of the built tokenizer, start and end included (longer: truncated)")
    t2i.add_argument("--conditioning_dropout_prob", type=float, default=0.1,
                     help="share of captions replaced by '' (classifier-free guidance)")
    t2i.add_argument("--text_encoder_learning_rate", type=float, default=None,
                     help="peak learning rate of the trained text encoder (None: --learning_rate)")
    t2i.add_argument("--vae_num_steps", type=int, default=800, help="VAE stage: optimizer steps")
    t2i.add_argument("--vae_batch_size", type=int, default=16, help="VAE stage: images per step")
    t2i.add_argument("--vae_learning_rate", type=float, default=1e-3, help="VAE stage: AdamW learning rate")
    t2i.add_argument("--vae_beta", type=float, default=1e-4,
                     help="VAE stage: the KL weight beta = 2c of note 003's objective (ddpm_hub.vae)")
    t2i.add_argument("--validation_prompts", nargs="+", default=None,
                     help="prompts of the validation grid (one row each) and the model card (None: four shapes "
                          "prompts, ddpm_hub.text_to_image.DEFAULT_VALIDATION_PROMPTS)")
    t2i.add_argument("--num_validation_images", type=int, default=4, help="images per validation prompt")
    t2i.add_argument("--validation_epochs", type=int, default=10,
                     help="validation grid every N epochs and after the last")
    t2i.add_argument("--guidance_scale", type=float, default=5.0,
                     help="classifier-free guidance scale of the validation grids and the evaluation")

    out = p.add_argument_group("logging, checkpoints, hub")
    out.add_argument("--logger", default="tensorboard", choices=("tensorboard", "wandb", "none"))
    out.add_argument("--logging_dir", default="logs", help="tensorboard folder, relative to output_dir")
    out.add_argument("--save_images_epochs", type=int, default=15, help="sample grid every N epochs")
    out.add_argument("--save_model_epochs", type=int, default=15, help="export the pipeline every N epochs")
    out.add_argument("--checkpointing_steps", type=int, default=500, help="full training state every N steps")
    out.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most N checkpoints")
    out.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint path, or 'latest'")
    out.add_argument("--push_to_hub", action="store_true", help="upload the pipeline folder to the Hugging Face Hub")
    out.add_argument("--hub_model_id", default=None, help="repo id (default: output_dir's name)")
    out.add_argument("--hub_token", default=None, help="token for the upload (used, never written anywhere)")
    out.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    return p


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
    text_to_image = args.task == "text-to-image"
    loss_config = LossConfig(args.prediction_type, args.snr_gamma or None, args.noise_offset, args.loss_type,
                             args.vlb_weight)
    noise_scheduler = None if text_to_image else DDPMScheduler(
        num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
        prediction_type=args.prediction_type, variance_type=loss_config.variance_type,
        timestep_spacing=args.timestep_spacing)
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

    # 2. data, decoded once into uint8 tensors; text-to-image also gets its frozen parts ready (the VAE stage)
    if text_to_image:
        dataset, train_data, parts = _text_to_image_parts(args, accelerator, output_dir)
        noise_scheduler = parts.scheduler
    else:
        user_config = read_unet_config(args.model_config_name_or_path)
        channels = _channels(args.num_channels, user_config)
        dataset = train_data = load_image_dataset(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column, args.resolution,
            args.center_crop, args.random_flip, channels, args.cache_dir)
        unet_config = unet_config_for(user_config, args.resolution, dataset.num_channels,
                                      learned_variance=args.loss_type == "hybrid")
    accelerator.print(dataset.summary())
    # Only the training loss may draw from the global RNG, so that its saved state makes resume exact:
    # augmentation is seeded per (seed, epoch, image), and the DataLoader gets its own generator (each new
    # iterator draws a base seed, and a resumed run creates one more iterator).
    dataloader = torch.utils.data.DataLoader(train_data, batch_size=args.train_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(args.seed),
                                             collate_fn=lambda batch: batch)

    # 3. the models to train (the U-Net; for text-to-image also its text encoder unless frozen), EMA, optimizer,
    #    learning-rate schedule
    trained = parts.trained_models() if text_to_image else {"unet": build_unet(unet_config)}
    emas = {name: _make_ema(model, args) for name, model in trained.items()} if args.use_ema else {}
    optimizer = torch.optim.AdamW(_parameter_groups(trained, args), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay,
                                  eps=args.adam_epsilon, foreach=True)
    updates_per_epoch = steps_per_epoch(math.ceil(len(dataset) / (args.train_batch_size * accelerator.num_processes)),
                                        args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    # accelerate steps a prepared LR schedule once per process per update: lengths count process-steps
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_train_steps * accelerator.num_processes)
    *prepared, optimizer, dataloader, lr_scheduler = accelerator.prepare(*trained.values(), optimizer, dataloader,
                                                                          lr_scheduler)
    model_classes = {name: type(model) for name, model in trained.items()}
    trained = dict(zip(trained, prepared))
    unet = trained["unet"]
    for ema in emas.values():
        ema.to(accelerator.device)
    _register_checkpoint_hooks(accelerator, model_classes, emas)
    if text_to_image:
        from ddpm_hub.text_to_image import sample_latents, text_to_image_loss

        def compute_loss(batch):
            return text_to_image_loss(unet, trained.get("text_encoder", parts.text_encoder), parts.tokenizer,
                                      sample_latents(batch, parts.vae), batch["captions"], noise_scheduler,
                                      loss_config, args.conditioning_dropout_prob)
    else:
        def compute_loss(batch):
            return diffusion_loss(unet, batch, noise_scheduler, loss_config)

    # 4. resume: weights, optimizer, LR schedule, EMA, RNG states, position in the data
    global_step, loss_history, eval_metrics = 0, [], {}
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
        for model in trained.values():
            model.train()
        dataloader.set_epoch(epoch)
        dataset.set_epoch(epoch, seed=args.seed)
        batches = accelerator.skip_first_batches(dataloader, resume_batches) if epoch == first_epoch else dataloader
        for batch in batches:
            with accelerator.accumulate(*trained.values()):
                loss = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(_parameters(trained), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            images_seen += _batch_size(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            now = time.perf_counter()
            train_seconds, last_tick = train_seconds + now - last_tick, now
            for name, ema in emas.items():
                ema.step(trained[name].parameters())
            global_step += 1
            step_loss = accelerator.gather(loss.detach()).mean().item()
            if not math.isfinite(step_loss):
                raise InputError(f"the loss became {step_loss} at step {global_step}: lower --learning_rate "
                                 f"(now {args.learning_rate}) or --max_grad_norm, or check the data")
            loss_history.append(round(step_loss, 6))
            logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            if emas:
                logs["ema_decay"] = emas["unet"].cur_decay_value
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
        if text_to_image:  # samples, evaluation and export of the EMA pair (U-Net and text encoder)
            components = _sampling_components(accelerator, parts, trained, emas)
            if (epoch + 1) % args.validation_epochs == 0 or last_epoch:
                _save_validation(accelerator, components, args, epoch, global_step, loss_history)
            if args.eval_epochs and ((epoch + 1) % args.eval_epochs == 0 or last_epoch):
                eval_metrics = _evaluate_text_to_image(accelerator, components, args, global_step)
            if (epoch + 1) % args.save_model_epochs == 0 or last_epoch:
                _export_text_to_image(accelerator, components, args, loss_history, eval_metrics)
        else:
            ema = emas.get("unet")
            if (epoch + 1) % args.save_images_epochs == 0 or last_epoch:
                _save_samples(accelerator, unet, ema, noise_scheduler, args, epoch, global_step, loss_history)
            if args.eval_epochs and ((epoch + 1) % args.eval_epochs == 0 or last_epoch):
                eval_metrics = _evaluate(accelerator, unet, ema, noise_scheduler, dataset, args, global_step)
            if (epoch + 1) % args.save_model_epochs == 0 or last_epoch:
                _export(accelerator, unet, ema, noise_scheduler, args, loss_history, eval_metrics)
        last_tick = time.perf_counter()
        if global_step >= max_train_steps:
            break
    progress.close()
    if accelerator.num_processes > 1:  # every rank must hold the same weights after synchronised updates
        print(f"[rank {accelerator.process_index}] weights sha256 {_weights_digest(*trained.values())}", flush=True)

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
                "checkpointing_steps", "resolution", "eval_inference_steps")
    for name in positive:
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name, low in (("eval_epochs", 0), ("eval_num_samples", 2), ("eval_bpd_images", 2)):
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be an integer >= {low}, got {getattr(args, name)}")
    if args.eval_bpd_timesteps is not None and args.eval_bpd_timesteps < 2:
        raise InputError(f"--eval_bpd_timesteps must be 'full' or an integer K >= 2, got {args.eval_bpd_timesteps}")
    if args.eval_bpd_timesteps is not None and args.eval_bpd_timesteps >= args.ddpm_num_steps:
        args.eval_bpd_timesteps = None  # K >= T terms: the full bound, as the help says
    # as the help says; one fewer for DPM-Solver, which fails at all T steps with the saved "leading" spacing
    args.eval_inference_steps = min(args.eval_inference_steps, args.ddpm_num_steps - (args.eval_scheduler == "dpm"))
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
    _check_task_flags(args)
    if args.logger == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise InputError("--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard")


def _check_task_flags(args: argparse.Namespace) -> None:
    """Flags of the other task, and text-to-image flags that contradict each other or a pretrained part; one
    InputError each."""
    from ddpm_hub.errors import InputError

    given = getattr(args, "given_flags", frozenset())
    if args.task == "unconditional":
        for name in TEXT_TO_IMAGE_FLAGS:
            if name in given:
                raise InputError(f"--{name} is a --task text-to-image flag; the unconditional task does not use it "
                                 "(add --task text-to-image, or drop the flag)")
        return
    for name in UNCONDITIONAL_FLAGS:
        if name in given:
            raise InputError(f"--{name} is not used by --task text-to-image (its samples are --validation_prompts "
                             "grids every --validation_epochs, its evaluation prompt adherence): drop the flag")
    if args.loss_type != "simple":
        raise InputError(f"--loss_type {args.loss_type!r} is not supported by --task text-to-image: its L_vlb term "
                         "is a likelihood of 8-bit pixels, and text-to-image denoises VAE latents; use simple")
    pretrained_vae = args.pretrained_vae_name_or_path or args.pretrained_model_name_or_path
    pretrained_text = args.pretrained_text_encoder_name_or_path or args.pretrained_model_name_or_path
    conflicts = [
        (args.pretrained_model_name_or_path and args.pretrained_text_encoder_name_or_path,
         ("pretrained_text_encoder_name_or_path",), "the text encoder comes from --pretrained_model_name_or_path"),
        (args.pretrained_model_name_or_path, ("model_config_name_or_path", "ddpm_num_steps", "ddpm_beta_schedule"),
         "the U-Net and the scheduler come from --pretrained_model_name_or_path"),
        (pretrained_vae, ("vae_num_steps", "vae_batch_size", "vae_learning_rate", "vae_beta"),
         "no VAE is trained when a pretrained one is given"),
        (pretrained_text, ("tokenizer_max_length", "text_encoder_learning_rate"),
         "a pretrained text encoder is used frozen, with its own tokenizer"),
    ]
    for applies, names, why in conflicts:
        for name in names:
            if applies and name in given:
                raise InputError(f"--{name} has no effect here: {why}; drop the flag")
    if not 0.0 <= args.conditioning_dropout_prob <= 1.0:
        raise InputError(f"--conditioning_dropout_prob must be between 0 and 1, got {args.conditioning_dropout_prob}")
    if not args.guidance_scale >= 1.0:
        raise InputError(f"--guidance_scale must be >= 1 (1: no guidance), got {args.guidance_scale}")
    for name in ("vae_num_steps", "vae_batch_size", "num_validation_images", "validation_epochs"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.num_images is not None and args.num_images < 1:
        raise InputError(f"--num_images must be a positive integer, got {args.num_images}")
    if args.tokenizer_max_length < 3:
        raise InputError(f"--tokenizer_max_length must be at least 3 (start, one word, end), got "
                         f"{args.tokenizer_max_length}")
    for name in ("vae_learning_rate", "text_encoder_learning_rate"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise InputError(f"--{name} must be positive, got {value}")
    if not args.vae_beta >= 0:
        raise InputError(f"--vae_beta must be >= 0, got {args.vae_beta}")
    if args.validation_prompts is not None and not all(p.strip() for p in args.validation_prompts):
        raise InputError("--validation_prompts holds an empty prompt: give words, e.g. 'a red circle'")


def _check_output_dir(output_dir: Path, args: argparse.Namespace, accelerator) -> None:
    """Refuse a file, and an earlier run unless --overwrite_output_dir or --resume_from_checkpoint says what to do."""
    from ddpm_hub.errors import InputError

    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {str(output_dir)!r} is a file; give a folder")
    earlier = output_dir.is_dir() and any(
        (output_dir / name).exists() for name in ("model_index.json", "unet", "vae")) or any(
        output_dir.glob("checkpoint-*")) or any(output_dir.glob("vae-checkpoint-*"))
    if earlier and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        raise InputError(f"--output_dir {str(output_dir)!r} holds an earlier run; pass --resume_from_checkpoint latest "
                         "to continue it or --overwrite_output_dir to replace it")
    if earlier and args.overwrite_output_dir and not args.resume_from_checkpoint:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for path in [*(output_dir / name for name in RUN_ARTIFACTS), *output_dir.glob("checkpoint-*"),
                         *output_dir.glob("vae-checkpoint-*")]:
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


def _make_ema(model, args: argparse.Namespace):
    """An exponential moving average of `model`'s weights. A diffusers model is its own model_cls (EMAModel saves
    it); a transformers model (the text encoder) is saved by `_save_ema`."""
    from diffusers import ModelMixin
    from diffusers.training_utils import EMAModel

    model_cls = type(model) if isinstance(model, ModelMixin) else None
    return EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
                    power=args.ema_power, foreach=True, model_cls=model_cls, model_config=model.config)


def _parameter_groups(trained: dict, args: argparse.Namespace) -> list[dict]:
    """One AdamW group per trained model: the U-Net at --learning_rate, a trained text encoder at
    --text_encoder_learning_rate (default: --learning_rate)."""
    groups = [{"params": list(trained["unet"].parameters())}]
    if "text_encoder" in trained:
        groups.append({"params": list(trained["text_encoder"].parameters()),
                       "lr": args.text_encoder_learning_rate or args.learning_rate})
    return groups


def _parameters(trained: dict) -> list:
    return [parameter for model in trained.values() for parameter in model.parameters()]


def _batch_size(batch) -> int:
    """Images in a batch: a tensor [B x C x H x W], or a text-to-image dict with B captions."""
    return len(batch["captions"]) if isinstance(batch, dict) else batch.shape[0]


def _register_checkpoint_hooks(accelerator, model_classes: dict, emas: dict) -> None:
    """Checkpoints hold each trained model in its library's safetensors format, so each one is a usable model:
    unet/ (and text_encoder/ when it trains) in the order they were prepared, and their EMAs in unet_ema/,
    text_encoder_ema/. `model_classes` maps each name to the class that loads it back."""
    names = list(model_classes)

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for name, model in zip(names, models):
                model = accelerator.unwrap_model(model)
                if name in emas:
                    _save_ema(emas[name], model, os.path.join(output_dir, f"{name}_ema"))
                model.save_pretrained(os.path.join(output_dir, name))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        for name, ema in emas.items():
            _load_ema(ema, model_classes[name], os.path.join(input_dir, f"{name}_ema"))
            ema.to(accelerator.device)
        for name, model in zip(names, list(models)):
            loaded = model_classes[name].from_pretrained(os.path.join(input_dir, name))
            accelerator.unwrap_model(model).load_state_dict(loaded.state_dict())
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


EMA_STATE_NAME = "ema_state.json"


def _save_ema(ema, model, folder: str) -> None:
    """EMA weights as a loadable model folder: diffusers' EMAModel.save_pretrained (the EMA settings in its
    config.json), or for a transformers model a copy holding the EMA weights plus ema_state.json."""
    import copy
    import json

    if ema.model_cls is not None:
        ema.save_pretrained(folder)
        return
    averaged = copy.deepcopy(model)
    ema.copy_to(averaged.parameters())
    averaged.save_pretrained(folder)
    settings = {key: value for key, value in ema.state_dict().items() if key != "shadow_params"}
    Path(folder, EMA_STATE_NAME).write_text(json.dumps(settings, indent=2) + "\n")


def _load_ema(ema, model_class, folder: str) -> None:
    """Restore `ema` in place from a folder `_save_ema` wrote."""
    import json

    from diffusers.training_utils import EMAModel

    if ema.model_cls is not None:
        with _quiet_diffusers_config_warnings():  # EMAModel.from_pretrained's own deprecated calls
            loaded = EMAModel.from_pretrained(folder, ema.model_cls, foreach=True)
        ema.load_state_dict(loaded.state_dict())
        return
    averaged = model_class.from_pretrained(folder)
    settings = json.loads(Path(folder, EMA_STATE_NAME).read_text())
    ema.load_state_dict({**settings, "shadow_params": [p.detach().clone() for p in averaged.parameters()]})


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
    from ddpm_hub.training import sample_images

    if not accelerator.is_main_process:
        return
    model = _export_weights(accelerator, unet, ema).eval()
    images = sample_images(model, scheduler.config, args.eval_batch_size, args.ddpm_num_inference_steps, seed=args.seed)
    _save_grid(accelerator, images, None, args, epoch, global_step, loss_history)


def _save_grid(accelerator, images, nrow: int | None, args, epoch: int, global_step: int, loss_history) -> None:
    """samples/epoch_E_step_S.png and samples/latest.png from images [N x H x W x C] in [0, 1] (nrow per row),
    the loss curve, and the images in tensorboard."""
    from ddpm_hub.plots import image_grid, save_loss_plot, save_png

    output_dir = Path(args.output_dir)
    grid = image_grid(images, nrow=nrow, scale=max(1, 128 // args.resolution))
    save_png(grid, output_dir / "samples" / f"epoch_{epoch + 1:04d}_step_{global_step:06d}.png")
    save_png(grid, output_dir / "samples" / "latest.png")
    save_loss_plot(list(range(1, len(loss_history) + 1)), loss_history, output_dir / "loss_curve.png")
    tracker = _tensorboard(accelerator)
    if tracker is not None:
        tracker.add_images("samples", images.numpy(), global_step, dataformats="NHWC")


def _evaluate(accelerator, unet, ema, scheduler, dataset, args, global_step: int) -> dict:
    """Score the model being trained (its EMA weights when EMA is on) with `evaluate_model`; log the metrics as
    eval/* and return them labelled for the model card. Built-in 16x16 digits get the sample-quality metrics and
    bits/dim on held-out digits; other data gets bits/dim on its first --eval_bpd_images training images."""
    from ddpm_hub.evaluation import evaluate_model

    if not accelerator.is_main_process:
        return {}
    digits = _is_builtin_digits(args) and dataset.num_channels == 1 and args.resolution == 16
    bpd_images = None
    if not digits:
        bpd_images = dataset.__getitems__(list(range(min(args.eval_bpd_images, len(dataset)))))
    model = _export_weights(accelerator, unet, ema)
    metrics = evaluate_model(model, scheduler, num_samples=args.eval_num_samples, sampler=args.eval_scheduler,
                             num_inference_steps=args.eval_inference_steps, bpd_timesteps=args.eval_bpd_timesteps,
                             bpd_images=bpd_images, bpd_num_images=args.eval_bpd_images, digits=digits,
                             seed=args.seed)
    accelerator.log({f"eval/{name}": value for name, value in metrics.items() if value is not None}, step=global_step)
    summary = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items() if value is not None)
    accelerator.print(f"evaluation at step {global_step}: {summary}")
    return _card_metrics(metrics, args, global_step, digits)


def _card_metrics(metrics: dict, args: argparse.Namespace, global_step: int, digits: bool) -> dict:
    """Evaluation results with the labels a model-card reader needs (what was sampled, against what)."""
    from ddpm_hub.evaluation import SAMPLER_NAMES

    terms = "full bound" if args.eval_bpd_timesteps is None else f"{args.eval_bpd_timesteps}-term estimate"
    where = f"held-out digits, {args.eval_bpd_images} images" if digits else \
        f"first {args.eval_bpd_images} training images"
    card = {"evaluated at step": global_step}
    if digits:
        sampler = SAMPLER_NAMES[args.eval_scheduler]
        card[f"Frechet digits distance ({args.eval_num_samples} samples, {sampler} "
             f"{args.eval_inference_steps} steps)"] = metrics["fd"]
        card["real-vs-real floor at that count / ratio"] = f"{metrics['fd_floor']:.4g} / {metrics['fd_ratio']:.3g}x"
        card["classifier confidence"] = metrics["confidence"]
        card["classes covered / smallest class share"] = (f"{metrics['classes_covered']}/10 / "
                                                          f"{metrics['smallest_class_share']:.3f}")
    card[f"bits/dim ({where}, {terms})"] = f"{metrics['bits_per_dim']:.4f} ± {metrics['bits_per_dim_se']:.4f}"
    return card


def _is_builtin_digits(args: argparse.Namespace) -> bool:
    return args.train_data_dir is None and args.dataset_name in (None, "digits")


def _export(accelerator, unet, ema, scheduler, args, loss_history, eval_metrics: dict) -> None:
    from ddpm_hub.export import save_pipeline
    from ddpm_hub.model_card import render_model_card

    if not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    save_pipeline(output_dir, _export_weights(accelerator, unet, ema), dict(scheduler.config))
    grid = "samples/latest.png" if (output_dir / "samples" / "latest.png").is_file() else None
    render_model_card(output_dir, repo_id=args.hub_model_id if args.push_to_hub else None,
                      dataset_name=args.dataset_name or args.train_data_dir or "digits",
                      hyperparameters=_loggable(args), final_loss=_recent_loss(loss_history), sample_grid=grid,
                      metrics=eval_metrics or None)


# ------------------------------------------------------------------- text-to-image (ddpm_hub.text_to_image)
def _text_to_image_parts(args: argparse.Namespace, accelerator, output_dir: Path):
    """Data and model of --task text-to-image: (the captioned dataset, what the DataLoader reads, the components).

    Cheap checks first (pretrained folders, the data, channel and width agreement), then the slow VAE stage (on
    the main process; every process then loads the saved VAE), then the U-Net. The DataLoader reads the VAE
    posteriors cached once (`LatentDataset`) unless images are augmented per access."""
    import torch

    from ddpm_hub.captioned_data import load_captioned_dataset
    from ddpm_hub.errors import InputError
    from ddpm_hub.scheduling_ddpm import DDPMScheduler
    from ddpm_hub.text_encoder import build_clip_tokenizer, build_text_encoder, load_text_components
    from ddpm_hub.text_to_image import (LatentDataset, TextToImageComponents, build_conditional_unet,
                                        check_caption_lengths, check_cross_attention, conditional_unet_config_for,
                                        latent_size, load_pretrained_components, train_latent_autoencoder)
    from ddpm_hub.training import read_unet_config
    from ddpm_hub.vae import build_vae, check_latent_channels, default_vae_config, load_pretrained_vae

    # pretrained parts: a missing component fails before anything slow
    pretrained = None
    if args.pretrained_model_name_or_path:
        pretrained = load_pretrained_components(args.pretrained_model_name_or_path)
    vae = load_pretrained_vae(args.pretrained_vae_name_or_path) if args.pretrained_vae_name_or_path else \
        pretrained.vae if pretrained else None
    if pretrained and "resolution" not in getattr(args, "given_flags", frozenset()):
        args.resolution = pretrained.unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    channels = args.num_channels
    if vae is not None:
        if channels not in (None, vae.config.in_channels):
            raise InputError(f"--num_channels {channels} contradicts the pretrained VAE's in_channels "
                             f"{vae.config.in_channels}; drop --num_channels")
        channels = vae.config.in_channels
    user_config = read_unet_config(args.model_config_name_or_path)

    # the data, then the text side (a tokenizer built from its captions, or pretrained)
    dataset = load_captioned_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir,
                                     args.image_column, args.caption_column, args.resolution, args.center_crop,
                                     args.random_flip, channels, args.cache_dir, args.num_images, args.seed)
    captions = [text for caption in dataset.captions for text in ((caption,) if isinstance(caption, str) else caption)]
    if pretrained:
        tokenizer, text_encoder = pretrained.tokenizer, pretrained.text_encoder
    elif args.pretrained_text_encoder_name_or_path:
        tokenizer, text_encoder = load_text_components(args.pretrained_text_encoder_name_or_path)
    else:
        tokenizer = build_clip_tokenizer(captions, model_max_length=args.tokenizer_max_length)
        text_encoder = build_text_encoder(tokenizer, seed=args.seed)
    check_caption_lengths(tokenizer, captions)  # one warning if some will be truncated

    # the VAE (pretrained, or a fresh one to train) and the U-Net config must fit it and the text encoder
    if vae is None:
        vae = build_vae(default_vae_config(args.resolution, dataset.num_channels), seed=args.seed)
    size = latent_size(args.resolution, vae)
    if pretrained:
        unet_config = dict(pretrained.unet.config)
    else:
        unet_config = conditional_unet_config_for(user_config, size, vae.config.latent_channels,
                                                  text_encoder.config.hidden_size)
    check_latent_channels(vae, unet_config)
    check_cross_attention(unet_config, text_encoder)
    if pretrained:
        scheduler = DDPMScheduler.from_config(pretrained.scheduler_config, clip_sample=False, steps_offset=1,
                                              **_explicit(args, "prediction_type"))
    else:
        scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                                  prediction_type=args.prediction_type, clip_sample=False, steps_offset=1,
                                  timestep_spacing=args.timestep_spacing)

    # the VAE stage, then the U-Net
    if not (args.pretrained_vae_name_or_path or pretrained):
        if accelerator.is_main_process:
            train_latent_autoencoder(vae, dataset, output_dir, num_steps=args.vae_num_steps,
                                     batch_size=args.vae_batch_size, learning_rate=args.vae_learning_rate,
                                     beta=args.vae_beta, seed=args.seed, checkpointing_steps=args.checkpointing_steps,
                                     progress=accelerator.is_local_main_process)
        accelerator.wait_for_everyone()
        vae = load_pretrained_vae(output_dir / "vae")
    unet = pretrained.unet if pretrained else build_conditional_unet(unet_config, seed=args.seed)
    vae.to(accelerator.device)
    text_encoder.to(accelerator.device)
    frozen_text = bool(pretrained or args.pretrained_text_encoder_name_or_path)
    components = TextToImageComponents(vae=vae, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                                       scheduler=scheduler, train_text_encoder=not frozen_text)
    cacheable = isinstance(dataset.images, torch.Tensor) and not args.random_flip
    return dataset, LatentDataset(dataset, vae) if cacheable else dataset, components


def _explicit(args: argparse.Namespace, *names: str) -> dict:
    """{name: value} of the flags among `names` given on the command line."""
    given = getattr(args, "given_flags", frozenset())
    return {name: getattr(args, name) for name in names if name in given}


def _sampling_components(accelerator, parts, trained: dict, emas: dict):
    """The components to sample from and export: the trained models unwrapped, holding their EMA weights when EMA
    is on (a copy; training continues on the raw weights), with the frozen parts as they are."""
    import dataclasses

    weights = {name: _export_weights(accelerator, model, emas.get(name)) for name, model in trained.items()}
    return dataclasses.replace(parts, unet=weights["unet"], text_encoder=weights.get("text_encoder", parts.text_encoder))


def _validation_prompts(args: argparse.Namespace) -> list[str]:
    from ddpm_hub.text_to_image import DEFAULT_VALIDATION_PROMPTS

    return list(args.validation_prompts or DEFAULT_VALIDATION_PROMPTS)


def _save_validation(accelerator, components, args, epoch: int, global_step: int, loss_history) -> None:
    """--num_validation_images images per validation prompt (one row each) at --guidance_scale with the
    --eval_scheduler sampler in --eval_inference_steps, from seed --seed: the sample grid of text-to-image."""
    from ddpm_hub.text_to_image import generate_from_prompts

    if not accelerator.is_main_process:
        return
    prompts = [prompt for prompt in _validation_prompts(args) for _ in range(args.num_validation_images)]
    images = generate_from_prompts(components, prompts, args.guidance_scale, args.eval_inference_steps, args.seed,
                                   args.eval_scheduler)
    _save_grid(accelerator, images, args.num_validation_images, args, epoch, global_step, loss_history)


def _is_builtin_shapes(args: argparse.Namespace) -> bool:
    return args.train_data_dir is None and args.dataset_name in (None, "shapes")


def _evaluate_text_to_image(accelerator, components, args, global_step: int) -> dict:
    """Prompt adherence on the built-in shapes (`ddpm_hub.text_to_image.prompt_adherence`): --eval_num_samples
    prompts sampled at --guidance_scale and at 1 (no guidance); logged as eval/adherence, eval/adherence_unguided
    (and the colour and shape shares) and returned labelled for the model card. Other data: nothing to score."""
    from ddpm_hub.evaluation import SAMPLER_NAMES
    from ddpm_hub.text_to_image import prompt_adherence

    if not accelerator.is_main_process:
        return {}
    if not _is_builtin_shapes(args):
        accelerator.print("evaluation: prompt adherence is scored on the built-in shapes only; skipped for this data")
        return {}
    started = time.perf_counter()
    settings = dict(num_prompts=args.eval_num_samples, num_inference_steps=args.eval_inference_steps, seed=args.seed,
                    sampler=args.eval_scheduler)
    guided = prompt_adherence(components, guidance_scale=args.guidance_scale, **settings)
    unguided = prompt_adherence(components, guidance_scale=1.0, **settings)
    metrics = {"adherence": guided.accuracy, "adherence_colour": guided.colour_accuracy,
               "adherence_shape": guided.shape_accuracy, "adherence_unguided": unguided.accuracy,
               "sampling_seconds": time.perf_counter() - started}
    accelerator.log({f"eval/{name}": value for name, value in metrics.items()}, step=global_step)
    accelerator.print(f"evaluation at step {global_step}: {guided.summary()} at guidance {args.guidance_scale:g}; "
                      f"{unguided.accuracy:.3f} without guidance")
    where = (f"{args.eval_num_samples} shapes prompts, {SAMPLER_NAMES[args.eval_scheduler]} "
             f"{args.eval_inference_steps} steps")
    return {"evaluated at step": global_step,
            f"prompt adherence at guidance {args.guidance_scale:g} ({where})": guided.accuracy,
            "colour / shape correct at that guidance": f"{guided.colour_accuracy:.3f} / {guided.shape_accuracy:.3f}",
            "prompt adherence without guidance (scale 1)": unguided.accuracy}


def _export_text_to_image(accelerator, components, args, loss_history, eval_metrics: dict) -> None:
    """The StableDiffusionPipeline folder (`save_text_to_image_pipeline`) and its model card."""
    from ddpm_hub.model_card import render_model_card
    from ddpm_hub.text_to_image import save_text_to_image_pipeline

    if not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    save_text_to_image_pipeline(output_dir, components)
    grid = "samples/latest.png" if (output_dir / "samples" / "latest.png").is_file() else None
    base = args.pretrained_model_name_or_path
    base_model = base if base and not Path(base).expanduser().exists() else None  # a Hub id, not a local folder
    render_model_card(output_dir, task="text-to-image", repo_id=args.hub_model_id if args.push_to_hub else None,
                      dataset_name=None if _is_builtin_shapes(args) else args.dataset_name or args.train_data_dir,
                      hyperparameters=_loggable(args), final_loss=_recent_loss(loss_history), sample_grid=grid,
                      metrics=eval_metrics or None, validation_prompts=_validation_prompts(args),
                      base_model=base_model)


def _weights_digest(*models) -> str:
    import hashlib

    digest = hashlib.sha256()
    for model in models:
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
