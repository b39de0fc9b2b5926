"""Independent float64 checks of the notes' equations against the scheduler's closed forms."""

import math

import numpy as np
import pytest
import torch

from ddpm_hub import DDPMScheduler
from ddpm_hub.likelihood import normal_kl
from ddpm_hub.vae import gaussian_kl_standard_normal


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def _abar(scheduler) -> np.ndarray:
    return scheduler.alphas_cumprod.double().numpy()


def _alphas(scheduler) -> np.ndarray:
    """alpha_t as implied by the stored abar (so the checks are about the math, not float32 rounding)."""
    abar = _abar(scheduler)
    return np.concatenate([abar[:1], abar[1:] / abar[:-1]])


@pytest.mark.parametrize("t", [0, 1, 10, 250, 999])
def test_iterating_q_xt_given_xtm1_matches_closed_form(scheduler, t):
    """Note 000/001: composing q(x_s|x_{s-1}) = N(sqrt(alpha_s) x_{s-1}, beta_s) t+1 times gives
    q(x_t|x_0) = N(sqrt(abar_t) x_0, 1 - abar_t) (mean and variance recursions, exact in float64)."""
    alphas = _alphas(scheduler)
    x0 = np.linspace(-1, 1, 7)
    mean, var = x0.copy(), np.zeros_like(x0)
    for s in range(t + 1):
        mean, var = math.sqrt(alphas[s]) * mean, alphas[s] * var + (1 - alphas[s])
    closed_mean, closed_var, closed_log_var = scheduler.q_mean_variance(
        torch.tensor(x0).reshape(7, 1), torch.full((7,), t))
    np.testing.assert_allclose(closed_mean.numpy().ravel(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(closed_var.numpy().ravel(), var, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(closed_log_var.numpy().ravel(), np.log(var), rtol=1e-9)


def test_iterated_chain_monte_carlo_matches_closed_form(scheduler):
    """Sampling the chain step by step with sqrt(beta_t) z (not note 000's beta_t z) lands on q(x_t|x_0)."""
    alphas, t, n = _alphas(scheduler), 300, 400_000
    rng = np.random.default_rng(0)
    x = np.full(n, 0.7)
    for s in range(t + 1):
        x = math.sqrt(alphas[s]) * x + math.sqrt(1 - alphas[s]) * rng.standard_normal(n)
    abar = _abar(scheduler)[t]
    assert abs(x.mean() - math.sqrt(abar) * 0.7) < 5 * math.sqrt(1 / n)
    assert abs(x.var() - (1 - abar)) < 5 * math.sqrt(2 / n)
    # note 000's written update (noise scale beta_t) would give a variance far from 1 - abar_t
    y = np.full(n, 0.7)
    for s in range(t + 1):
        y = math.sqrt(alphas[s]) * y + (1 - alphas[s]) * rng.standard_normal(n)
    assert abs(y.var() - (1 - abar)) > 0.3


@pytest.mark.parametrize("t", [0, 5, 500, 999])
def test_accumulated_noise_variance_identity(scheduler, t):
    """Note 002 (加噪过程公式简化): sum_i alpha_t ... alpha_{i+1} (1 - alpha_i) = 1 - abar_t."""
    alphas = _alphas(scheduler)
    total = sum(np.prod(alphas[i + 1:t + 1]) * (1 - alphas[i]) for i in range(t + 1))
    assert abs(total - (1 - _abar(scheduler)[t])) < 1e-12


@pytest.mark.parametrize("t", [1, 2, 50, 500, 999])
def test_posterior_equals_bayes_product(scheduler, t):
    """Note 002 (逆向过程): q(x_{t-1}|x_t,x_0) is proportional to q(x_t|x_{t-1}) q(x_{t-1}|x_0); integrate the
    product on a grid and compare its mean and variance with tilde-mu and tilde-beta_t."""
    alphas, abar = _alphas(scheduler), _abar(scheduler)
    x0, xt = 0.4, -0.3
    mean_prior, var_prior = math.sqrt(abar[t - 1]) * x0, 1 - abar[t - 1]
    # the posterior lies between the prior's mean and the likelihood's peak x_t / sqrt(alpha_t): cover both
    peak, sd = xt / math.sqrt(alphas[t]), math.sqrt(min(var_prior, 1 - alphas[t]))
    grid = np.linspace(min(mean_prior, peak) - 20 * sd, max(mean_prior, peak) + 20 * sd, 2_000_001)
    log_density = (-(xt - math.sqrt(alphas[t]) * grid) ** 2 / (2 * (1 - alphas[t]))
                   - (grid - mean_prior) ** 2 / (2 * var_prior))
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    numeric_mean = (weights * grid).sum()
    numeric_var = (weights * (grid - numeric_mean) ** 2).sum()
    mean, var, _ = scheduler.q_posterior_mean_variance(
        torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64), torch.tensor([t]))
    assert abs(mean.item() - numeric_mean) < 1e-6 * max(1, abs(numeric_mean))
    assert abs(var.item() - numeric_var) / numeric_var < 1e-4
    # note 002 writes alpha_t/(1-alpha_t) + 1/(1-abar_{t-1}) for this variance: it is the precision
    precision = alphas[t] / (1 - alphas[t]) + 1 / (1 - abar[t - 1])
    assert abs(1 / precision - var.item()) / var.item() < 1e-10
    assert abs(precision - var.item()) > 1.0


def test_posterior_tables_match_closed_forms(scheduler):
    """tilde-beta_t = (1-abar_{t-1})/(1-abar_t) beta_t and the two posterior-mean coefficients (note 001)."""
    abar, alphas = _abar(scheduler), _alphas(scheduler)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    betas = 1 - alphas
    np.testing.assert_allclose(scheduler.posterior_variance.numpy()[1:],
                               ((1 - abar_prev) / (1 - abar) * betas)[1:], rtol=1e-6)
    assert scheduler.posterior_variance[0] == 0
    np.testing.assert_allclose(scheduler.posterior_mean_coef1.numpy(), np.sqrt(abar_prev) * betas / (1 - abar), rtol=1e-6)
    np.testing.assert_allclose(scheduler.posterior_mean_coef2.numpy(),
                               np.sqrt(alphas) * (1 - abar_prev) / (1 - abar), rtol=1e-6)
    clipped = scheduler.posterior_log_variance_clipped.numpy()
    assert clipped[0] == clipped[1]
    np.testing.assert_allclose(clipped[1:], np.log(((1 - abar_prev) / (1 - abar) * betas)[1:]), rtol=1e-6)


def test_mu_theta_closed_form_equals_posterior_mean_at_predicted_x0(scheduler):
    """Note 001: mu_theta = (x_t - beta_t / sqrt(1-abar_t) z_theta) / sqrt(alpha_t) equals tilde-mu(x_t, x_0_hat)."""
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 10, 100, 500, 999])
    x0_hat = scheduler.predict_original_from_epsilon(xt, t, eps)
    posterior_mean, _, _ = scheduler.q_posterior_mean_variance(x0_hat, xt, t)
    torch.testing.assert_close(scheduler.predict_mean_from_epsilon(xt, t, eps), posterior_mean, rtol=1e-9, atol=1e-9)


