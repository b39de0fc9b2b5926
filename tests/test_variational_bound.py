"""The variational bound end to end, and note 003's ELBO as an inequality.

1. Note 002 (DDPM 中的最大化下界) and note 004 (3.):
   log p_theta(x_0) >= E_q[log p_theta(x_{0:T}) - log q(x_{1:T}|x_0)].
   A Monte Carlo estimate of that raw Jensen bound over whole trajectories x_{1:T} ~ q(x_{1:T}|x_0) equals minus
   `ddpm_hub.likelihood.bits_per_dim`'s total, converted to nats, within the standard errors. bits_per_dim sums
   L_T + sum_t KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) + L_0, which is the raw bound only after Bayes'
   q(x_t|x_{t-1},x_0) = q(x_{t-1}|x_t,x_0) q(x_t|x_0) / q(x_{t-1}|x_0) (the step note 002 skips, writing
   +KL(q(x_t|x_{t-1}) || p_theta(x_{t-1}|x_t)) instead). So one comparison checks the Markov product, the Bayes step
   and the decomposition together. The Monte Carlo side is written here in float64 numpy/scipy from the notes'
   formulas (mu_theta of note 001, tilde-beta_t, the discretized decoder), not with the functions under test.
2. Note 003 (2.4): on a linear-Gaussian model, where log p(x) is exact, ELBO(q) <= log p(x) for every q, with the gap
   KL(q(z|x) || p(z|x)), and equality at the true posterior; `ddpm_hub.vae.vae_loss` is -2c times the ELBO up to
   the constant c D log(2 pi c).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from scipy.special import log_ndtr, ndtr
from torch.distributions import MultivariateNormal, kl_divergence

from ddpm_hub import DDPMScheduler
from ddpm_hub.likelihood import bits_per_dim
from ddpm_hub.vae import gaussian_kl_standard_normal, vae_loss

# ------------------------------------------------------------------------------------- 1. the DDPM bound
T = 12
# a short chain with large steps; x_T is still some way from N(0, I) (L_T = 0.4 nats), so every term of the bound,
# L_T included, is large against the standard errors (0.02 nats each side)
SCHEDULE = {"num_train_timesteps": T, "beta_start": 0.01, "beta_end": 0.2, "beta_schedule": "linear"}
# an 8-bit image with both end bins (0 and 255, whose decoder bins reach -inf and +inf) and two inner values
PIXELS = (0, 37, 128, 255)
N = 40_000  # trajectories, and copies of x_0 for bits_per_dim (one fresh noise draw per copy and timestep)


def gaussian_data_denoiser(abar: torch.Tensor, mean: float = 0.1, std: float = 1.0):
    """A hand-made epsilon model: E[z | x_t] if the data were N(mean, std^2), i.e. eps(x_t, t) =
    sqrt(1-abar_t) (x_t - sqrt(abar_t) mean) / (abar_t std^2 + 1 - abar_t). It is not the posterior of our
    x_0, so every KL of the bound is non-zero. abar: (T,) float64; model(x_t (B, ...), t (B,)) -> (B, ...)."""

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t)
        return (1 - a).sqrt() * (x_t - a.sqrt() * mean) / (a * std**2 + 1 - a)

    return model


def _log_normal(x: np.ndarray, mean: np.ndarray, variance) -> np.ndarray:
    """log N(x; mean, variance) summed over every axis but the first, float64."""
    return (-0.5 * (np.log(2 * np.pi * variance) + (x - mean) ** 2 / variance)).reshape(len(x), -1).sum(axis=1)


def _log_discretized(x0: np.ndarray, mean: np.ndarray, std: float) -> np.ndarray:
    """log P(x_0) of 8-bit values in [-1, 1] under N(mean, std^2) integrated over each value's bin
    [x - 1/255, x + 1/255], the end bins reaching -inf / +inf (DDPM sec. 3.3), summed per image."""
    upper, lower = (x0 - mean + 1 / 255) / std, (x0 - mean - 1 / 255) / std
    with np.errstate(divide="ignore"):
        inner = np.log(ndtr(upper) - ndtr(lower))
    log_p = np.where(x0 < -0.999, log_ndtr(upper), np.where(x0 > 0.999, log_ndtr(-lower), inner))
    return log_p.reshape(len(x0), -1).sum(axis=1)


def jensen_bound_samples(trajectory: np.ndarray, model, abar: np.ndarray, clip_denoised: bool) -> np.ndarray:
    """log p_theta(x_{0:T}) - log q(x_{1:T}|x_0) for each trajectory [T+1 x N x ...] (entry k is the notes' x_k).

    p_theta(x_{0:T}) = p(x_T) prod_{t=2}^T N(x_{t-1}; mu_theta(x_t, t), tilde-beta_t I) * P_theta(x_0|x_1), the
    decoder discretized with variance tilde-beta_2 (DDPM's sigma_1^2 = tilde-beta_1 = 0 is replaced by the next
    value, as Improved DDPM and bits_per_dim do); q(x_{1:T}|x_0) = prod_{t=1}^T N(x_t; sqrt(alpha_t) x_{t-1}, beta_t I).
    Indices: abar[t-1] is the notes' abar_t.
    """
    x = trajectory
    alpha = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    beta = 1 - alpha
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    tilde_beta = (1 - abar_prev) / (1 - abar) * beta
    n = x.shape[1]

    def x0_estimate(t):  # the notes' t; note 001: x_0 = (x_t - sqrt(1-abar_t) z) / sqrt(abar_t)
        eps = model(torch.from_numpy(x[t]), torch.full((n,), t - 1)).numpy()
        x0_hat = (x[t] - np.sqrt(1 - abar[t - 1]) * eps) / np.sqrt(abar[t - 1])
        return (np.clip(x0_hat, -1, 1) if clip_denoised else x0_hat), eps

    log_p = _log_normal(x[T], 0.0, 1.0)  # p(x_T) = N(0, I)
    for t in range(T, 1, -1):
        x0_hat, eps = x0_estimate(t)
        if clip_denoised:  # the posterior mean at the clipped x_0 estimate (diffusers' clip_sample)
            mean = (np.sqrt(abar_prev[t - 1]) * beta[t - 1] * x0_hat
                    + np.sqrt(alpha[t - 1]) * (1 - abar_prev[t - 1]) * x[t]) / (1 - abar[t - 1])
        else:  # note 001: mu_theta = (x_t - beta_t / sqrt(1-abar_t) z_theta) / sqrt(alpha_t)
            mean = (x[t] - beta[t - 1] / np.sqrt(1 - abar[t - 1]) * eps) / np.sqrt(alpha[t - 1])
        log_p += _log_normal(x[t - 1], mean, tilde_beta[t - 1])
    x0_hat, _ = x0_estimate(1)
    log_p += _log_discretized(x[0], x0_hat, math.sqrt(tilde_beta[1]))
    log_q = sum(_log_normal(x[t], np.sqrt(alpha[t - 1]) * x[t - 1], beta[t - 1]) for t in range(1, T + 1))
    return log_p - log_q


@pytest.mark.parametrize("clip_denoised", [False, True])
def test_monte_carlo_jensen_bound_equals_minus_bits_per_dim(clip_denoised):
    scheduler = DDPMScheduler(**SCHEDULE, clip_sample=clip_denoised)
    abar = scheduler.alphas_cumprod.double()
    model = gaussian_data_denoiser(abar)
    x0 = (torch.tensor(PIXELS, dtype=torch.float64) / 127.5 - 1).reshape(1, 1, 2, 2)
    images, dims = x0.expand(N, 1, 2, 2), x0.numel()

    trajectory = scheduler.sample_forward_trajectory(images, generator=torch.Generator().manual_seed(0)).numpy()
    bound = jensen_bound_samples(trajectory, model, abar.numpy(), clip_denoised)
    bound_mean, bound_se = bound.mean(), bound.std() / math.sqrt(N)

    result = bits_per_dim(model, scheduler, images, generator=torch.Generator().manual_seed(1),
                          clip_denoised=clip_denoised)
    nats = result.total.numpy() * dims * math.log(2)  # bits/dim -> nats per image
    nats_mean, nats_se = nats.mean(), nats.std() / math.sqrt(N)

    assert 10 < nats_mean < 60  # not a trivial bound: every term contributes
    assert abs(bound_mean + nats_mean) < 4 * math.hypot(bound_se, nats_se), (bound_mean, bound_se, nats_mean, nats_se)
    if clip_denoised:  # the clipping is active on some steps, so this is not the unclipped case again
        unclipped = jensen_bound_samples(trajectory, model, abar.numpy(), clip_denoised=False)
        assert abs(unclipped.mean() - bound_mean) > 8 * bound_se


def test_note_002s_per_step_term_is_not_a_kl():
    """E_q[log p_theta(x_{t-1}|x_t) - log q(x_t|x_{t-1})], note 002's per-step term (line 620), written there as
    +KL(q(x_t|x_{t-1}) || p_theta(x_{t-1}|x_t)). By Bayes it is -KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t))
    + E_q[log q(x_{t-1}|x_0) - log q(x_t|x_0)], and the second part is D/2 log((1-abar_t)/(1-abar_{t-1})) > 0.
    So it is negative for a poor model (not a +KL) and positive for the oracle model, whose every KL is 0 (not a
    -KL either)."""
    scheduler = DDPMScheduler(**SCHEDULE, clip_sample=False)
    abar = scheduler.alphas_cumprod.double()
    n = 20_000
    x0 = (torch.tensor(PIXELS, dtype=torch.float64) / 127.5 - 1).reshape(1, 1, 2, 2).expand(n, 1, 2, 2)
    dims = x0[0].numel()
    x = scheduler.sample_forward_trajectory(x0, generator=torch.Generator().manual_seed(2))

    def oracle(x_t, t):  # z = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t) with the true x_0
        a = abar[t].reshape(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    def note_002_term(model, t):  # the notes' t: x_{t-1} = x[t-1], x_t = x[t], diffusers' timestep t-1
        step = torch.full((n,), t - 1)
        reverse = scheduler.reverse_distribution(model(x[t], step), x[t], step)
        step_mean, step_variance, _ = scheduler.q_step_mean_variance(x[t - 1], step)
        term = (_log_normal(x[t - 1].numpy(), reverse.mean.numpy(), reverse.log_variance.exp().numpy())
                - _log_normal(x[t].numpy(), step_mean.numpy(), step_variance.numpy()))
        # the same expectation in its Bayes form
        post_mean, post_variance, _ = scheduler.q_posterior_mean_variance(x0, x[t], step)
        variance = reverse.log_variance.exp()
        kl = 0.5 * (reverse.log_variance - post_variance.log() + post_variance / variance
                    + (post_mean - reverse.mean) ** 2 / variance - 1).flatten(1).sum(1)
        entropy_growth = dims / 2 * math.log((1 - abar[t - 1]) / (1 - abar[t - 2]))
        bayes = -kl.mean().item() + entropy_growth
        se = term.std() / math.sqrt(n)
        assert abs(term.mean() - bayes) < 4 * math.hypot(se, kl.std().item() / math.sqrt(n)), (t, term.mean(), bayes)
        return term.mean(), se

    poor = gaussian_data_denoiser(abar, std=0.5)
    mean, se = note_002_term(poor, 2)
    assert mean < -10 * se, (mean, se)
    note_002_term(poor, 9)
    for t in (2, 9):
        mean, se = note_002_term(oracle, t)
        assert mean > 10 * se, (t, mean, se)


# ------------------------------------------------------------------------- 2. note 003's ELBO, exactly
D, K, C = 3, 2, 0.3  # x in R^3, z in R^2, decoder variance c


class LinearGaussianVAE:
    """p(z) = N(0, I_K), p(x|z) = N(W z + b, c I_D), and an encoder q(z|x) = N(mu, diag exp(logvar)) that ignores x,
    shaped like diffusers' AutoencoderKL for `vae_loss`: images [N x D x 1 x 1], latents [N x K x 1 x 1]."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
        self.W, self.b, self.mu, self.logvar = W, b, mu, logvar
        self.config = SimpleNamespace(in_channels=W.shape[0])

    def encode(self, images: torch.Tensor):
        n = images.shape[0]
        parameters = torch.cat([self.mu, self.logvar]).reshape(1, -1, 1, 1).expand(n, -1, 1, 1).to(images)
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(parameters))

    def decode(self, z: torch.Tensor):
        return SimpleNamespace(sample=(z.flatten(1) @ self.W.T + self.b).reshape(len(z), -1, 1, 1))


