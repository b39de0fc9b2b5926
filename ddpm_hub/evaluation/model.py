"""One model's evaluation as train_ddpm.py runs it (--eval_epochs): sample quality on the digits and bits/dim, as
flat numbers for tensorboard and the model card."""

from __future__ import annotations

import time

import torch

from ..pixels import quantize, to_nchw
from ..sampling import generate, sampling_pipeline
from .digits import DigitsClassifier, digits_metrics
from .likelihood import heldout_bits_per_dim

DIGITS_KEYS = ("fd", "fd_floor", "fd_ratio", "confidence", "classes_covered", "smallest_class_share")


def evaluate_model(unet, scheduler, *, num_samples: int = 256, sampler: str = "dpm", num_inference_steps: int = 25,
                   bpd_timesteps: int | None = 50, bpd_images: torch.Tensor | None = None, bpd_num_images: int = 64,
                   digits: bool = True, seed: int = 0, batch_size: int = 128,
                   classifier: DigitsClassifier | None = None) -> dict[str, float]:
    """The evaluation run during training: flat float metrics for tensorboard and the model card.

    unet, scheduler: the model (its EMA weights if any) and its DDPMScheduler.
    digits: score num_samples images drawn with `sampler` in num_inference_steps (`digits_metrics`, on the images
        quantised to 8 bits as a saved PNG holds them); only for 1-channel 16x16 models of the built-in digits.
    bpd_images: real images [M x C x H x W] in [-1, 1] for bits/dim, all of them in one batch (None: the first
        bpd_num_images held-out digits), with bpd_timesteps terms (None or >= T: the full bound).
    Returns fd, fd_floor, fd_ratio, confidence, classes_covered, smallest_class_share, sampling_seconds (digits
    only), bits_per_dim and bits_per_dim_se.
    """
    metrics: dict[str, float] = {}
    if digits:
        started = time.perf_counter()
        pipeline = sampling_pipeline(unet, scheduler.config, sampler)
        images = generate(pipeline, num_samples, num_inference_steps=num_inference_steps, batch_size=batch_size,
                          seed=seed)
        metrics["sampling_seconds"] = time.perf_counter() - started
        scores = digits_metrics(quantize(to_nchw(images)), classifier=classifier, seed=seed)
        metrics.update({key: scores[key] for key in DIGITS_KEYS})
    was_training = unet.training
    count = bpd_num_images if bpd_images is None else len(bpd_images)
    bound = heldout_bits_per_dim((unet, scheduler), num_images=count, num_timesteps=bpd_timesteps, seed=seed,
                                 images=bpd_images)  # puts the unet in eval mode
    unet.train(was_training)
    metrics["bits_per_dim"], metrics["bits_per_dim_se"] = bound["mean"], bound["standard_error"]
    return metrics
