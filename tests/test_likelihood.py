"""ddpm_hub.likelihood: the discretized decoder, the VLB terms and bits/dim (full and importance-sampled)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from conftest import tiny_unet
from ddpm_hub import DDPMScheduler
from ddpm_hub.likelihood import bits_per_dim, discretized_gaussian_log_likelihood, normal_kl, vb_terms_bpd

PIXELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


def _digits_like(batch=4, channels=1, size=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=g).float() / 127.5 - 1


@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.01)), (0.9, math.log(0.3)), (-1.0, math.log(0.002))])
def test_discretized_likelihood_is_a_normalised_distribution(mean, log_scale):
    """Summed over the 256 bins, the probabilities are 1, and each equals the CDF difference (scipy)."""
    means = torch.full_like(PIXELS, mean)
    log_p = discretized_gaussian_log_likelihood(PIXELS, means, torch.full_like(PIXELS, log_scale))
    assert abs(log_p.exp().sum().item() - 1) < 1e-9
    scale = math.exp(log_scale)
    upper = np.where(PIXELS.numpy() > 0.999, np.inf, PIXELS.numpy() + 1 / 255)
    lower = np.where(PIXELS.numpy() < -0.999, -np.inf, PIXELS.numpy() - 1 / 255)
    expected = norm.cdf(upper, mean, scale) - norm.cdf(lower, mean, scale)
    mask = expected > 1e-300
    np.testing.assert_allclose(log_p.exp().numpy()[mask], expected[mask], rtol=1e-7, atol=1e-12)


def test_discretized_likelihood_keeps_far_tail_bins_finite():
    log_p = discretized_gaussian_log_likelihood(torch.tensor([0.5]), torch.tensor([-0.5]), torch.tensor([math.log(0.01)]))
    assert torch.isfinite(log_p).all() and log_p.item() < -1000


def test_discretized_likelihood_has_finite_gradients_everywhere():
    """The hybrid loss trains through the decoder term: no bin, mean or scale may give a NaN/inf gradient."""
    x = PIXELS.repeat(3)
    means = torch.cat([torch.full_like(PIXELS, -0.97), torch.zeros_like(PIXELS), torch.full_like(PIXELS, 0.5)])
    means.requires_grad_(True)
    log_scales = torch.cat([torch.full_like(PIXELS, math.log(1e-4)), torch.full_like(PIXELS, math.log(0.05)),
                            torch.full_like(PIXELS, math.log(2.0))]).requires_grad_(True)
    log_p = discretized_gaussian_log_likelihood(x, means, log_scales)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all()
    assert torch.isfinite(means.grad).all() and torch.isfinite(log_scales.grad).all()


def test_vb_terms_are_kl_of_posterior_and_model():
    scheduler = DDPMScheduler(num_train_timesteps=50, variance_type="fixed_large")
    x0 = _digits_like().double()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 1, 20, 49])
    xt = scheduler.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), t)
    eps_hat = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    terms = vb_terms_bpd(scheduler, eps_hat, x0, xt, t)
    true_mean, _, true_logvar = scheduler.q_posterior_mean_variance(x0, xt, t)
    model_mean = scheduler.predict_mean_from_epsilon(xt, t, eps_hat)
    betas = 1 - scheduler.alphas_cumprod.double()[t] / torch.cat([torch.ones(1), scheduler.alphas_cumprod.double()])[t]
    model_logvar = torch.log(betas).reshape(-1, 1, 1, 1)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(terms[1:], kl[1:], rtol=1e-9, atol=1e-9)
    # t = 0: the decoder NLL with fixed_large uses log tilde-beta_1 (Improved DDPM), not log beta_0
    decoder = -discretized_gaussian_log_likelihood(
        x0[:1], model_mean[:1], 0.5 * scheduler.posterior_log_variance_clipped.double()[0].expand_as(x0[:1]))
    torch.testing.assert_close(terms[0], decoder.mean() / math.log(2), rtol=1e-6, atol=1e-6)  # float32 table


def _oracle(scheduler, x0, variance_half=None):
    """A perfect model: returns, for any (x_t, t), the exact target for the scheduler's prediction_type."""
    prediction_type = scheduler.config.prediction_type

    def model(x, t):
        abar = scheduler.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
        x64, x0_64 = x.double(), x0.double()
        eps = (x64 - abar.sqrt() * x0_64) / (1 - abar).sqrt()
        out = {"epsilon": eps, "sample": x0_64, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0_64}[
            prediction_type]
        if variance_half is not None:
            out = torch.cat([out, torch.full_like(out, variance_half)], dim=1)
        return out.to(x.dtype)

    return model


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance_type,variance_half", [("fixed_small", None), ("learned_range", -1.0)])
def test_perfect_x0_oracle_costs_only_the_decoder(prediction_type, variance_type, variance_half):
    """With the true x_0 every KL term vanishes, so at small T the bound is the decoder term (+ a ~0 prior)."""
    scheduler = DDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2",
                              prediction_type=prediction_type, variance_type=variance_type)
    x0 = _digits_like()
    result = bits_per_dim(_oracle(scheduler, x0, variance_half), scheduler, x0, generator=torch.manual_seed(0))
    assert result.terms.shape == (4, 20) and result.timesteps.tolist() == list(range(19, -1, -1))
    assert result.terms[:, :-1].abs().max() < 1e-3
    assert result.prior.abs().max() < 1e-4
    torch.testing.assert_close(result.total, result.decoder + result.prior, rtol=1e-3, atol=1e-3)
    assert 0 < result.mean() < 8