def _model(seed: int = 0, orthogonal: bool = True):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    W = Q[:, :K] * torch.tensor([1.5, 0.7], dtype=torch.float64) if orthogonal else torch.randn(
        D, K, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(D, generator=g, dtype=torch.float64)
    return W, b, x


def log_evidence(W, b, x) -> float:
    """log p(x) = log N(x; b, W W^T + c I), exact."""
    return MultivariateNormal(b, W @ W.T + C * torch.eye(D, dtype=torch.float64)).log_prob(x).item()


def true_posterior(W, b, x):
    """p(z|x) = N(S W^T (x-b) / c, S), S = (I + W^T W / c)^-1."""
    S = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + W.T @ W / C)
    return S @ W.T @ (x - b) / C, S


def elbo(W, b, x, mu, logvar) -> float:
    """Note 003 (2.5): E_q[log p(x|z)] - KL(q(z|x) || p(z)) for q = N(mu, diag exp(logvar)); the expectation in
    closed form, -D/2 log(2 pi c) - (||x - W mu - b||^2 + sum_j sigma_j^2 ||W_j||^2) / (2c); the KL with ours."""
    reconstruction = -D / 2 * math.log(2 * math.pi * C) - (
        (x - W @ mu - b).pow(2).sum() + (logvar.exp() * W.pow(2).sum(0)).sum()) / (2 * C)
    return (reconstruction - gaussian_kl_standard_normal(mu.reshape(1, K), logvar.reshape(1, K))[0]).item()


