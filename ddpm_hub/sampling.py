"""The one sampling path: any diffusers sampler swapped in from a model's saved scheduler config, and images drawn
in seeded chunks. Training's sample grids, the evaluation, text-to-image's prompts and the benchmarks all sample
through here, so what they show is what a user gets from the exported folder.

Samplers (`SAMPLERS`): "ddpm" (our `DDPMScheduler`, the notes' ancestral sampling, note 004; bit-equal to
diffusers'), "ddim" (diffusers' DDIMScheduler, eta 0) and "dpm" (DPMSolverMultistepScheduler, DPM-Solver++ 2M).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import InputError, one_line
from .scheduling_ddpm import DDPMScheduler

SAMPLERS = ("ddpm", "ddim", "dpm")
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++"}
LEARNED_VARIANCES = ("learned", "learned_range")


def sampler_scheduler(scheduler_config: Mapping[str, Any], kind: str = "ddpm"):
    """The scheduler of sampler `kind`, built from a model's scheduler config as a user swaps one in
    (`DDIMScheduler.from_config(pipe.scheduler.config)`).

    A scheduler built in memory lists the keys it left at their defaults (`_use_default_values`), and from_config
    would give another class its own defaults for those (timestep_spacing "linspace" for DPM-Solver where the saved
    config says "leading"): such private keys are dropped, so a sampler built here equals one built from the saved
    folder. DDIM and DPM-Solver++ are ODE samplers that use only the mean: for a learned variance their
    variance_type is unset (see `MeanOnly`)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    if kind not in classes:
        raise InputError(f"sampler {kind!r} is not supported; choose one of {', '.join(SAMPLERS)}")
    config = {key: value for key, value in scheduler_config.items() if not key.startswith("_")}
    if kind != "ddpm" and config.get("variance_type") in LEARNED_VARIANCES:
        config["variance_type"] = None
    try:
        return classes[kind].from_config(config)
    except (NotImplementedError, ValueError) as error:
        raise InputError(f"sampler {kind!r} cannot use this model's scheduler config: {one_line(error)}") from None


def sampling_pipeline(unet, scheduler_config: Mapping[str, Any], kind: str = "ddpm"):
    """A `DDPMPipeline` over `unet` (shared, not copied) with sampler `kind` (`sampler_scheduler`), progress bars
    off. For a learned-variance model the ODE samplers see only its first C output channels (`MeanOnly`)."""
    from diffusers import DDPMPipeline

    scheduler = sampler_scheduler(scheduler_config, kind)
    learned = kind != "ddpm" and scheduler_config.get("variance_type") in LEARNED_VARIANCES
    pipeline = DDPMPipeline(unet=MeanOnly(unet) if learned else unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def class_conditional_pipeline(unet, scheduler_config: Mapping[str, Any], kind: str = "ddpm",
                               id2label: Mapping[int, str] | None = None):
    """A `ClassConditionalDDPMPipeline` over a class-conditional `unet` (shared, not copied) with sampler `kind`
    (`sampler_scheduler`), progress bars off. The pipeline itself hands a sampler that reads only the mean the first
    C channels of a learned-variance model, so it needs no `MeanOnly`."""
    from .pipelines import ClassConditionalDDPMPipeline

    pipeline = ClassConditionalDDPMPipeline(unet=unet, scheduler=sampler_scheduler(scheduler_config, kind),
                                            id2label=dict(id2label) if id2label else None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class UNetView(nn.Module):
    """A UNet2DModel seen through a different forward; keeps the config, dtype and device that diffusers' pipelines
    and our likelihood code read. Subclasses define `forward`."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device


class MeanOnly(UNetView):
    """A learned-variance UNet2DModel seen through its first C output channels (the epsilon/x0/v prediction):
    [N x 2C x H x W] -> [N x C x H x W].

    Why ours: diffusers' DPM-Solver slices a learned-variance output as [:, :3], right for RGB only (wrong for one
    channel), and DDIM cannot take 2C channels at all."""

    def forward(self, sample: torch.Tensor, timestep, **kwargs):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        output = self.unet(sample, timestep, **kwargs).sample
        return UNet2DOutput(sample=output[:, :sample.shape[1]])


@torch.no_grad()
def generate(pipeline, num_images: int, *, num_inference_steps: int, batch_size: int = 64, seed: int = 0,
             per_image: Mapping[str, Sequence] | None = None, progress: bool = False, **call_kwargs) -> torch.Tensor:
    """num_images images from `pipeline` in chunks of batch_size, all drawn from one generator seeded with `seed`
    (so the images depend on the seed and the chunking, not on anything else). Returns float [N x H x W x C] in
    [0, 1] on the CPU (`output_type="np"`).

    per_image: arguments with one entry per image (e.g. {"prompt": [...]} or {"class_labels": [...]}), sliced per
        chunk; without them each call gets `batch_size=` the chunk's size.
    call_kwargs: passed to every call (e.g. guidance_scale).
    The pipeline's models are put in eval mode for the call and restored after; with progress, each chunk shows
    its own bar.
    """
    check_sampler_steps(pipeline.scheduler, num_inference_steps)
    per_image = dict(per_image or {})
    for name, values in per_image.items():
        if len(values) != num_images:
            raise InputError(f"{name} has {len(values)} entries for {num_images} images: give one per image")
    modes = {module: module.training for model in pipeline.components.values() if isinstance(model, nn.Module)
             for module in model.modules()}
    for module in modes:
        module.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    starts = range(0, num_images, batch_size)
    chunks = []
    for index, start in enumerate(starts):
        size = min(batch_size, num_images - start)
        chunk = {name: list(values[start:start + size]) for name, values in per_image.items()} or {"batch_size": size}
        pipeline.set_progress_bar_config(desc=f"sampling {index + 1}/{len(starts)}", unit="step", disable=not progress)
        out = pipeline(**chunk, **call_kwargs, generator=generator, num_inference_steps=num_inference_steps,
                       output_type="np")
        chunks.append(torch.from_numpy(out.images))
    for module, training in modes.items():
        module.training = training
    return torch.cat(chunks)


def check_sampler_steps(scheduler, num_inference_steps: int) -> None:
    """InputError where a sampler cannot take num_inference_steps (DPM-Solver++ with 'leading' spacing and all T steps)."""
    config = scheduler.config
    if (type(scheduler).__name__ == "DPMSolverMultistepScheduler" and config.timestep_spacing == "leading"
            and num_inference_steps >= config.num_train_timesteps):
        raise InputError(f"DPM-Solver++ cannot take all {config.num_train_timesteps} steps with 'leading' timestep "
                         f"spacing (diffusers indexes past its sigmas); use at most {config.num_train_timesteps - 1}")
