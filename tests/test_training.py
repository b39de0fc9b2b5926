"""The training objective (ddpm_hub.training): targets, min-SNR weights, the hybrid loss's stop-gradient."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ddpm_hub import DDPMScheduler
from ddpm_hub.errors import InputError
from ddpm_hub.training.objectives import LossConfig, vlb_term, diffusion_loss, loss_weights

from conftest import TINY_UNET  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Out:
    def __init__(self, sample):
        self.sample = sample


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights_match_the_paper(prediction_type):
    """Hang et al. 2023: the epsilon-loss weight is min(SNR, gamma)/SNR; other targets rescale it by their
    relation to the epsilon error (x_0 error = eps error / SNR, v error = eps error * (SNR+1)/SNR)."""
    scheduler = DDPMScheduler()
    t = torch.tensor([0, 10, 300, 999])
    snr = scheduler.snr(t).double()
    weights = loss_weights(scheduler, t, prediction_type, snr_gamma=5.0).double()
    eps_weight = torch.clamp(snr, max=5.0) / snr
    expected = {"epsilon": eps_weight, "sample": eps_weight * snr, "v_prediction": eps_weight * snr / (snr + 1)}
    torch.testing.assert_close(weights, expected[prediction_type], rtol=1e-6, atol=0)
    plain = loss_weights(scheduler, t, prediction_type, snr_gamma=None).double()
    torch.testing.assert_close(plain, snr if prediction_type == "sample" else torch.ones_like(snr), rtol=1e-6, atol=0)


def test_zero_terminal_snr_weight_is_finite():
    scheduler = DDPMScheduler(rescale_betas_zero_snr=True)
    weights = loss_weights(scheduler, torch.tensor([999]), "epsilon", snr_gamma=5.0)
    assert torch.isfinite(weights).all() and weights.item() == 1.0


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_loss_is_the_notes_mse_on_the_same_draws(prediction_type, snr_gamma):
    """L = E w(t) || target - model(sqrt(abar_t) x_0 + sqrt(1-abar_t) z, t) ||^2 (note 001, 训练), on the same RNG
    draws, every piece written out here in float64: abar, x_t, the target (z, x_0 or v) and the min-SNR weight."""
    scheduler = DDPMScheduler(prediction_type=prediction_type)  # linear betas 1e-4 .. 0.02, T = 1000
    clean = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model = lambda x, t: _Out(0.5 * x - 0.2 * t.reshape(-1, 1, 1, 1) / 1000)  # noqa: E731
    torch.manual_seed(0)
    loss = diffusion_loss(model, clean, scheduler, LossConfig(prediction_type=prediction_type, snr_gamma=snr_gamma))
    torch.manual_seed(0)  # the same draws: z first, then t ~ U{0..T-1}
    noise = torch.randn_like(clean).double()
    t = torch.randint(0, 1000, (16,))

    # abar_t = prod_{i<=t} (1 - beta_i) over float32 linear betas, the product taken in float32 (diffusers' tables)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    abar = torch.cumprod(1 - betas, dim=0).double()[t].reshape(-1, 1, 1, 1)
    x0 = clean.double()
    noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    prediction = 0.5 * noisy - 0.2 * t.double().reshape(-1, 1, 1, 1) / 1000
    target = {"epsilon": noise, "sample": x0, "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0}
    mse = ((prediction - target[prediction_type]) ** 2).mean(dim=(1, 2, 3))
    snr = (abar / (1 - abar)).flatten()
    # Hang et al. 2023: epsilon weight min(SNR, gamma)/SNR; x_0 error = eps error / sqrt(SNR) and
    # v error = eps error * sqrt((SNR+1)/SNR), so their weights carry SNR and SNR/(SNR+1). Plain: x_0-MSE * SNR.
    eps_weight = torch.ones_like(snr) if snr_gamma is None else torch.clamp(snr, max=snr_gamma) / snr
    v_weight = torch.ones_like(snr) if snr_gamma is None else eps_weight * snr / (snr + 1)
    weight = {"epsilon": eps_weight, "sample": eps_weight * snr, "v_prediction": v_weight}[prediction_type]
    expected = (mse * weight).mean()
    if snr_gamma is not None:  # the draws exercise both sides of the clip
        assert (snr > snr_gamma).any() and (snr < snr_gamma).any()
    torch.testing.assert_close(loss.double(), expected, rtol=2e-5, atol=1e-7)


def test_hybrid_vlb_term_trains_only_the_variance_channels():
    """Improved DDPM sec. 3.1: a stop-gradient on the mean for L_vlb, so only the v channels get its gradient."""
    scheduler = DDPMScheduler(num_train_timesteps=100, variance_type="learned_range")
    clean = torch.rand(3, 1, 4, 4) * 2 - 1
    t = torch.tensor([0, 5, 60])
    noisy = scheduler.add_noise(clean, torch.randn_like(clean), t)
    output = torch.randn(3, 2, 4, 4, requires_grad=True)
    vlb_term(scheduler, output, clean, noisy, t).sum().backward()
    assert output.grad[:, :1].abs().max() == 0
    assert output.grad[:, 1:].abs().max() > 0


def test_bad_loss_options():
    with pytest.raises(InputError, match="--loss_type 'kl'.*simple, hybrid"):
        LossConfig(loss_type="kl")
    with pytest.raises(InputError, match="--snr_gamma must be positive"):
        LossConfig(snr_gamma=0)
    assert LossConfig(loss_type="hybrid").variance_type == "learned_range"


def test_hybrid_v_prediction_run_exports_a_learned_range_pipeline(tmp_path):
    sys.path.insert(0, str(ROOT))
    import train_ddpm
    from diffusers import DDPMPipeline

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_UNET))
    out = train_ddpm.main(train_ddpm.parse_args([
        "--output_dir", str(tmp_path / "run"), "--model_config_name_or_path", str(config), "--max_train_steps", "2",
        "--train_batch_size", "16", "--loss_type", "hybrid", "--prediction_type", "v_prediction",
        "--snr_gamma", "5", "--noise_offset", "0.05", "--logger", "none", "--eval_batch_size", "2",
        "--ddpm_num_inference_steps", "3", "--eval_num_samples", "4", "--eval_inference_steps", "2",
        "--eval_bpd_timesteps", "3", "--eval_bpd_images", "2"])).output_dir  # evaluates with DPM-Solver++
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["variance_type"] == "learned_range"
    assert scheduler_config["prediction_type"] == "v_prediction"
    assert json.loads((out / "unet" / "config.json").read_text())["out_channels"] == 2
    pipe = DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (2, 16, 16, 1) and torch.isfinite(torch.from_numpy(images)).all()