@pytest.mark.parametrize("orthogonal", [True, False])
def test_elbo_is_below_the_evidence_by_the_kl_to_the_true_posterior(orthogonal):
    """Note 003 (2.4): log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) >= ELBO(q), for random diagonal q."""
    W, b, x = _model(orthogonal=orthogonal)
    evidence = log_evidence(W, b, x)
    post_mean, post_cov = true_posterior(W, b, x)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        mu, logvar = torch.randn(K, generator=g, dtype=torch.float64), torch.randn(K, generator=g, dtype=torch.float64)
        q = MultivariateNormal(mu, torch.diag(logvar.exp()))
        gap = kl_divergence(q, MultivariateNormal(post_mean, post_cov)).item()
        bound = elbo(W, b, x, mu, logvar)
        assert bound < evidence
        assert abs(evidence - bound - gap) < 1e-10 * max(1.0, gap)


def test_elbo_equals_the_evidence_at_the_true_posterior():
    """With W's columns orthogonal, p(z|x) is diagonal, so the encoder family holds it and the bound is tight."""
    W, b, x = _model(orthogonal=True)
    post_mean, post_cov = true_posterior(W, b, x)
    assert torch.allclose(post_cov, torch.diag(torch.diagonal(post_cov)), atol=1e-14)
    at_posterior = elbo(W, b, x, post_mean, torch.diagonal(post_cov).log())
    assert abs(at_posterior - log_evidence(W, b, x)) < 1e-12
    # and only there: moving the mean or the variance off the posterior opens a gap
    assert elbo(W, b, x, post_mean + 0.1, torch.diagonal(post_cov).log()) < at_posterior - 1e-3
    assert elbo(W, b, x, post_mean, torch.diagonal(post_cov).log() + 0.2) < at_posterior - 1e-3


