"""benchmarks/posthoc_ema.py: its EMA weights against diffusers' EMAModel run step by step (as make_ema builds it)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from posthoc_ema import checkpoint_weights, ema_coefficients  # noqa: E402

from ddpm_hub.training.ema import make_ema  # noqa: E402


def _ema_model_run(thetas: torch.Tensor, power: float, max_decay: float) -> torch.Tensor:
    """What make_ema's EMAModel holds after stepping through thetas[1:] (thetas[k]: the weights after step k)."""
    model = torch.nn.Linear(1, thetas.shape[1], bias=False).double()
    model.config = {}  # make_ema passes the config on for save_pretrained; a Linear has none
    ema = make_ema(model, max_decay, inv_gamma=1.0, power=power)
    for theta in thetas[1:]:
        model.weight.data.copy_(theta[:, None])
        ema.step(model.parameters())
    return ema.shadow_params[0][:, 0]


@pytest.mark.parametrize("power,max_decay", [(0.75, 0.999), (0.85, 0.97)])
def test_coefficients_reproduce_ema_model(power, max_decay):
    generator = torch.Generator().manual_seed(0)
    thetas = torch.randn(301, 3, generator=generator, dtype=torch.float64)
    coefficients = torch.tensor(ema_coefficients(300, power, max_decay), dtype=torch.float64)
    assert coefficients.sum().item() == pytest.approx(1.0, abs=1e-12)
    expected = _ema_model_run(thetas, power, max_decay)
    torch.testing.assert_close(coefficients @ thetas, expected, rtol=1e-10, atol=1e-12)


def test_checkpoint_weights_exact_for_weights_linear_between_checkpoints():
    """With weights that move linearly between checkpoints every 25 steps, the checkpoints' shares give the EMA."""
    steps = list(range(25, 301, 25))
    at_checkpoints = torch.randn(len(steps), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    thetas = torch.zeros(301, 2, dtype=torch.float64)
    thetas[:26] = at_checkpoints[0]  # before the first checkpoint: its weights
    for i in range(1, len(steps)):
        a, b = steps[i - 1], steps[i]
        for k in range(a, b + 1):
            thetas[k] = at_checkpoints[i - 1] + (k - a) / (b - a) * (at_checkpoints[i] - at_checkpoints[i - 1])
    shares = checkpoint_weights(steps, ema_coefficients(300, 0.85, 0.999))
    posthoc = sum(shares[step] * at_checkpoints[i] for i, step in enumerate(steps))
    torch.testing.assert_close(posthoc, _ema_model_run(thetas, 0.85, 0.999), rtol=1e-10, atol=1e-12)
