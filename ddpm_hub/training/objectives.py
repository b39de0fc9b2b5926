"""The training objective: the loss of one batch.

The loss is note 001's (训练) L_simple, E || z - z_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) z, t) ||^2, written for
each prediction type, with optional min-SNR weighting (Hang et al. 2023) and the Improved DDPM hybrid objective
L_simple + lambda * L_vlb (Nichol & Dhariwal 2021, sec. 3.1), which trains a learned_range variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..likelihood import vb_terms_bpd
from ..scheduling_ddpm import PREDICTION_TYPES, DDPMScheduler

LOSS_TYPES = ("simple", "hybrid")


@dataclass
class LossConfig:
    """How `diffusion_loss` turns a batch into a scalar.

    prediction_type: what the network predicts ("epsilon", "sample", "v_prediction").
    snr_gamma: min-SNR-gamma weighting (None: the plain loss for the prediction type).
    noise_offset: add noise_offset * N(0, 1) per (sample, channel) to the noise (lets models learn overall
        brightness; 0 disables).
    loss_type: "simple" (L_simple) or "hybrid" (L_simple + vlb_weight * T * L_t with a learned_range variance).
    vlb_weight: lambda of the hybrid objective (Improved DDPM uses 0.001).
    """

    prediction_type: str = "epsilon"
    snr_gamma: float | None = None
    noise_offset: float = 0.0
    loss_type: str = "simple"
    vlb_weight: float = 0.001

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(f"--prediction_type {self.prediction_type!r} is not supported; "
                             f"choose one of {', '.join(PREDICTION_TYPES)}")
        if self.loss_type not in LOSS_TYPES:
            raise InputError(f"--loss_type {self.loss_type!r} is not supported; choose one of {', '.join(LOSS_TYPES)}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise InputError(f"--snr_gamma must be positive (5.0 is the paper's choice), got {self.snr_gamma}")

    @property
    def variance_type(self) -> str:
        """The scheduler variance the objective trains for: hybrid learns Improved DDPM's learned_range."""
        return "learned_range" if self.loss_type == "hybrid" else "fixed_small"


def training_target(scheduler: DDPMScheduler, prediction_type: str, clean: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the network should output at x_t: z (epsilon), x_0 (sample) or v = sqrt(abar_t) z - sqrt(1-abar_t) x_0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean
    return scheduler.get_velocity(clean, noise, timesteps)


def loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, prediction_type: str,
                 snr_gamma: float | None) -> torch.Tensor:
    """Per-sample weights (B,) that make each prediction type's MSE a weighted noise-prediction loss.

    Without snr_gamma: 1 for epsilon and v, SNR(t) for sample (x_0-MSE * SNR = epsilon-MSE, as diffusers'
    train_unconditional.py does). With snr_gamma (min-SNR-gamma, Hang et al. 2023, eq. 9): the epsilon-loss
    weight min(SNR, gamma) / SNR expressed for each target: / SNR for epsilon, / (SNR + 1) for v, x 1 for x_0.
    """
    snr = scheduler.snr(timesteps)  # gathered on the timesteps' device: no host round-trip per step
    if snr_gamma is None:
        return snr if prediction_type == "sample" else torch.ones_like(snr)
    clipped = torch.clamp(snr, max=snr_gamma)
    if prediction_type == "sample":
        return clipped
    denominator = snr + 1 if prediction_type == "v_prediction" else snr
    # at zero terminal SNR the epsilon weight's limit min(s, g)/s -> 1
    return torch.where(denominator > 0, clipped / denominator.clamp(min=1e-20), torch.ones_like(snr))


def diffusion_loss(model, clean: torch.Tensor, scheduler: DDPMScheduler, config: LossConfig,
                   model_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    """One Monte Carlo estimate of the training objective on a batch x_0 (B, C, H, W) in [-1, 1].

    Draws t ~ U{0..T-1} and z ~ N(0, I) from the global RNG (so accelerate's saved RNG state makes resume exact),
    forms x_t with `scheduler.add_noise` (the same q(x_t|x_0) sampling uses), and returns the scalar loss in
    float32. `model(x_t, t, **model_kwargs)` returns a diffusers output with `.sample` of shape (B, C, H, W),
    or (B, 2C, H, W) for the hybrid objective.
    """
    batch = clean.shape[0]
    noise = torch.randn_like(clean)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn(batch, clean.shape[1], 1, 1, device=clean.device,
                                                          dtype=clean.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    output = model(noisy, timesteps, **(model_kwargs or {})).sample.float()
    channels = clean.shape[1]
    prediction = output[:, :channels]
    target = training_target(scheduler, config.prediction_type, clean.float(), noise.float(), timesteps)
    mse = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))  # (B,)
    loss = mse * loss_weights(scheduler, timesteps, config.prediction_type, config.snr_gamma)
    if config.loss_type == "hybrid":
        loss = loss + config.vlb_weight * scheduler.config.num_train_timesteps * vlb_term(
            scheduler, output, clean, noisy, timesteps)
    return loss.mean()


def vlb_term(scheduler: DDPMScheduler, output: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
    """L_t in bits/dim with a stop-gradient on the mean (Improved DDPM sec. 3.1): only the variance channels
    learn from the bound; the mean keeps learning from L_simple."""
    channels = clean.shape[1]
    frozen_mean = torch.cat([output[:, :channels].detach(), output[:, channels:]], dim=1)
    return vb_terms_bpd(scheduler, frozen_mean, clean.float(), noisy.float(), timesteps, clip_denoised=False)
