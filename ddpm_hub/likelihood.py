"""The variational bound on -log p(x_0), in bits per dimension (note 002, 最大化似然函数的下界; DDPM eq. 5;
Improved DDPM sec. 2 and 3.1).

With diffusers' 0-based timesteps (the notes' t is our t+1):

    -log p(x_0) <= L_prior + sum_{t=1}^{T-1} L_t + L_0
    L_prior = KL(q(x_T|x_0) || N(0, I))                          (the notes' L_T; no parameters)
    L_t     = KL(q(x_{t-1}|x_t, x_0) || p_theta(x_{t-1}|x_t))     (two Gaussians: note 000's KL formula)
    L_0     = -log p_theta(x_0|x_1), discretized to the 256 bins of 8-bit data scaled to [-1, 1]

Everything is computed elementwise in float32 or better and averaged over the C*H*W dimensions, then divided
by log(2) for bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import InputError
from .scheduling_ddpm import DDPMScheduler

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats.

    Note 000 (一、3): KL(p, q) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2, written with log-variances:
    0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (m1-m2)^2 exp(-logvar2) - 1). Inputs broadcast.
    """
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) for 8-bit data scaled to [-1, 1] under N(means, exp(log_scales)^2) integrated over x's bin.

    Each of the 256 values owns the bin [x - 1/255, x + 1/255]; the two end bins extend to -inf and +inf
    (DDPM sec. 3.3, Improved DDPM's decoder). The Gaussian CDF is exact (log_ndtr), not the tanh approximation
    improved-diffusion uses, so tail bins keep their precision, and every branch stays finite so gradients
    are finite too (the hybrid loss trains through this). Shapes: x, means (B, ...); log_scales broadcastable.
    Returns log-probabilities in nats, shape of x.
    """
    if x.shape != means.shape:
        raise ValueError(f"x shape {tuple(x.shape)} does not match means shape {tuple(means.shape)}")
    inv_stdv = torch.exp(-log_scales)
    upper = (x - means + 1.0 / 255.0) * inv_stdv
    lower = (x - means - 1.0 / 255.0) * inv_stdv
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= upper): the bottom bin
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)  # log P(X > lower): the top bin
    log_mid = _log_cdf_difference(upper, lower)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_one_minus_cdf_lower, log_mid))


def _log_cdf_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for upper > lower, accurate in both tails.

    A bin right of the mean is mirrored, Phi(u) - Phi(l) = Phi(-l) - Phi(-u), so the larger CDF is never near 1;
    then log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi))).
    """
    mirrored = lower > 0
    hi = torch.where(mirrored, -lower, upper)
    lo = torch.where(mirrored, -upper, lower)
    log_hi = torch.special.log_ndtr(hi)
    gap = torch.clamp(torch.special.log_ndtr(lo) - log_hi, max=-1e-12)  # < 0; rounding could reach 0
    return log_hi + _log1mexp(gap)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0 (Maechler 2012), each branch fed only values where it is finite."""
    near_zero = a > -math.log(2.0)
    a_near = torch.where(near_zero, a, torch.full_like(a, -1.0))
    a_far = torch.where(near_zero, torch.full_like(a, -1.0), a)
    return torch.where(near_zero, torch.log(-torch.expm1(a_near)), torch.log1p(-torch.exp(a_far)))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def prior_bpd(scheduler: DDPMScheduler, x_start: torch.Tensor) -> torch.Tensor:
    """L_prior = KL(q(x_T|x_0) || N(0, I)) in bits/dim, shape (B,). Not trained; near 0 for a good schedule."""
    T = scheduler.config.num_train_timesteps
    t = torch.full((x_start.shape[0],), T - 1, dtype=torch.long, device=x_start.device)
    mean, _, log_variance = scheduler.q_mean_variance(x_start, t)
    zeros = torch.zeros_like(mean)
    return _mean_flat(normal_kl(mean, log_variance, zeros, zeros)) / math.log(2.0)


def vb_terms_bpd(
    scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    clip_denoised: bool = False,
) -> torch.Tensor:
    """The bound's term at each sample's timestep, in bits/dim, shape (B,).

    t > 0: L_t = KL(q(x_{t-1}|x_t, x_0) || p_theta(x_{t-1}|x_t)); t = 0: L_0 = -log p_theta(x_0|x_1) (decoder).

    Args:
        scheduler: gives q's posterior and p_theta for its prediction_type and variance_type.
        model_output: the model's output at (x_t, t), (B, C, ...) or (B, 2C, ...) for learned variances.
        x_start: x_0 in [-1, 1], (B, C, ...); x_t: the noised sample, (B, C, ...); timesteps: (B,).
        clip_denoised: clamp the model's x_0 estimate to [-1, 1] before forming its mean.
    """
    true_mean, _, true_log_variance = scheduler.q_posterior_mean_variance(x_start, x_t, timesteps)
    model = scheduler.reverse_distribution(model_output, x_t, timesteps, clip_denoised=clip_denoised)
    kl = _mean_flat(normal_kl(true_mean, true_log_variance, model.mean, model.log_variance)) / math.log(2.0)
    x0 = x_start.to(true_mean.dtype)
    decoder_nll = -_mean_flat(
        discretized_gaussian_log_likelihood(x0, model.mean, 0.5 * model.log_variance.expand_as(model.mean))
    ) / math.log(2.0)
    return torch.where(timesteps.to(kl.device) == 0, decoder_nll, kl)


@dataclass
class BitsPerDim:
    """The bound in bits/dim, per image (shape (B,)) unless said otherwise.

    Attributes:
        total: prior + sum of the per-timestep terms (the full sum, or its unbiased estimate).
        prior: L_prior. decoder: L_0 (None when the sampled subset skipped t = 0; its share is then in `total`).
        terms: (B, K) the evaluated terms, one column per timestep in `timesteps`.
        timesteps: (K,) the timesteps evaluated (all T for the full bound).
        standard_error: (B,) standard error of each image's `total` (0 for the full bound).
        mean_standard_error: standard error of `mean()` (the K timesteps are shared by the batch, so it comes
            from the spread of the batch-mean terms; 0 for the full bound).
        num_timesteps: K.
    """

    total: torch.Tensor
    prior: torch.Tensor
    decoder: torch.Tensor
    terms: torch.Tensor
    timesteps: torch.Tensor
    standard_error: torch.Tensor
    mean_standard_error: float
    num_timesteps: int

    def mean(self) -> float:
        """The dataset-level bits/dim: the mean of `total` over the images."""
        return float(self.total.mean())


def _as_model_fn(unet) -> ModelFn:
    """Wrap a diffusers model (output has `.sample`) or a plain callable into f(x_t, t) -> tensor."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = unet(x, t)
        return out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, tuple) else out)

    return model_fn


