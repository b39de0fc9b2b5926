"""Bits/dim of held-out images: the variational bound (`ddpm_hub.likelihood.bits_per_dim`, note 002 变分下界) of a
trained model on real images it never trained on, with its standard error."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..errors import InputError
from ..likelihood import bits_per_dim, check_num_timesteps
from ..scheduling_ddpm import DDPMScheduler


@torch.no_grad()
def heldout_bits_per_dim(pipeline_or_dir, num_images: int = 64, num_timesteps: int | None = None, seed: int = 0,
                         images: torch.Tensor | None = None, progress: bool = False) -> dict[str, Any]:
    """The variational bound (`likelihood.bits_per_dim`) on held-out digits, in bits/dim.

    pipeline_or_dir: a DDPMPipeline folder (unet/ and scheduler/ loaded as `load_pipeline_parts` does), an
        object with `.unet` and `.scheduler` (a DDPMPipeline), or a (unet, scheduler) pair. A scheduler of another
        class has its config read into our DDPMScheduler, which evaluates the bound on the model's T-step chain.
    num_images: the first this many images of the held-out split (ordered as `load_digits_split` gives them),
        or of `images`; evaluated as one batch.
    num_timesteps: None (or K >= T) for the full bound over all T timesteps, or K (3 <= K < T) for the unbiased
        K-term estimate of `bits_per_dim`.
    seed: draws the timesteps and the noise.
    images: real images [M x C x H x W] in [-1, 1] to use instead of the held-out digits.

    Returns mean (bits/dim over the images), standard_error (of the mean: the image-to-image spread and, for K
    terms, the timestep sampling, added in quadrature), standard_error_images, standard_error_timesteps, prior
    (mean L_prior), decoder (mean L_0), num_images, num_timesteps (K, or T for the full bound) and
    num_train_timesteps (T).
    """
    if isinstance(pipeline_or_dir, (str, os.PathLike)):
        from ..export import load_pipeline_parts

        unet, scheduler = load_pipeline_parts(pipeline_or_dir)
    elif isinstance(pipeline_or_dir, tuple):
        unet, scheduler = pipeline_or_dir
    else:
        unet, scheduler = pipeline_or_dir.unet, pipeline_or_dir.scheduler
    if not isinstance(scheduler, DDPMScheduler):
        scheduler = DDPMScheduler.from_config(scheduler.config)
    if images is None:
        from .digits import held_out_digits

        images = held_out_digits()
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 2 <= num_images <= len(images):
        raise InputError(f"num_images must be an integer between 2 and {len(images)}, got {num_images!r}")
    expected = (unet.config.in_channels, *_sample_size(unet.config))
    if tuple(images.shape[1:]) != expected:
        raise InputError(f"the model takes {expected[0]}-channel {expected[1]}x{expected[2]} images; the bits/dim "
                         f"images are {tuple(images.shape[1:])}")
    T = scheduler.config.num_train_timesteps
    check_num_timesteps(num_timesteps, "bits/dim timesteps")

    x = images[:num_images].to(device=unet.device, dtype=unet.dtype)
    unet.eval()
    generator = torch.Generator().manual_seed(seed)
    result = bits_per_dim(unet, scheduler, x, num_timesteps=num_timesteps, generator=generator, progress=progress)
    total = result.total.double()
    se_images = float(total.std() / math.sqrt(len(total)))
    return {
        "mean": result.mean(),
        "standard_error": math.hypot(se_images, result.mean_standard_error),
        "standard_error_images": se_images,
        "standard_error_timesteps": result.mean_standard_error,
        "prior": float(result.prior.mean()),
        "decoder": float(result.decoder.mean()),
        "num_images": num_images,
        "num_timesteps": result.num_timesteps,
        "num_train_timesteps": T,
    }


def _sample_size(config) -> tuple[int, int]:
    size = config.sample_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