def test_vae_loss_is_minus_2c_times_the_elbo_up_to_a_constant():
    """vae_loss(beta = 2c) = ||x - f(z)||^2 + 2c KL, one sample z ~ q per image, so
    E[vae_loss] = -2c ELBO - c D log(2 pi c): the Monte Carlo mean over many copies of x matches the closed form
    within its standard error, and the KL it reports is the exact one."""
    W, b, x = _model()
    mu, logvar = torch.tensor([0.3, -0.8], dtype=torch.float64), torch.tensor([-0.5, 0.4], dtype=torch.float64)
    vae = LinearGaussianVAE(W, b, mu, logvar)
    n = 50_000
    images = x.reshape(1, D, 1, 1).expand(n, D, 1, 1)
    out = vae_loss(vae, images, beta=2 * C, generator=torch.Generator().manual_seed(0))
    expected = -2 * C * elbo(W, b, x, mu, logvar) - C * D * math.log(2 * math.pi * C)
    # the spread of ||a - B eps||^2, a = x - b - W mu, B = W diag(sigma): 4 a^T B B^T a + 2 tr((B^T B)^2)
    a, B = x - b - W @ mu, W * (0.5 * logvar).exp()
    std = math.sqrt(4 * (a @ B @ B.T @ a).item() + 2 * torch.trace((B.T @ B) @ (B.T @ B)).item())
    assert abs(out.loss.item() - expected) < 4 * std / math.sqrt(n) + 1e-5 * abs(expected)
    exact_kl = kl_divergence(MultivariateNormal(mu, torch.diag(logvar.exp())),
                             MultivariateNormal(torch.zeros(K, dtype=torch.float64), torch.eye(K, dtype=torch.float64)))
    assert abs(out.kl.item() - exact_kl.item()) < 1e-6
