"""The forward chain one step at a time (note 000 二、1; note 002 (3)): `q_step_mean_variance`, `add_noise_step`,
`sample_forward_trajectory` and `q_trajectory_log_prob`, against float64 closed forms computed here with numpy."""

import math

import numpy as np
import pytest
import torch

from ddpm_hub import DDPMScheduler


def _alphas(scheduler) -> np.ndarray:
    """alpha_t implied by the stored abar (the checks are about the math, not about float32 rounding)."""
    abar = scheduler.alphas_cumprod.double().numpy()
    return np.concatenate([abar[:1], abar[1:] / abar[:-1]])


def _log_normal(x: np.ndarray, mean: np.ndarray, variance) -> np.ndarray:
    """log N(x; mean, variance), elementwise, float64."""
    return -0.5 * (np.log(2 * np.pi * variance) + (x - mean) ** 2 / variance)


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def test_step_mean_and_variance_are_the_notes_closed_form(scheduler):
    """q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I), with beta_t both from the stored abar (exact) and from
    the config's linspace(1e-4, 0.02) in float64 (equal up to float32 rounding)."""
    alphas = _alphas(scheduler)
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).reshape(5, 1)
    t = torch.tensor([0, 1, 250, 998, 999])
    mean, variance, log_variance = scheduler.q_step_mean_variance(x, t)
    np.testing.assert_allclose(mean.numpy().ravel(), np.sqrt(alphas[t]) * x.numpy().ravel(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(variance.numpy().ravel(), 1 - alphas[t], rtol=1e-12)
    np.testing.assert_allclose(log_variance.numpy().ravel(), np.log(1 - alphas[t]), rtol=1e-12)
    config_betas = np.linspace(1e-4, 0.02, 1000)[t.numpy()]
    np.testing.assert_allclose(variance.numpy().ravel(), config_betas, rtol=2e-4)


def test_add_noise_step_is_sqrt_beta_noise_not_beta_noise(scheduler):
    """x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) z; note 000 writes beta_t z."""
    alphas = _alphas(scheduler)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    z = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 7, 500, 999])
    a = alphas[t.numpy()].reshape(4, 1, 1, 1)
    expected = np.sqrt(a) * x.numpy() + np.sqrt(1 - a) * z.numpy()
    np.testing.assert_allclose(scheduler.add_noise_step(x, z, t).numpy(), expected, rtol=1e-13, atol=1e-15)
    note_000 = np.sqrt(a) * x.numpy() + (1 - a) * z.numpy()
    assert np.abs(scheduler.add_noise_step(x, z, t).numpy() - note_000).max() > 0.1


def test_add_noise_step_keeps_the_dtype_and_computes_in_float32_for_half(scheduler):
    x = torch.randn(3, 1, 2, 2).to(torch.bfloat16)
    out = scheduler.add_noise_step(x, torch.randn(3, 1, 2, 2).to(torch.bfloat16), torch.tensor([0, 1, 2]))
    assert out.dtype == torch.bfloat16
    assert scheduler.add_noise_step(x.float(), x.float(), torch.tensor(3)).dtype == torch.float32


def test_trajectory_is_note_002s_expansion_of_the_drawn_noises():
    """Note 002 (加噪过程公式简化, line 89):
    x_t = sqrt(abar_t) x_0 + sum_i sqrt(alpha_t ... alpha_{i+1} (1-alpha_i)) z_i, exactly, with the z_i the trajectory
    drew (re-drawn here from the same seed, in the same order)."""
    T = 50
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2)
    alphas, abar = _alphas(scheduler), scheduler.alphas_cumprod.double().numpy()
    x0 = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(3, 2)
    trajectory = scheduler.sample_forward_trajectory(x0, generator=torch.Generator().manual_seed(3))
    assert trajectory.shape == (T + 1, 3, 2) and trajectory.dtype == torch.float64
    assert torch.equal(trajectory[0], x0)
    g = torch.Generator().manual_seed(3)
    z = np.stack([torch.randn(3, 2, generator=g, dtype=torch.float64).numpy() for _ in range(T)])  # z_1..z_T
    for t in (1, 2, 17, T):  # the notes' t
        coefficients = [np.prod(alphas[i:t]) * (1 - alphas[i - 1]) for i in range(1, t + 1)]
        expected = np.sqrt(abar[t - 1]) * x0.numpy() + sum(np.sqrt(c) * z[i] for i, c in enumerate(coefficients))
        np.testing.assert_allclose(trajectory[t].numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [0, 9, 300, 999])
