"""Training exactly the notes' objective (note 001 训练, note 004 3.): the flags that give DDPM's setting (T = 1000,
linear betas 1e-4..0.02, epsilon prediction, L_simple without weighting, fixed variance), checked through the task
train_ddpm.py builds, and the loss it trains against the plain epsilon MSE computed by hand in float64; and what
clip_sample=True does to the notes' mu_theta near t = T."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_ddpm
from ddpm_hub import DDPMScheduler
from ddpm_hub.training.tasks import TASKS

NOTES_FLAGS = ["--ddpm_beta_schedule", "linear", "--prediction_type", "epsilon", "--snr_gamma", "0",
               "--loss_type", "simple"]


@pytest.fixture(scope="module")
def notes_task():
    """The unconditional task as train_ddpm.main builds it from the notes' flags, set up on the built-in digits."""
    args = train_ddpm.parse_args(NOTES_FLAGS)
    task = TASKS[args.task](args)
    task.check_args()
    task.setup(accelerator=None)
    return task


def test_the_notes_flags_give_ddpms_forward_process_and_loss(notes_task):
    config = notes_task.scheduler.config
    assert (config.num_train_timesteps, config.beta_schedule, config.beta_start, config.beta_end) == (
        1000, "linear", 1e-4, 0.02)
    assert config.trained_betas is None and not config.rescale_betas_zero_snr
    assert config.prediction_type == "epsilon" and config.variance_type == "fixed_small"  # sigma_t^2 = tilde-beta_t
    np.testing.assert_allclose(notes_task.scheduler.betas.double().numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    loss_config = notes_task.loss_config
    assert loss_config.snr_gamma is None and loss_config.loss_type == "simple" and loss_config.noise_offset == 0


class _RecordingModel(torch.nn.Module):
    """A stand-in epsilon model, 0.5 x_t + t/1000, that records what it was called with."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor):
        self.seen = (x_t.clone(), t.clone())
        return SimpleNamespace(sample=self.predict(x_t, t))

    @staticmethod
    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x_t + t.reshape(-1, 1, 1, 1).to(x_t.dtype) / 1000


def test_the_notes_loss_is_the_plain_epsilon_mse(notes_task):
    """L_simple = E_{t, x_0, z} || z - z_theta(sqrt(abar_t) x_0 + sqrt(1-abar_t) z, t) ||^2 (note 001 训练), t uniform
    on the T steps, no weight: the loss the training loop calls equals this, by hand in float64 from
    linspace(1e-4, 0.02, 1000), for the same draws of z and t."""
    batch = notes_task.dataset.__getitems__(list(range(32)))
    model = _RecordingModel()
    torch.manual_seed(7)
    loss = notes_task.loss(batch, {"unet": model})

    torch.manual_seed(7)  # the loss's draws, in its order: z ~ N(0, I), then t ~ U{0..T-1}
    z, t = torch.randn_like(batch), torch.randint(0, 1000, (batch.shape[0],))
    assert torch.equal(model.seen[1], t)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.numpy()].reshape(-1, 1, 1, 1)
    x0, z64 = batch.double().numpy(), z.double().numpy()
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * z64
    np.testing.assert_allclose(model.seen[0].double().numpy(), x_t, rtol=1e-5, atol=1e-6)
    by_hand = np.mean((_RecordingModel.predict(torch.from_numpy(x_t), t).numpy() - z64) ** 2)
    assert abs(loss.item() - by_hand) < 1e-5 * by_hand
    # min-SNR (our default) weighs the same draws differently
    notes_task.loss_config.snr_gamma = 5.0
    try:
        torch.manual_seed(7)
        assert abs(notes_task.loss(batch, {"unet": model}).item() - by_hand) > 1e-3 * by_hand
    finally:
        notes_task.loss_config.snr_gamma = None


def test_clip_sample_changes_mu_theta_where_the_x0_estimate_leaves_the_range():
    """A DDPM step is x_{t-1} = mean + sigma_t z. With clip_sample=False the mean is the notes' mu_theta
    (note 001 逆向过程); with clip_sample=True (diffusers' default, and the scheduler train_ddpm.py saves) it is the
    posterior mean at the x_0 estimate clamped to [-1, 1], so the two differ exactly where
    x_0_hat = (x_t - sqrt(1-abar_t) z_theta) / sqrt(abar_t) leaves [-1, 1]. That estimate multiplies the error of
    z_theta by sqrt((1-abar_t)/abar_t): 0.047 at t = 10, 157 at t = 999 (linear schedule)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    z = torch.randn(64, 1, 4, 4, generator=g)
    z_theta = z + 0.1 * torch.randn(64, 1, 4, 4, generator=g)  # a slightly wrong noise prediction
    clipped, notes = DDPMScheduler(clip_sample=True), DDPMScheduler(clip_sample=False)
    share_outside = {}
    for t in (10, 999):
        x_t = notes.add_noise(x0, z, torch.tensor([t]))
        with_clip, without = (scheduler.step(z_theta, t, x_t, generator=torch.Generator().manual_seed(1))
                              for scheduler in (clipped, notes))
        z_step = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))  # the step's own draw
        sigma_z = notes.posterior_variance[t].sqrt() * z_step
        mu_theta = notes.predict_mean_from_epsilon(x_t, torch.tensor([t]), z_theta)
        torch.testing.assert_close(without.prev_sample, mu_theta + sigma_z, rtol=1e-5, atol=1e-5)
        clipped_mean, _, _ = notes.q_posterior_mean_variance(without.pred_original_sample.clamp(-1, 1), x_t,
                                                             torch.tensor([t]))
        torch.testing.assert_close(with_clip.prev_sample, clipped_mean + sigma_z, rtol=1e-5, atol=1e-5)
        outside = without.pred_original_sample.abs() > 1
        gap = (with_clip.prev_sample - without.prev_sample).abs()
        assert torch.all(gap[~outside] == 0) and torch.all(gap[outside] > 0), t
        share_outside[t] = outside.float().mean().item()
    assert share_outside[10] < 0.05 and share_outside[999] > 0.9, share_outside