@torch.no_grad()
def bits_per_dim(
    unet,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    num_timesteps: int | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
    progress: bool = False,
) -> BitsPerDim:
    """Bits/dim of `images` under the model: the full variational bound, or an unbiased estimate of it.

    Args:
        unet: a diffusers UNet2DModel (or any callable (x_t, t) -> output) matching the scheduler's
            prediction_type, with 2C output channels for learned variance types.
        scheduler: the `DDPMScheduler` the model was trained with (its T-step chain is used, not the sampling
            schedule).
        images: x_0, (B, C, H, W), 8-bit data scaled to [-1, 1].
        num_timesteps: None or K >= T: evaluate every t (exact sum, one noise draw per t). 3 <= K < T: evaluate the
            decoder term L_0 exactly and K-1 terms at t ~ p(t) = (1/t) / sum_s (1/s), t in 1..T-1, drawn
            independently; sum_{t>=1} L_t is estimated by mean(L_t / p(t)), which is unbiased, and its standard
            error is std(L_t / p(t)) / sqrt(K-1) (so K >= 3: one draw has no spread to estimate it from). The
            proposal follows the terms' decay: they fall roughly like
            1/t (the first 5 of 200 timesteps hold over half the bound), so uniform draws would be dominated by
            the rare early ones.
        generator: draws the timesteps and the noise (pass one for reproducible numbers).
        clip_denoised: clamp the model's x_0 estimate to [-1, 1] (as Improved DDPM evaluates).
        progress: show a tqdm bar over timesteps.
    """
    T = scheduler.config.num_train_timesteps
    _check_images(images)
    check_num_timesteps(num_timesteps)
    if num_timesteps is None or num_timesteps >= T:
        timesteps, weights = torch.arange(T - 1, -1, -1), torch.ones(T, dtype=torch.float64)
    else:
        timesteps, weights = _importance_timesteps(T, num_timesteps, generator)

    terms = _terms_at(_as_model_fn(unet), scheduler, images, timesteps, generator, clip_denoised, progress)
    prior, K = prior_bpd(scheduler, images), len(timesteps)
    weighted = terms * weights.to(terms)  # (B, K): L_t / p(t) for sampled t, L_t for exact ones
    if K == T:
        total, standard_error, mean_standard_error = weighted.sum(dim=1) + prior, torch.zeros_like(prior), 0.0
    else:  # column 0 is the exact decoder term, the others i.i.d. importance draws
        draws = weighted[:, 1:]
        total = prior + weighted[:, 0] + draws.mean(dim=1)
        standard_error = draws.std(dim=1) / math.sqrt(K - 1)
        mean_standard_error = float(draws.mean(dim=0).std() / math.sqrt(K - 1))
    decoder = terms[:, (timesteps == 0).nonzero()[0, 0]]
    return BitsPerDim(total=total, prior=prior, decoder=decoder, terms=terms, timesteps=timesteps,
                      standard_error=standard_error, mean_standard_error=mean_standard_error, num_timesteps=K)


