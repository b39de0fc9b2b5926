"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models"):
the math of one distillation step, on our DDPMScheduler's tables and on the timesteps diffusers' DDIMScheduler visits.

Notation (the paper's sec. 2, in diffusers' discrete time t = 0..T-1): z_t = alpha_t x + sigma_t eps with
alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) (note 001 特性2; `DDPMScheduler.add_noise`), SNR(t) =
alpha_t^2 / sigma_t^2. A deterministic DDIM step from t to s (paper sec. 2; Song et al. 2021 eq. 12 with eta 0):

    z_s = alpha_s x_hat(z_t) + sigma_s eps_hat(z_t)

One round of Algorithm 2 (progressive distillation) with a student of N steps: for a student step t -> s, the
teacher takes two DDIM steps t -> t' -> s (z_t -> z_t' -> z''), and the student's target is the x whose single DDIM
step from z_t lands on z'' exactly:

    x_tilde = (z'' - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)        (Algorithm 2)

The student predicts v = alpha_t eps - sigma_t x (sec. 4), so x_hat = alpha_t z_t - sigma_t v_hat, and its loss is
the truncated-SNR weighted x-space error (sec. 4, "truncated SNR"):

    L = max(SNR(t), 1) || x_hat - x_tilde ||^2  =  max(||x - x_hat||^2, ||eps - eps_hat||^2) at x = x_tilde.

Discrete time: the student must learn the step the exported sampler takes, and diffusers' DDIMScheduler goes from a
listed timestep t to t - T // N (its own arithmetic, `DDIMScheduler.step` point 1), which is not always the next
listed timestep when N does not divide T. `distillation_grid` pairs each of the student's timesteps (trailing
spacing) with that destination, and places the teacher's midpoint t' on the teacher's own 2N-step timesteps, where
the teacher (the previous round's student) was trained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .scheduling_ddpm import DDPMScheduler

# the DDIMScheduler settings of every student folder: trailing timesteps (the first step starts at t = T-1, the
# highest noise level, as the paper's grid starts at SNR ~ 0), no clipping or thresholding (each step is then linear
# in the network output, so the student can reproduce the target exactly), the last step lands on x itself
# (alpha = 1: `set_alpha_to_one`), and v-prediction.
STUDENT_SCHEDULER = {"timestep_spacing": "trailing", "steps_offset": 0, "clip_sample": False, "thresholding": False,
                     "set_alpha_to_one": True, "prediction_type": "v_prediction"}
# what a student's scheduler takes over from the teacher's: the noise schedule itself
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                 "rescale_betas_zero_snr")


def student_scheduler_config(teacher_config: Mapping[str, Any]) -> dict[str, Any]:
    """The DDIMScheduler config of a student: the teacher's noise schedule (same alphas_cumprod) with
    `STUDENT_SCHEDULER`'s sampling settings."""
    from diffusers import DDIMScheduler

    schedule = {key: teacher_config[key] for key in SCHEDULE_KEYS if key in teacher_config}
    return dict(DDIMScheduler.from_config({**schedule, **STUDENT_SCHEDULER}).config)


@dataclass(frozen=True)
class DistillationGrid:
    """One round's timesteps, each (N,) int64, in sampling order.

    timesteps: t_i, the student's N timesteps (what DDIMScheduler visits with N steps).
    midpoints: t'_i, where the teacher's first step ends and its second starts (its own 2N-step timesteps).
    previous: s_i, where the student's step from t_i lands (-1: alpha = 1, the final step onto x).
    """

    timesteps: torch.Tensor
    midpoints: torch.Tensor
    previous: torch.Tensor