def test_iterated_steps_reach_q_xt_given_x0_by_monte_carlo(scheduler, t):
    """Entry t+1 of sampled trajectories has q(x_t|x_0)'s mean sqrt(abar_t) x_0 and variance 1 - abar_t (float64
    closed forms) within the Monte Carlo standard error."""
    abar = scheduler.alphas_cumprod.double().numpy()[t]
    short = DDPMScheduler(num_train_timesteps=t + 1, beta_schedule="linear",
                          trained_betas=scheduler.betas.double().numpy()[: t + 1])
    n, x0 = 20_000, 0.6
    samples = short.sample_forward_trajectory(torch.full((n, 1), x0, dtype=torch.float64),
                                              generator=torch.Generator().manual_seed(t))[-1].numpy().ravel()
    assert abs(samples.mean() - math.sqrt(abar) * x0) < 5 * math.sqrt((1 - abar) / n)
    assert abs(samples.var() - (1 - abar)) < 5 * (1 - abar) * math.sqrt(2 / n)


def test_trajectory_log_prob_is_the_sum_of_step_log_densities_and_the_bayes_factorization():
    """log q(x_{1:T}|x_0) as the Markov product prod_t q(x_t|x_{t-1}) (note 000 一、2), and, independently, as
    q(x_T|x_0) prod_{t>=2} q(x_{t-1}|x_t,x_0) (Bayes on each factor, the form the bound's three terms need)."""
    T = 20
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_start=0.01, beta_end=0.3)
    alphas, abar = _alphas(scheduler), scheduler.alphas_cumprod.double().numpy()
    x0 = torch.tensor([[0.5, -1.0, 0.2], [0.0, 0.9, -0.4]], dtype=torch.float64)
    trajectory = scheduler.sample_forward_trajectory(x0, generator=torch.Generator().manual_seed(0))
    ours = scheduler.q_trajectory_log_prob(trajectory).numpy()
    x = trajectory.numpy()  # x[k] is the notes' x_k

    markov = sum(_log_normal(x[t], np.sqrt(alphas[t - 1]) * x[t - 1], 1 - alphas[t - 1]).sum(axis=1)
                 for t in range(1, T + 1))
    bayes = _log_normal(x[T], np.sqrt(abar[T - 1]) * x[0], 1 - abar[T - 1]).sum(axis=1)
    for t in range(2, T + 1):  # the notes' t; abar[t-1] is abar_t
        beta = 1 - alphas[t - 1]
        mean = (np.sqrt(abar[t - 2]) * beta * x[0]
                + np.sqrt(alphas[t - 1]) * (1 - abar[t - 2]) * x[t]) / (1 - abar[t - 1])
        variance = (1 - abar[t - 2]) / (1 - abar[t - 1]) * beta
        bayes = bayes + _log_normal(x[t - 1], mean, variance).sum(axis=1)
    np.testing.assert_allclose(ours, markov, rtol=1e-12)
    np.testing.assert_allclose(ours, bayes, rtol=1e-10)
    assert scheduler.q_trajectory_log_prob(trajectory.float()).dtype == torch.float32


def test_bayes_step_holds_pointwise_between_the_public_densities():
    """q(x_t|x_{t-1}) = q(x_{t-1}|x_t,x_0) q(x_t|x_0) / q(x_{t-1}|x_0) at arbitrary points, with each density from
    its own public method (q_step_mean_variance, q_posterior_mean_variance, q_mean_variance)."""
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.1)
    g = torch.Generator().manual_seed(5)
    x0, x_prev, x_t = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([1, 2, 10, 50, 98, 99])  # diffusers' t >= 1, so x_{t-1} is not x_0

    def log_normal(x, mean, variance):
        return (-0.5 * (torch.log(2 * math.pi * variance) + (x - mean) ** 2 / variance)).sum(dim=1)

    step_mean, step_variance, _ = scheduler.q_step_mean_variance(x_prev, t)
    post_mean, post_variance, _ = scheduler.q_posterior_mean_variance(x0, x_t, t)
    mean_t, variance_t, _ = scheduler.q_mean_variance(x0, t)
    mean_prev, variance_prev, _ = scheduler.q_mean_variance(x0, t - 1)
    left = log_normal(x_t, step_mean, step_variance)
    right = (log_normal(x_prev, post_mean, post_variance) + log_normal(x_t, mean_t, variance_t)
             - log_normal(x_prev, mean_prev, variance_prev))
    torch.testing.assert_close(left, right, rtol=1e-9, atol=1e-9)


def test_bad_inputs_are_one_line_errors(scheduler):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="noise shape"):
        scheduler.add_noise_step(x, torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        scheduler.add_noise_step(x, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="integer tensor"):
        scheduler.q_step_mean_variance(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"trajectory must have shape \[T\+1 x B x \.\.\.\] with T\+1=1001"):
        scheduler.q_trajectory_log_prob(torch.zeros(10, 2, 3))
