"""Class-conditional pixel-space DDPM with classifier-free guidance: a UNet2DModel with class embeddings, exported
as a `ClassConditionalDDPMPipeline` folder that stock diffusers loads with `trust_remote_code=True`.

Everything else is the unconditional task's (this task extends it): the objective (note 001's L_simple for every
prediction type, min-SNR, the hybrid loss with a learned variance), EMA, checkpoints and exact resume, several
processes. What this task adds: labels with the images (`ddpm_hub.data.labelled`), the U-Net's class embeddings
(num_class_embeds = K + 1, the last id "no class"), the conditioning dropout of the loss, grids with one row per
class, and an evaluation at each of --eval_guidance_scales (on the digits: class adherence and two Frechet
distances; bits/dim given the class everywhere).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ...data import DIGITS, load_labelled_dataset
from ...errors import InputError
from ...export import save_class_conditional_pipeline
from ...model_card import render_model_card
from ...pipelines.class_conditional import DEFAULT_GUIDANCE_SCALE
from ...sampling import SAMPLER_NAMES, class_conditional_pipeline, generate
from ..objectives import LossConfig, diffusion_loss
from ..unet import build_unet, channels_for, class_conditional_config, read_unet_config, unet_config_for
from .base import CardInputs, TrainingParts
from .guidance import ClassifierFreeGuidance
from .unconditional import DIGITS_DESCRIPTION, UnconditionalTask

MAX_GRID_CLASSES = 16  # a grid shows the first this many classes, one row each (1000 rows are not a picture)
DEFAULTS = {"resolution": 16, "output_dir": "ddpm-digits-16-class-conditional",
            "guidance_scale": DEFAULT_GUIDANCE_SCALE, "eval_batch_size": 8}


class ClassConditionalTask(ClassifierFreeGuidance, UnconditionalTask):
    name = "class-conditional"
    help = "a pixel-space DDPM conditioned on a class, with classifier-free guidance (ClassConditionalDDPMPipeline)"
    switch = "class_conditional"
    defaults = DEFAULTS
    artifacts = ("unet", "scheduler", "pipeline.py")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "class-conditional (--class_conditional or --task class-conditional; also reads the unconditional "
            "task's flags)",
            cls.defaults_line() + " --eval_batch_size is the images per class row of the grids.")
        group.add_argument("--class_conditional", action="store_true",
                           help="train a class-conditional model (the same as --task class-conditional): labels from "
                                "the digits, from one subfolder per class of --train_data_dir, or from "
                                "--label_column")
        group.add_argument("--label_column", default="label",
                           help="the class column of a --dataset_name dataset: a ClassLabel, integers or strings")
        group.add_argument("--eval_guidance_scales", type=float, nargs="+", default=[1.0, 1.3, 2.0, 3.0, 5.0],
                           help="guidance scales the evaluation samples at, each scored on its own")

    def check_args(self) -> None:
        super().check_args()  # the guidance flags, then the unconditional task's
        args = self.args
        if "label_column" in args.given_flags and (args.train_data_dir is not None
                                                   or args.dataset_name in (None, DIGITS)):
            source = "--train_data_dir's class subfolders" if args.train_data_dir else "the built-in digits"
            raise InputError(f"--label_column applies to a --dataset_name dataset; {source} carry their own labels: "
                             "drop --label_column")
        for scale in args.eval_guidance_scales:
            if not scale >= 0:
                raise InputError(f"--eval_guidance_scales must be >= 0 (1: no guidance), got {scale}")

    # --------------------------------------------------------------------------------------- the run
    def setup(self, accelerator) -> TrainingParts:
        """The images with their labels, the forward process, and a UNet2DModel with K + 1 class embeddings."""
        args = self.args
        user_config = read_unet_config(args.model_config_name_or_path)
        self.dataset = load_labelled_dataset(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column, args.label_column,
            args.resolution, args.center_crop, args.random_flip, channels_for(args.num_channels, user_config),
            args.cache_dir)
        self.scheduler = self.noise_scheduler(variance_type=self.loss_config.variance_type)
        config = unet_config_for(user_config, args.resolution, self.dataset.num_channels,
                                 learned_variance=args.loss_type == "hybrid")
        unet = build_unet(class_conditional_config(config, self.dataset.num_classes))
        return TrainingParts(dataset=self.dataset, train_data=self.dataset, models={"unet": unet})

    def loss(self, batch: dict, models: dict) -> torch.Tensor:
        return class_conditional_loss(models["unet"], batch["pixel_values"], batch["class_labels"], self.scheduler,
                                      self.loss_config, self.args.conditioning_dropout_prob, self.dataset.num_classes)

    def batch_size(self, batch: dict) -> int:
        return batch["pixel_values"].shape[0]

    def sample_grid(self, models: dict) -> tuple[torch.Tensor, int | None]:
        """One row per class (the first MAX_GRID_CLASSES), --eval_batch_size images each, at --guidance_scale with
        the exported pipeline's own sampler, DDPM in --ddpm_num_inference_steps, from seed --seed."""
        args = self.args
        classes = range(min(self.dataset.num_classes, MAX_GRID_CLASSES))
        labels = [c for c in classes for _ in range(args.eval_batch_size)]
        pipeline = class_conditional_pipeline(models["unet"], self.scheduler.config, "ddpm", self.dataset.id2label)
        images = generate(pipeline, len(labels), num_inference_steps=args.ddpm_num_inference_steps,
                          batch_size=min(len(labels), 128), seed=args.seed, per_image={"class_labels": labels},
                          guidance_scale=args.guidance_scale)
        return images, args.eval_batch_size

    def evaluate(self, models: dict, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        """`evaluate_class_conditional` at each of --eval_guidance_scales: on the built-in 16x16 digits class
        adherence and the two Frechet distances, and bits/dim of held-out digits given their class; on other data,
        bits/dim of its first --eval_bpd_images training images given theirs."""
        from ...evaluation import evaluate_class_conditional

        args = self.args
        digits = self._builtin_digits() and self.dataset.num_channels == 1 and args.resolution == 16
        bpd = {}
        if not digits:
            count = min(args.eval_bpd_images, len(self.dataset))
            batch = self.dataset.__getitems__(list(range(count)))
            bpd = {"bpd_images": batch["pixel_values"], "bpd_labels": batch["class_labels"]}
        metrics = evaluate_class_conditional(
            models["unet"], self.scheduler, id2label=self.dataset.id2label, guidance_scales=args.eval_guidance_scales,
            num_samples=args.eval_num_samples, sampler=args.eval_scheduler,
            num_inference_steps=args.eval_inference_steps, digits=digits, bpd_timesteps=args.eval_bpd_timesteps,
            bpd_num_images=args.eval_bpd_images, seed=args.seed, **bpd)
        return metrics, self._class_card_metrics(metrics, step, digits)

    def _class_card_metrics(self, metrics: dict, step: int, digits: bool) -> dict[str, Any]:
        """One row per guidance scale (adherence, the two distances with their ratio to the floor), then bits/dim."""
        args = self.args
        card: dict[str, Any] = {"evaluated at step": step}
        if digits:
            how = (f"{args.eval_num_samples} samples, classes balanced, {SAMPLER_NAMES[args.eval_scheduler]} "
                   f"{args.eval_inference_steps} steps")
            card[f"at guidance scale ({how})"] = \
                "class adherence / Frechet digits distance (x floor) / pixel-PCA distance (x floor)"
            for scale in args.eval_guidance_scales:
                p = f"guidance_{scale:g}/"
                card[f"guidance {scale:g}"] = (f"{metrics[p + 'adherence']:.3f} / {metrics[p + 'fd']:.4g} "
                                               f"({metrics[p + 'fd_ratio']:.3g}x) / {metrics[p + 'pixel_fd']:.4g} "
                                               f"({metrics[p + 'pixel_fd_ratio']:.3g}x)")
        K, T = args.eval_bpd_timesteps, args.ddpm_num_steps
        terms = "full bound" if K is None or K >= T else f"{K}-term estimate"
        where = f"held-out digits, {args.eval_bpd_images} images" if digits else \
            f"first {args.eval_bpd_images} training images"
        card[f"bits/dim given the class ({where}, {terms})"] = \
            f"{metrics['bits_per_dim']:.4f} ± {metrics['bits_per_dim_se']:.4f}"
        return card

    def export(self, models: dict, card: CardInputs) -> None:
        args = self.args
        save_class_conditional_pipeline(self.output_dir, models["unet"], dict(self.scheduler.config),
                                        self.dataset.id2label)
        builtin = self._builtin_digits()
        shown = min(self.dataset.num_classes, MAX_GRID_CLASSES)
        render_model_card(self.output_dir, task="class-conditional", repo_id=card.repo_id,
                          dataset_name=None if builtin else args.dataset_name or args.train_data_dir,
                          dataset_description=DIGITS_DESCRIPTION.format(resolution=args.resolution) if builtin
                          else None,
                          hyperparameters=card.hyperparameters, final_loss=card.final_loss,
                          sample_grid=card.sample_grid, metrics=card.metrics or None, labels=self.dataset.id2label,
                          guidance_scale=args.guidance_scale,
                          sample_caption=f"One row per class (ids 0 to {shown - 1} from the top) at guidance "
                                         f"{args.guidance_scale:g}, DDPM in {args.ddpm_num_inference_steps} steps.")


def drop_class_labels(class_labels: torch.Tensor, probability: float, null_class_id: int) -> torch.Tensor:
    """Classifier-free guidance's conditioning dropout (Ho & Salimans 2022, Algorithm 1, line 3, c <- empty with
    probability p_uncond): each label [B] becomes `null_class_id` ("no class") with `probability`, independently, by
    u_i < probability for u = torch.rand(B) from torch's global RNG, always drawn whatever the probability, so that
    the RNG stream (and exact resume) does not depend on it."""
    drop = (torch.rand(class_labels.shape[0]) < probability).to(class_labels.device)
    return torch.where(drop, torch.full_like(class_labels, null_class_id), class_labels)


def class_conditional_loss(unet, images: torch.Tensor, class_labels: torch.Tensor, scheduler, loss_config: LossConfig,
                           conditioning_dropout_prob: float, num_classes: int) -> torch.Tensor:
    """One Monte Carlo estimate of the objective conditioned on the class, a float32 scalar:

    1. conditioning dropout: labels [B] -> "no class" (id K = num_classes) with conditioning_dropout_prob
       (`drop_class_labels`);
    2. the unconditional task's objective (`diffusion_loss`: t ~ U{0..T-1}, z ~ N(0, I), x_t from `add_noise`, the
       prediction type's target, min-SNR weights, the hybrid term) on images [B x C x H x W] in [-1, 1], with the
       U-Net given class_labels: L = E || z - z_theta(x_t, t, y) ||^2 for epsilon prediction (note 001, 训练).
    Every draw comes from torch's global RNG, so accelerate's saved RNG states make resume exact.
    """
    if class_labels.shape != (images.shape[0],):
        raise InputError(f"got class labels of shape {tuple(class_labels.shape)} for {images.shape[0]} images: give "
                         "one per image")
    labels = drop_class_labels(class_labels, conditioning_dropout_prob, num_classes)  # 1.
    return diffusion_loss(unet, images, scheduler, loss_config, model_kwargs={"class_labels": labels})  # 2.