def test_x0_from_epsilon_and_velocity_invert_add_noise(scheduler):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 400, 998])
    xt = scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(scheduler.predict_original_from_epsilon(xt, t, noise), x0, rtol=1e-9, atol=1e-9)
    v = scheduler.get_velocity(x0, noise, t)
    torch.testing.assert_close(scheduler.predict_original_from_velocity(xt, t, v), x0, rtol=1e-9, atol=1e-9)


def test_snr(scheduler):
    abar = _abar(scheduler)
    t = torch.tensor([0, 500, 999])
    np.testing.assert_allclose(scheduler.snr(t).numpy(), (abar / (1 - abar))[[0, 500, 999]], rtol=1e-6)
    assert torch.all(scheduler.snr(torch.arange(1000)).diff() < 0)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 1.7), (2.0, 0.1, 0.0, 0.05)])
def test_gaussian_kl_matches_numerical_integration(m1, s1, m2, s2):
    """Note 000 (一、3): KL(p, q) = log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2, by quadrature."""
    x = np.linspace(m1 - 12 * s1, m1 + 12 * s1, 2_000_001)
    log_p = -0.5 * ((x - m1) / s1) ** 2 - math.log(s1 * math.sqrt(2 * math.pi))
    log_q = -0.5 * ((x - m2) / s2) ** 2 - math.log(s2 * math.sqrt(2 * math.pi))
    numeric = np.trapezoid(np.exp(log_p) * (log_p - log_q), x)
    closed = normal_kl(torch.tensor(m1, dtype=torch.float64), torch.tensor(2 * math.log(s1), dtype=torch.float64),
                       torch.tensor(m2, dtype=torch.float64), torch.tensor(2 * math.log(s2), dtype=torch.float64))
    note_000 = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert abs(closed.item() - numeric) < 1e-6 * max(1, numeric)
    assert abs(closed.item() - note_000) < 1e-12


def test_vae_kl_to_standard_normal_is_a_special_case():
    """Note 003: the VAE's KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (-log sigma^2 + mu^2 + sigma^2 - 1) per latent
    dimension, summed per image, is note 000's KL(p, q) with m2 = 0, s2 = 1: checked in float64 against note 000's
    formula written out here, against `normal_kl` and, per dimension, against quadrature of p log(p/q)."""
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64) * 1.5  # [N x C x h x w]
    logvar = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)
    ours = gaussian_kl_standard_normal(mean, logvar)
    assert ours.shape == (3,) and ours.dtype == torch.float64

    m1, s1 = mean.numpy(), np.exp(0.5 * logvar.numpy())
    note_000 = np.log(1.0 / s1) + (s1**2 + m1**2) / 2 - 0.5  # log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2
    np.testing.assert_allclose(ours.numpy(), note_000.reshape(3, -1).sum(axis=1), rtol=1e-12, atol=1e-12)
    zero = torch.zeros_like(mean)
    torch.testing.assert_close(ours, normal_kl(mean, logvar, zero, zero).flatten(1).sum(1))

    # one image's dimensions by quadrature, each against the sum's terms
    x_grid = np.linspace(-40, 40, 400_001)
    log_q = -0.5 * x_grid**2 - 0.5 * math.log(2 * math.pi)
    numeric = []
    for m, s in zip(m1[0].ravel(), s1[0].ravel()):
        log_p = -0.5 * ((x_grid - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
        numeric.append(np.trapezoid(np.exp(log_p) * (log_p - log_q), x_grid))
    assert abs(ours[0].item() - sum(numeric)) < 1e-6 * max(1.0, sum(numeric))