def test_learned_range_endpoints_equal_fixed_variances():
    """v = -1 gives log tilde-beta_t, v = +1 gives log beta_t (Improved DDPM eq. 15), for t > 0."""
    x0 = _digits_like()
    base = dict(num_train_timesteps=30, prediction_type="sample")
    wrong_x0 = lambda x, t: torch.zeros_like(x)  # noqa: E731
    for v, fixed in [(-1.0, "fixed_small"), (1.0, "fixed_large")]:
        learned = DDPMScheduler(variance_type="learned_range", **base)
        reference = DDPMScheduler(variance_type=fixed, **base)
        out_learned = bits_per_dim(lambda x, t: torch.cat([wrong_x0(x, t), torch.full_like(x, v)], 1), learned, x0,
                                   generator=torch.manual_seed(1))
        out_fixed = bits_per_dim(wrong_x0, reference, x0, generator=torch.manual_seed(1))
        torch.testing.assert_close(out_learned.terms[:, :-1], out_fixed.terms[:, :-1], rtol=1e-5, atol=1e-6)


def test_importance_sampled_estimate_agrees_with_full_sum_within_its_error():
    scheduler = DDPMScheduler(num_train_timesteps=200)
    x0 = _digits_like(batch=4)
    model = lambda x, t: 0.9 * x  # noqa: E731  (a poor epsilon model: large, varied terms)
    full = bits_per_dim(model, scheduler, x0, generator=torch.manual_seed(1))
    assert full.mean_standard_error == 0 and full.num_timesteps == 200
    z_scores = []
    for seed in range(12):
        estimate = bits_per_dim(model, scheduler, x0, num_timesteps=24, generator=torch.manual_seed(100 + seed))
        assert estimate.num_timesteps == 24 and int(estimate.timesteps[0]) == 0
        z_scores.append((estimate.mean() - full.mean()) / estimate.mean_standard_error)
    z = np.array(z_scores)
    assert np.all(np.abs(z) < 4.5), z
    assert np.mean(np.abs(z) < 2) >= 0.6, z
    assert abs(z.mean()) < 1.5, z  # no systematic bias


def test_untrained_unet_bits_per_dim_runs_for_learned_variance():
    scheduler = DDPMScheduler(num_train_timesteps=10, variance_type="learned_range")
    unet = tiny_unet(in_channels=1, out_channels=2)
    result = bits_per_dim(unet, scheduler, _digits_like(batch=2), num_timesteps=5, generator=torch.manual_seed(0))
    assert result.total.shape == (2,) and torch.isfinite(result.total).all() and result.mean() > 0
    assert result.standard_error.shape == (2,)


def test_bits_per_dim_rejects_bad_input():
    scheduler = DDPMScheduler(num_train_timesteps=10)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        bits_per_dim(lambda x, t: x, scheduler, torch.rand(2, 1, 4, 4) * 255)
    with pytest.raises(ValueError, match="num_timesteps"):
        bits_per_dim(lambda x, t: x, scheduler, _digits_like(batch=2, size=4), num_timesteps=1)
    with pytest.raises(ValueError, match="2\\*C"):
        bits_per_dim(lambda x, t: x, DDPMScheduler(num_train_timesteps=10, variance_type="learned_range"),
                     _digits_like(batch=2, size=4))
