"""Text-to-image: the latent, text-conditioned model of note 001's "Stable Diffusion" section, exported as a stock
`StableDiffusionPipeline` folder (`ddpm_hub.text_to_image` holds the model's pieces).

A run has two stages. First the VAE (`ddpm_hub.vae`, note 003's objective) trains on the images, on the main process,
with checkpoints of its own, unless a pretrained one is given; then the U-Net (and, unless pretrained and frozen, a
small CLIP text encoder on a tokenizer built from the captions) trains with L_simple on the VAE's latents, dropping
--conditioning_dropout_prob of the captions for classifier-free guidance. Grids show --num_validation_images per
validation prompt; the evaluation, on the built-in shapes, is prompt adherence with and without guidance.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...model_card import render_model_card
from ...sampling import SAMPLER_NAMES
from ...text_to_image import DEFAULT_VALIDATION_PROMPTS
from .base import CardInputs, Task, TrainingParts
from .guidance import ClassifierFreeGuidance

SHAPES = "shapes"
SHAPES_DESCRIPTION = "ddpm_hub's built-in captioned shapes (\"a red circle\", ...)"
DEFAULTS = {"resolution": 32, "output_dir": "ldm-shapes-32", "num_epochs": 40, "learning_rate": 1e-3,
            "lr_warmup_steps": 200, "eval_epochs": 20, "eval_num_samples": 180, "save_model_epochs": 20,
            "checkpointing_steps": 1000, "guidance_scale": 5.0}


class TextToImageTask(ClassifierFreeGuidance, Task):
    name = "text-to-image"
    help = "a latent, text-conditioned StableDiffusionPipeline (VAE + CLIP text encoder + UNet2DConditionModel)"
    defaults = DEFAULTS
    artifacts = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "vae_reconstructions.png",
                 "vae-checkpoint-*")
    no_streaming = ("the VAE stage trains on the whole dataset and the latents of every image are encoded once; use "
                    "its decoded store (the default), which every process memory-maps")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "text-to-image (--task text-to-image; ddpm_hub.text_to_image)",
            cls.defaults_line())
        group.add_argument("--caption_column", default="text",
                           help="the caption column of the dataset or of --train_data_dir's metadata.jsonl")
        group.add_argument("--num_images", type=int, default=None,
                           help="how many built-in shapes to generate (None: 5000), or keep the first N images of "
                                "other data (None: all)")
        group.add_argument("--pretrained_model_name_or_path", default=None,
                           help="fine-tune a Stable Diffusion folder (or Hub id): its vae, text encoder, tokenizer and "
                                "scheduler are kept, only its U-Net trains")
        group.add_argument("--pretrained_vae_name_or_path", default=None,
                           help="a trained AutoencoderKL (folder or Hub id), used frozen (None: a small one is "
                                "trained first)")
        group.add_argument("--pretrained_text_encoder_name_or_path", default=None,
                           help="a CLIP tokenizer + CLIPTextModel (folder or Hub id), used frozen (None: a tokenizer "
                                "built from the captions and a small CLIPTextModel trained with the U-Net)")
        group.add_argument("--tokenizer_max_length", type=int, default=16,
                           help="tokens per caption of the built tokenizer, start and end included (longer: cut)")
        group.add_argument("--text_encoder_learning_rate", type=float, default=None,
                           help="peak learning rate of the trained text encoder (None: --learning_rate)")
        group.add_argument("--vae_num_steps", type=int, default=800, help="VAE stage: optimizer steps")
        group.add_argument("--vae_batch_size", type=int, default=16, help="VAE stage: images per step")
        group.add_argument("--vae_learning_rate", type=float, default=1e-3, help="VAE stage: AdamW learning rate")
        group.add_argument("--vae_beta", type=float, default=1e-4,
                           help="VAE stage: the KL weight beta = 2c of note 003's objective (ddpm_hub.vae)")
        group.add_argument("--validation_prompts", nargs="+", default=None,
                           help="prompts of the validation grid (one row each) and the model card (None: four "
                                "shapes prompts, ddpm_hub.text_to_image.DEFAULT_VALIDATION_PROMPTS)")
        group.add_argument("--num_validation_images", type=int, default=4, help="images per validation prompt")
        group.add_argument("--validation_epochs", type=int, default=10,
                           help="validation grid every N epochs and after the last")

    def check_args(self) -> None:
        """Flag values, and flags that contradict each other or a pretrained part; one InputError each."""
        args = self.args
        given = getattr(args, "given_flags", frozenset())
        if args.loss_type != "simple":
            raise InputError(f"--loss_type {args.loss_type!r} is not supported by --task text-to-image: its L_vlb "
                             "term is a likelihood of 8-bit pixels, and text-to-image denoises VAE latents; use simple")
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
        super().check_args()  # the guidance flags

    @property
    def grid_epochs(self) -> int:
        return self.args.validation_epochs

    # --------------------------------------------------------------------------------------- the run
    def setup(self, accelerator) -> TrainingParts:
        """Cheap checks first (pretrained folders, the data, channel and width agreement), then the slow VAE stage
        (on the main process; every process then loads the saved VAE), then the U-Net. The DataLoader reads the VAE
        posteriors cached once (`LatentDataset`) unless images are augmented per access."""
        from ...data import load_captioned_dataset
        from ...text_encoder import build_clip_tokenizer, build_text_encoder, load_text_components
        from ...text_to_image import (LatentDataset, TextToImageComponents, build_conditional_unet,
                                      check_caption_lengths, check_cross_attention, conditional_unet_config_for,
                                      latent_size, load_pretrained_components)
        from ...vae import build_vae, check_latent_channels, default_vae_config, load_pretrained_vae
        from ..unet import read_unet_config

        args = self.args
        # pretrained parts: a missing component fails before anything slow
        pretrained = load_pretrained_components(args.pretrained_model_name_or_path) \
            if args.pretrained_model_name_or_path else None
        vae = load_pretrained_vae(args.pretrained_vae_name_or_path) if args.pretrained_vae_name_or_path else \
            pretrained.vae if pretrained else None
        self.resolution = self._resolution(pretrained, vae)
        channels = args.num_channels
        if vae is not None:
            if channels not in (None, vae.config.in_channels):
                raise InputError(f"--num_channels {channels} contradicts the pretrained VAE's in_channels "
                                 f"{vae.config.in_channels}; drop --num_channels")
            channels = vae.config.in_channels
        user_config = read_unet_config(args.model_config_name_or_path)

        # the data, then the text side (a tokenizer built from its captions, or pretrained)
        self.dataset = load_captioned_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir,
                                              args.image_column, args.caption_column, self.resolution,
                                              args.center_crop, args.random_flip, channels, args.cache_dir,
                                              args.num_images, args.seed, data_cache_dir=args.data_cache_dir,
                                              no_data_cache=args.no_data_cache)
        captions = [text for caption in self.dataset.captions
                    for text in ((caption,) if isinstance(caption, str) else caption)]
        if pretrained:
            tokenizer, text_encoder = pretrained.tokenizer, pretrained.text_encoder
        elif args.pretrained_text_encoder_name_or_path:
            tokenizer, text_encoder = load_text_components(args.pretrained_text_encoder_name_or_path)
        else:
            tokenizer = build_clip_tokenizer(captions, model_max_length=args.tokenizer_max_length)
            text_encoder = build_text_encoder(tokenizer, seed=args.seed)
        check_caption_lengths(tokenizer, captions)  # one warning if some will be cut

        # the VAE (pretrained, or a fresh one to train) and the U-Net config must fit it and the text encoder
        vae_config = default_vae_config(self.resolution, self.dataset.num_channels)
        if vae is None:
            vae = build_vae(vae_config, seed=args.seed)
        size = latent_size(self.resolution, vae)
        unet_config = dict(pretrained.unet.config) if pretrained else conditional_unet_config_for(
            user_config, size, vae.config.latent_channels, text_encoder.config.hidden_size)
        check_latent_channels(vae, unet_config)
        check_cross_attention(unet_config, text_encoder)
        if pretrained:
            from ...scheduling_ddpm import DDPMScheduler

            prediction = {"prediction_type": args.prediction_type} if "prediction_type" in args.given_flags else {}
            scheduler = DDPMScheduler.from_config(pretrained.scheduler_config, clip_sample=False, steps_offset=1,
                                                  **prediction)
        else:
            scheduler = self.noise_scheduler(clip_sample=False, steps_offset=1)

        # the VAE stage, then the U-Net
        if not (args.pretrained_vae_name_or_path or pretrained):
            if accelerator.is_main_process:
                train_latent_autoencoder(vae, self.dataset, self.output_dir, vae_config, args,
                                         progress=accelerator.is_local_main_process)
            accelerator.wait_for_everyone()
            vae = load_pretrained_vae(self.output_dir / "vae")
        unet = pretrained.unet if pretrained else build_conditional_unet(unet_config, seed=args.seed)
        vae.to(accelerator.device)
        text_encoder.to(accelerator.device)
        frozen_text = bool(pretrained or args.pretrained_text_encoder_name_or_path)
        self.components = TextToImageComponents(vae=vae, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                                                scheduler=scheduler, train_text_encoder=not frozen_text)
        cacheable = isinstance(self.dataset.images, torch.Tensor) and not args.random_flip
        models = self.components.trained_models()
        return TrainingParts(dataset=self.dataset,
                             train_data=LatentDataset(self.dataset, vae) if cacheable else self.dataset,
                             models=models,
                             learning_rates={"text_encoder": args.text_encoder_learning_rate or args.learning_rate}
                             if "text_encoder" in models else {})

    def _resolution(self, pretrained, vae) -> int:
        """--resolution, or for a pretrained pipeline without one, the resolution its U-Net and VAE work at."""
        if pretrained is None or "resolution" in self.args.given_flags:
            return self.args.resolution
        return pretrained.unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)

    def loss(self, batch: dict, models: dict) -> torch.Tensor:
        from ...text_to_image import sample_latents, text_to_image_loss

        parts = self.components
        return text_to_image_loss(models["unet"], models.get("text_encoder", parts.text_encoder), parts.tokenizer,
                                  sample_latents(batch, parts.vae), batch["captions"], parts.scheduler,
                                  self.loss_config, self.args.conditioning_dropout_prob)

    def batch_size(self, batch: dict) -> int:
        return len(batch["captions"])

    def _sampling_components(self, models: dict):
        """The components with the trained models replaced by the loop's (averaged) copies."""
        import dataclasses

        return dataclasses.replace(self.components, unet=models["unet"],
                                   text_encoder=models.get("text_encoder", self.components.text_encoder))

    def _validation_prompts(self) -> list[str]:
        return list(self.args.validation_prompts or DEFAULT_VALIDATION_PROMPTS)

    def sample_grid(self, models: dict) -> tuple[torch.Tensor, int | None]:
        """--num_validation_images images per validation prompt (one row each) at --guidance_scale with the
        --eval_scheduler sampler in --eval_inference_steps, from seed --seed."""
        from ...text_to_image import generate_from_prompts

        args = self.args
        prompts = [prompt for prompt in self._validation_prompts() for _ in range(args.num_validation_images)]
        images = generate_from_prompts(self._sampling_components(models), prompts, args.guidance_scale,
                                       args.eval_inference_steps, args.seed, args.eval_scheduler)
        return images, args.num_validation_images

    def evaluate(self, models: dict, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Prompt adherence on the built-in shapes (`ddpm_hub.text_to_image.prompt_adherence`): --eval_num_samples
        prompts sampled at --guidance_scale and at 1 (no guidance); other data has nothing to score."""
        import time

        from ...text_to_image import prompt_adherence

        args = self.args
        if not self._builtin_shapes():
            print("evaluation: prompt adherence is scored on the built-in shapes only; skipped for this data")
            return {}, {}
        started = time.perf_counter()
        components = self._sampling_components(models)
        settings = dict(num_prompts=args.eval_num_samples, num_inference_steps=args.eval_inference_steps,
                        seed=args.seed, sampler=args.eval_scheduler)
        guided = prompt_adherence(components, guidance_scale=args.guidance_scale, **settings)
        unguided = prompt_adherence(components, guidance_scale=1.0, **settings)
        scalars = {"adherence": guided.accuracy, "adherence_colour": guided.colour_accuracy,
                   "adherence_shape": guided.shape_accuracy, "adherence_unguided": unguided.accuracy,
                   "sampling_seconds": time.perf_counter() - started}
        where = (f"{args.eval_num_samples} shapes prompts, {SAMPLER_NAMES[args.eval_scheduler]} "
                 f"{args.eval_inference_steps} steps")
        card = {"evaluated at step": step,
                f"prompt adherence at guidance {args.guidance_scale:g} ({where})": guided.accuracy,
                "colour / shape correct at that guidance":
                    f"{guided.colour_accuracy:.3f} / {guided.shape_accuracy:.3f}",
                "prompt adherence without guidance (scale 1)": unguided.accuracy}
        return scalars, card

    def export(self, models: dict, card: CardInputs) -> None:
        """The StableDiffusionPipeline folder (`save_text_to_image_pipeline`) and its model card."""
        from ...text_to_image import save_text_to_image_pipeline

        args = self.args
        save_text_to_image_pipeline(self.output_dir, self._sampling_components(models))
        base = args.pretrained_model_name_or_path
        base_model = base if base and not Path(base).expanduser().exists() else None  # a Hub id, not a folder
        builtin = self._builtin_shapes()
        render_model_card(self.output_dir, task="text-to-image", repo_id=card.repo_id,
                          dataset_name=None if builtin else args.dataset_name or args.train_data_dir,
                          dataset_description=SHAPES_DESCRIPTION if builtin else None,
                          hyperparameters=card.hyperparameters, final_loss=card.final_loss,
                          sample_grid=card.sample_grid, metrics=card.metrics or None,
                          validation_prompts=self._validation_prompts(), base_model=base_model)

    def _builtin_shapes(self) -> bool:
        return self.args.train_data_dir is None and self.args.dataset_name in (None, SHAPES)


def train_latent_autoencoder(vae, dataset, output_dir: Path, vae_config: dict, args: argparse.Namespace,
                             progress: bool = True) -> Path:
    """The VAE stage: train `vae` on the training images (`ddpm_hub.vae.train_vae`: note 003's objective, its own
    progress bar, vae-checkpoint-N folders in output_dir it resumes from, the reconstruction grid, the scaling
    factor) and save it as output_dir/vae, atomically. A resumed run finds output_dir/vae complete and keeps it,
    after checking it is the VAE this run would train (`vae_config`'s architecture). Returns output_dir/vae."""
    import json
    import logging

    from ...export import save_model_atomically
    from ...vae import train_vae

    folder = output_dir / "vae"
    if (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file():
        saved = json.loads((folder / "config.json").read_text())
        differ = [key for key in ("in_channels", "sample_size", "latent_channels", "block_out_channels")
                  if key in vae_config and saved.get(key) != (list(vae_config[key]) if isinstance(vae_config[key],
                                                                                                 tuple)
                                                              else vae_config[key])]
        if differ:
            raise InputError(f"{folder} holds a VAE trained for other images ({', '.join(differ)} differ from this "
                             "run's); pass --overwrite_output_dir to start over")
        logging.getLogger(__name__).info("using the trained VAE in %s (delete it to train it again)", folder)
        return folder
    if not isinstance(dataset.images, torch.Tensor):
        raise InputError("the VAE trains on images of one size: pass --center_crop (the images have different "
                         "shapes), or give a trained VAE with --pretrained_vae_name_or_path")
    train_vae(vae, dataset, num_steps=args.vae_num_steps, batch_size=args.vae_batch_size,
              learning_rate=args.vae_learning_rate, beta=args.vae_beta, seed=args.seed, output_dir=output_dir,
              checkpointing_steps=args.checkpointing_steps, resume=True, progress=progress)
    save_model_atomically(vae, folder)
    return folder