MIN_ESTIMATE_TERMS = 3  # L_0 and two importance draws: the fewest with a standard error


def check_num_timesteps(num_timesteps: int | None, name: str = "num_timesteps") -> None:
    """InputError unless `num_timesteps` is None (the full bound) or an integer K >= 3 (K >= T: the full bound)."""
    if num_timesteps is None:
        return
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < MIN_ESTIMATE_TERMS:
        raise InputError(f"{name} must be 'full' or an integer K >= {MIN_ESTIMATE_TERMS} (L_0 and at least two "
                         f"sampled terms, so the estimate has a standard error), got {num_timesteps!r}")


def _importance_timesteps(T: int, K: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """t = 0 first (exact, weight 1), then K-1 i.i.d. draws from p(t) proportional to 1/t on 1..T-1, weighted by
    1/p(t). Returns (timesteps (K,), weights (K,) float64)."""
    t = torch.arange(1, T, dtype=torch.float64)
    p = (1.0 / t) / (1.0 / t).sum()
    drawn = torch.multinomial(p, K - 1, replacement=True, generator=generator) + 1
    timesteps = torch.cat([torch.zeros(1, dtype=torch.long), drawn])
    weights = torch.cat([torch.ones(1, dtype=torch.float64), 1.0 / p[drawn - 1]])
    return timesteps, weights


def _terms_at(model_fn: ModelFn, scheduler: DDPMScheduler, images: torch.Tensor, timesteps: torch.Tensor,
              generator: torch.Generator | None, clip_denoised: bool, progress: bool) -> torch.Tensor:
    """vb_terms_bpd at each listed timestep, one fresh noise draw each: (B, len(timesteps))."""
    batch, device = images.shape[0], images.device
    iterator = timesteps.tolist()
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="bits/dim", unit="t")
    terms = []
    for t_value in iterator:
        t = torch.full((batch,), t_value, dtype=torch.long, device=device)
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(device)
        x_t = scheduler.add_noise(images, noise, t)
        terms.append(vb_terms_bpd(scheduler, model_fn(x_t, t), images, x_t, t, clip_denoised=clip_denoised))
    return torch.stack(terms, dim=1)


def _check_images(images: torch.Tensor) -> None:
    if not torch.is_tensor(images) or images.ndim < 2 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (B, C, H, W) scaled to [-1, 1]")
    low, high = float(images.min()), float(images.max())
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
        raise ValueError(f"images must be scaled to [-1, 1] (x / 127.5 - 1), got values in [{low:.3g}, {high:.3g}]")
