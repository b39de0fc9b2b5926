"""Unconditional pixel-space DDPM: a UNet2DModel on images, exported as a stock diffusers `DDPMPipeline` folder.

The objective is note 001's L_simple for the chosen prediction type (`ddpm_hub.training.objectives`), optionally
with min-SNR weighting or Improved DDPM's hybrid loss (which trains a learned_range variance). Evaluation: on the
built-in 16x16 digits, the digits metrics of --eval_num_samples images and bits/dim of held-out digits; on other
data, bits/dim of its first --eval_bpd_images training images.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ...cli import full_or_count
from ...data import DIGITS, load_image_dataset, load_streaming_image_dataset
from ...errors import InputError
from ...export import save_pipeline
from ...model_card import render_model_card
from ...sampling import SAMPLER_NAMES, generate, sampling_pipeline
from ..objectives import diffusion_loss
from ..unet import build_unet, channels_for, read_unet_config, unet_config_for
from .base import CardInputs, Task, TrainingParts

DIGITS_DESCRIPTION = ("scikit-learn's built-in handwritten digits (the 1437 images of the train split, 8x8 upscaled "
                      "to {resolution}x{resolution}; the other 360 are held out for the evaluation)")


class UnconditionalTask(Task):
    name = "unconditional"
    help = "a pixel-space DDPMPipeline"
    # 65 epochs with DDPM-100 grids and two evaluations (epochs 35 and 65) take the wall time that 55 took with
    # attention at 8x8 (and the old 45 with three evaluations and DDPM-1000 grids): the default U-Net's attention at
    # 4x4 is cheaper per step, and the budget goes to training steps (docs/benchmarks.md, default-vs-example benchmark).
    defaults = {"resolution": 16, "output_dir": "ddpm-digits-16", "num_epochs": 65, "eval_epochs": 35}
    artifacts = ("unet", "scheduler")
    no_streaming = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("unconditional (the default task)", cls.defaults_line())
        group.add_argument("--eval_batch_size", type=int, default=16, help="images per sample grid")
        group.add_argument("--ddpm_num_inference_steps", type=int, default=100,
                           help="DDPM steps for sample grids (100: a tenth of 1000's cost)")
        group.add_argument("--save_images_epochs", type=int, default=15, help="sample grid every N epochs")
        group.add_argument("--vlb_weight", type=float, default=0.001, help="lambda of --loss_type hybrid")
        group.add_argument("--eval_bpd_timesteps", type=full_or_count, default=50,
                           help="bits/dim: 'full' (all T terms) or K >= 3 for the unbiased K-term estimate "
                                "(K >= T: full)")
        group.add_argument("--eval_bpd_images", type=int, default=64,
                           help="images for bits/dim: held-out digits, or for other data the first N training images")

    def check_args(self) -> None:
        args = self.args
        for name in ("eval_batch_size", "ddpm_num_inference_steps", "save_images_epochs"):
            if getattr(args, name) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
        if args.ddpm_num_inference_steps > args.ddpm_num_steps:
            raise InputError(f"--ddpm_num_inference_steps {args.ddpm_num_inference_steps} exceeds --ddpm_num_steps "
                             f"{args.ddpm_num_steps}")
        if args.eval_bpd_images < 2:
            raise InputError(f"--eval_bpd_images must be an integer >= 2, got {args.eval_bpd_images}")
        from ...likelihood import check_num_timesteps

        check_num_timesteps(args.eval_bpd_timesteps, "--eval_bpd_timesteps")

    # --------------------------------------------------------------------------------------- the run
    def setup(self, accelerator) -> TrainingParts:
        args = self.args
        user_config = read_unet_config(args.model_config_name_or_path)
        channels = channels_for(args.num_channels, user_config)
        if args.streaming:
            self.dataset = load_streaming_image_dataset(
                args.dataset_name, args.dataset_config_name, args.image_column, args.resolution, args.center_crop,
                args.random_flip, channels, args.cache_dir)
        else:
            self.dataset = load_image_dataset(
                args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column, args.resolution,
                args.center_crop, args.random_flip, channels, args.cache_dir, data_cache_dir=args.data_cache_dir,
                no_data_cache=args.no_data_cache)
        self.scheduler = self.noise_scheduler(variance_type=self.loss_config.variance_type)
        config = unet_config_for(user_config, args.resolution, self.dataset.num_channels,
                                 learned_variance=args.loss_type == "hybrid")
        return TrainingParts(dataset=self.dataset, train_data=self.dataset, models={"unet": build_unet(config)})

    def loss(self, batch: torch.Tensor, models: dict) -> torch.Tensor:
        return diffusion_loss(models["unet"], batch, self.scheduler, self.loss_config)

    def sample_grid(self, models: dict) -> tuple[torch.Tensor, int | None]:
        """--eval_batch_size images from seed --seed with the exported pipeline's own sampler, DDPM in
        --ddpm_num_inference_steps steps."""
        pipeline = sampling_pipeline(models["unet"], self.scheduler.config, "ddpm")
        return generate(pipeline, self.args.eval_batch_size, num_inference_steps=self.args.ddpm_num_inference_steps,
                        batch_size=self.args.eval_batch_size, seed=self.args.seed), None

    def evaluate(self, models: dict, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        """`evaluate_model`: built-in 16x16 digits get the digits metrics and bits/dim on held-out digits; other
        data gets bits/dim on its first --eval_bpd_images training images."""
        from ...evaluation import evaluate_model

        args = self.args
        digits = self._builtin_digits() and self.dataset.num_channels == 1 and args.resolution == 16
        bpd_images = None if digits else self.dataset.first(args.eval_bpd_images)
        metrics = evaluate_model(models["unet"], self.scheduler, num_samples=args.eval_num_samples,
                                 sampler=args.eval_scheduler, num_inference_steps=args.eval_inference_steps,
                                 bpd_timesteps=args.eval_bpd_timesteps, bpd_images=bpd_images,
                                 bpd_num_images=args.eval_bpd_images, digits=digits, seed=args.seed)
        return metrics, self._card_metrics(metrics, step, digits)

    def _card_metrics(self, metrics: dict, step: int, digits: bool) -> dict[str, Any]:
        """The evaluation with the labels a model-card reader needs (what was sampled, against what)."""
        args = self.args
        K, T = args.eval_bpd_timesteps, args.ddpm_num_steps
        terms = "full bound" if K is None or K >= T else f"{K}-term estimate"
        where = f"held-out digits, {args.eval_bpd_images} images" if digits else \
            f"first {args.eval_bpd_images} training images"
        card: dict[str, Any] = {"evaluated at step": step}
        if digits:
            card[f"Frechet digits distance ({args.eval_num_samples} samples, {SAMPLER_NAMES[args.eval_scheduler]} "
                 f"{args.eval_inference_steps} steps)"] = metrics["fd"]
            card["real-vs-real floor at that count / ratio"] = \
                f"{metrics['fd_floor']:.4g} / {metrics['fd_ratio']:.3g}x"
            card["classifier confidence"] = metrics["confidence"]
            card["classes covered / smallest class share"] = (f"{metrics['classes_covered']}/10 / "
                                                              f"{metrics['smallest_class_share']:.3f}")
        card[f"bits/dim ({where}, {terms})"] = f"{metrics['bits_per_dim']:.4f} ± {metrics['bits_per_dim_se']:.4f}"
        return card

    def export(self, models: dict, card: CardInputs) -> None:
        args = self.args
        save_pipeline(self.output_dir, models["unet"], dict(self.scheduler.config))
        builtin = self._builtin_digits()
        render_model_card(self.output_dir, repo_id=card.repo_id,
                          dataset_name=None if builtin else args.dataset_name or args.train_data_dir,
                          dataset_description=DIGITS_DESCRIPTION.format(resolution=args.resolution) if builtin
                          else None,
                          hyperparameters=card.hyperparameters, final_loss=card.final_loss,
                          sample_grid=card.sample_grid, metrics=card.metrics or None)

    def _builtin_digits(self) -> bool:
        return self.args.train_data_dir is None and self.args.dataset_name in (None, DIGITS)