def distillation_grid(student_config: Mapping[str, Any], num_steps: int) -> DistillationGrid:
    """The grid of a round whose student samples in `num_steps` DDIM steps with `student_config` (a DDIMScheduler
    config with trailing spacing) and whose teacher takes 2 * num_steps (at most T)."""
    from diffusers import DDIMScheduler

    T = student_config["num_train_timesteps"]
    if student_config["timestep_spacing"] != "trailing":
        raise ValueError("distillation needs trailing timesteps: they nest, so N steps are every other of 2N")
    if not (1 <= num_steps and 2 * num_steps <= T):
        raise ValueError(f"a round needs 1 <= N and 2N <= T = {T}, got N = {num_steps}")
    student, teacher = DDIMScheduler.from_config(student_config), DDIMScheduler.from_config(student_config)
    student.set_timesteps(num_steps)
    teacher.set_timesteps(2 * num_steps)
    timesteps = student.timesteps.long()
    if not torch.equal(teacher.timesteps[0::2].long(), timesteps):
        raise ValueError(f"the {num_steps}-step timesteps are not every other {2 * num_steps}-step timestep")
    midpoints = teacher.timesteps[1::2].long()
    previous = (timesteps - T // num_steps).clamp(min=-1)  # DDIMScheduler.step: prev_timestep = t - T // N
    if not (torch.all(previous < midpoints) and torch.all(midpoints < timesteps)):
        raise ValueError(f"teacher midpoints {midpoints.tolist()} do not lie inside the student's steps")
    return DistillationGrid(timesteps=timesteps, midpoints=midpoints, previous=previous)


def alpha_sigma(scheduler: DDPMScheduler, timesteps: torch.Tensor, like: torch.Tensor,
                final_alpha_cumprod: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t)) from the scheduler's alphas_cumprod, for timesteps (B,)
    (-1: `final_alpha_cumprod`, DDIM's value past the last step), each shaped (B, 1, ..., 1) to broadcast against
    `like` (B, C, H, W); float64 for float64 `like`, else float32 (square roots taken in float64)."""
    t = timesteps.to(like.device)
    abar = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float64)[t.clamp(min=0)]
    abar = torch.where(t >= 0, abar, torch.full_like(abar, final_alpha_cumprod))
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    shape = (-1, *([1] * (like.ndim - 1)))
    return abar.sqrt().to(dtype).reshape(shape), (1 - abar).sqrt().to(dtype).reshape(shape)


def predict_x0_eps(output: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                   prediction_type: str, clip_range: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, eps_hat) from a network output at z_t, all (B, C, H, W), as DDIMScheduler.step computes them (points
    3-4): epsilon: x = (z - sigma eps) / alpha; sample: eps = (z - alpha x) / sigma; v (sec. 4): x = alpha z - sigma
    v, eps = alpha v + sigma z. With clip_range, x_hat is clamped to [-clip_range, clip_range] and eps_hat kept (the
    scheduler's clip_sample, without use_clipped_model_output)."""
    if prediction_type == "epsilon":
        x0, eps = (z - sigma * output) / alpha, output
    elif prediction_type == "sample":
        x0, eps = output, (z - alpha * output) / sigma
    elif prediction_type == "v_prediction":
        x0, eps = alpha * z - sigma * output, alpha * output + sigma * z
    else:
        raise ValueError(f"prediction_type {prediction_type!r} is not one of epsilon, sample, v_prediction")
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    return x0, eps


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_s: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """z_s = alpha_s x_hat + sigma_s eps_hat: a deterministic DDIM step (paper sec. 2; Song et al. 2021 eq. 12,
    eta 0). Shapes (B, C, H, W), coefficients (B, 1, 1, 1)."""
    return alpha_s * x0 + sigma_s * eps


@dataclass
class Teacher:
    """A teacher's denoiser: `network(z_t, t)` returns its output (B, C, H, W) (the mean channels of a learned-variance
    model), read with its own prediction type and clipping (its scheduler config's clip_sample)."""

    network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    prediction_type: str
    clip_range: float | None = None

    def predict(self, z: torch.Tensor, t: torch.Tensor, alpha: torch.Tensor,
                sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hat, eps_hat) at z_t, in the dtype of the coefficients (the network runs in its own)."""
        output = self.network(z, t).to(alpha.dtype)
        return predict_x0_eps(output, z.to(alpha.dtype), alpha, sigma, self.prediction_type, self.clip_range)


@torch.no_grad()
def teacher_two_steps(teacher: Teacher, scheduler: DDPMScheduler, z_t: torch.Tensor, t: torch.Tensor,
                      midpoint: torch.Tensor, previous: torch.Tensor, dtype: torch.dtype = torch.float64
                      ) -> torch.Tensor:
    """z'': two DDIM steps of the teacher, z_t -> z_t' -> z_s (Algorithm 2, lines "2 steps of DDIM with teacher"),
    for per-sample timesteps t, t', s of shape (B,); z_t (B, C, H, W). The combination runs in `dtype`, the teacher's
    network in its own."""
    work = z_t.to(dtype)
    alpha_t, sigma_t = alpha_sigma(scheduler, t, work)
    alpha_m, sigma_m = alpha_sigma(scheduler, midpoint, work)
    alpha_s, sigma_s = alpha_sigma(scheduler, previous, work)
    z_mid = ddim_step(*teacher.predict(z_t, t, alpha_t, sigma_t), alpha_m, sigma_m)
    return ddim_step(*teacher.predict(z_mid.to(z_t.dtype), midpoint, alpha_m, sigma_m), alpha_s, sigma_s)


def distillation_target(z_t: torch.Tensor, z_teacher: torch.Tensor, alpha_t: torch.Tensor, sigma_t: torch.Tensor,
                        alpha_s: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """x_tilde = (z'' - (sigma_s/sigma_t) z_t) / (alpha_s - (sigma_s/sigma_t) alpha_t) (Algorithm 2): the x whose DDIM
    step from z_t to s gives the teacher's z''. At s = -1 (alpha_s = 1, sigma_s = 0) it is z'' itself. Shapes
    (B, C, H, W), coefficients (B, 1, 1, 1)."""
    ratio = sigma_s / sigma_t
    return (z_teacher - ratio * z_t) / (alpha_s - ratio * alpha_t)


def truncated_snr_weight(alpha_t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    """max(SNR(t), 1) = max(alpha_t^2 / sigma_t^2, 1), the paper's "truncated SNR" weighting of the x-space error
    (sec. 4): the epsilon loss where SNR > 1, the x loss below, never 0 at SNR -> 0."""
    return torch.clamp(alpha_t**2 / sigma_t**2, min=1.0)


def distillation_loss(v_hat: torch.Tensor, z_t: torch.Tensor, x_target: torch.Tensor, alpha_t: torch.Tensor,
                      sigma_t: torch.Tensor) -> torch.Tensor:
    """The student's loss on a batch: mean over samples of max(SNR, 1) * mean over pixels of (x_hat - x_tilde)^2,
    x_hat = alpha_t z_t - sigma_t v_hat (sec. 4). v_hat, z_t, x_target (B, C, H, W); coefficients (B, 1, 1, 1).
    Returns a float32 scalar."""
    x_hat = alpha_t * z_t.to(alpha_t.dtype) - sigma_t * v_hat.to(alpha_t.dtype)
    mse = (x_hat - x_target.to(alpha_t.dtype)).square().mean(dim=tuple(range(1, x_hat.ndim)))  # (B,)
    return (truncated_snr_weight(alpha_t, sigma_t).reshape(-1) * mse).mean().float()
