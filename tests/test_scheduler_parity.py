"""ddpm_hub.DDPMScheduler against diffusers 0.42's DDPMScheduler: same config keys, same outputs, same generator.

Outputs are compared bit for bit (rtol=0, atol=0, NaN where diffusers has NaN): the README promises the same bits.
The only inexact comparisons are the documented deliberate differences (bf16/fp16 add_noise) and diffusers'
pinned reference numbers."""

import itertools
import json

import diffusers
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DPMSolverMultistepScheduler

from conftest import dummy_model, dummy_sample_deter, tiny_unet
from ddpm_hub import DDPMScheduler

SCHEDULES = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"trained_betas": np.linspace(1e-4, 0.03, 1000).tolist()},
]
VARIANCES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
CLIPPING = [{"clip_sample": False}, {"clip_sample": True}, {"thresholding": True, "sample_max_value": 2.0}]
SPACINGS = [
    {"timestep_spacing": "leading", "steps_offset": 1},
    {"timestep_spacing": "trailing"},
    {"timestep_spacing": "linspace"},
]
ZERO_SNR = [False, True]
GRID = list(itertools.product(range(len(SCHEDULES)), VARIANCES, PREDICTIONS, range(3), range(3), ZERO_SNR))


def _model_output(sample: torch.Tensor, t: int, variance_type: str) -> torch.Tensor:
    """diffusers' dummy model, plus a variance half for learned types: the variance itself (> 0) for
    "learned", v in [-1, 1] for "learned_range"."""
    out = dummy_model(sample, t)
    if variance_type == "learned":
        return torch.cat([out, 1e-3 * (1 + sample.abs())], dim=1)
    if variance_type == "learned_range":
        return torch.cat([out, torch.tanh(sample - 0.5)], dim=1)
    return out


def _run(scheduler, variance_type: str, num_inference_steps: int, seed: int = 0):
    sample = dummy_sample_deter() * 2 - 1
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(num_inference_steps)
    steps = []
    for t in scheduler.timesteps:
        out = scheduler.step(_model_output(sample, int(t), variance_type), t, sample, generator=generator)
        steps.append((out.prev_sample, out.pred_original_sample))
        sample = out.prev_sample
    return steps


@pytest.mark.parametrize("schedule,variance,prediction,clipping,spacing,zero_snr", GRID)
def test_step_parity_grid(schedule, variance, prediction, clipping, spacing, zero_snr):
    config = {**SCHEDULES[schedule], **CLIPPING[clipping], **SPACINGS[spacing],
              "variance_type": variance, "prediction_type": prediction, "rescale_betas_zero_snr": zero_snr}
    ours = DDPMScheduler(**config)
    # diffusers' fixed_large_log is NaN (their issue 14569); ours must equal their fixed_large instead
    reference_config = {**config, "variance_type": "fixed_large"} if variance == "fixed_large_log" else config
    theirs = diffusers.DDPMScheduler(**reference_config)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=0)
    for step, ((a_prev, a_x0), (b_prev, b_x0)) in enumerate(zip(_run(ours, variance, 7), _run(theirs, variance, 7))):
        torch.testing.assert_close(a_x0, b_x0, rtol=0, atol=0, equal_nan=True, msg=f"x0 at step {step}")
        torch.testing.assert_close(a_prev, b_prev, rtol=0, atol=0, equal_nan=True, msg=f"prev at step {step}")
        if not zero_snr or prediction != "epsilon":
            assert torch.isfinite(a_prev).all()


def test_diffusers_fixed_large_log_is_nan_and_ours_is_not():
    """The one deliberate numeric difference: guards against diffusers silently fixing it (then drop it)."""
    sample = dummy_sample_deter()
    theirs = diffusers.DDPMScheduler(variance_type="fixed_large_log")
    ours = DDPMScheduler(variance_type="fixed_large_log")
    out_theirs = theirs.step(dummy_model(sample, 500), 500, sample, generator=torch.manual_seed(0)).prev_sample
    out_ours = ours.step(dummy_model(sample, 500), 500, sample, generator=torch.manual_seed(0)).prev_sample
    assert torch.isnan(out_theirs).all()
    expected = DDPMScheduler(variance_type="fixed_large").step(
        dummy_model(sample, 500), 500, sample, generator=torch.manual_seed(0)).prev_sample
    torch.testing.assert_close(out_ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("config,expected_sum,expected_mean", [
    # diffusers' tests/schedulers/test_scheduler_ddpm.py::test_full_loop_no_noise
    ({"beta_schedule": "linear"}, 258.9606, 0.3372),
    # ::test_full_loop_with_v_prediction
    ({"beta_schedule": "linear", "prediction_type": "v_prediction"}, 202.0296, 0.2631),
])
def test_diffusers_reference_full_loop(config, expected_sum, expected_mean):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                              variance_type="fixed_small", clip_sample=True, **config)
    sample, generator = dummy_sample_deter(), torch.manual_seed(0)
    for t in reversed(range(len(scheduler))):
        sample = scheduler.step(dummy_model(sample, t), t, sample, generator=generator).prev_sample
    assert abs(sample.abs().sum().item() - expected_sum) < 1e-2
    assert abs(sample.abs().mean().item() - expected_mean) < 1e-3


def test_full_1000_step_loop_is_bit_equal():
    outputs = []
    for cls in (DDPMScheduler, diffusers.DDPMScheduler):
        scheduler, sample, generator = cls(), dummy_sample_deter(), torch.manual_seed(0)
        for t in reversed(range(1000)):
            sample = scheduler.step(dummy_model(sample, t), t, sample, generator=generator).prev_sample
        outputs.append(sample)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("config,steps", [
    ({}, 100),
    ({"prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True}, 25),
    ({"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}, 50),
])
def test_ddpm_pipeline_same_images(config, steps):
    unet = tiny_unet()
    images = []
    for cls in (DDPMScheduler, diffusers.DDPMScheduler):
        pipe = DDPMPipeline(unet=unet, scheduler=cls(**config)).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=steps, output_type="np")
        images.append(out.images)
    assert images[0].shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images[0], images[1])


def test_custom_timesteps_and_previous_timestep():
    ours, theirs = DDPMScheduler(), diffusers.DDPMScheduler()
    custom = [900, 640, 300, 100, 7, 0]
    ours.set_timesteps(timesteps=custom)
    theirs.set_timesteps(timesteps=custom)
    assert ours.timesteps.tolist() == custom
    for t in custom:
        assert int(ours.previous_timestep(t)) == int(theirs.previous_timestep(t))
    assert int(ours.previous_timestep(7)) == 0 and int(ours.previous_timestep(0)) == -1
    sample, outs = dummy_sample_deter(), []
    for scheduler in (ours, theirs):
        x, g = sample, torch.Generator().manual_seed(0)
        for t in scheduler.timesteps:
            x = scheduler.step(dummy_model(x, int(t)), t, x, generator=g).prev_sample
        outs.append(x)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 3, 10, 333, 1000])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_set_timesteps_matches(steps, spacing):
    ours, theirs = DDPMScheduler(timestep_spacing=spacing), diffusers.DDPMScheduler(timestep_spacing=spacing)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.dtype == theirs.timesteps.dtype == torch.int64
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_snr", ZERO_SNR)
@pytest.mark.parametrize("schedule", range(len(SCHEDULES)))
def test_add_noise_and_velocity_match(dtype, zero_snr, schedule):
    """Every timestep: in float32, computing sqrt(1-abar_t) in float64 differs from diffusers by one ulp at about a
    third of them, so this fails unless the coefficients are diffusers' float32 ones."""
    config = {**SCHEDULES[schedule], "rescale_betas_zero_snr": zero_snr}
    ours, theirs = DDPMScheduler(**config), diffusers.DDPMScheduler(**config)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1000, 3, 2, 2, generator=g, dtype=dtype)
    noise = torch.randn(1000, 3, 2, 2, generator=g, dtype=dtype)
    t = torch.randperm(1000, generator=g)
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=0, atol=0)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_add_noise_low_precision_keeps_coefficient_precision(dtype):
    """Not bit-equal, deliberately (module docstring): ours computes in float32 and rounds once; diffusers rounds
    abar_t to bf16/fp16 first. So this compares errors against the float64 result instead of bits."""
    scheduler, reference = DDPMScheduler(), diffusers.DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(64, 3, 8, 8, generator=g), torch.randn(64, 3, 8, 8, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    exact = reference.add_noise(x0.double(), noise.double(), t)
    ours_err = (scheduler.add_noise(x0.to(dtype), noise.to(dtype), t).double() - exact).abs().mean()
    theirs_err = (reference.add_noise(x0.to(dtype), noise.to(dtype), t).double() - exact).abs().mean()
    assert scheduler.add_noise(x0.to(dtype), noise.to(dtype), t).dtype == dtype
    assert ours_err < theirs_err


def test_per_sample_timesteps_equal_separate_steps(monkeypatch):
    """A (B,) timestep tensor gives each sample the bits diffusers' step gives it alone with the same noise."""
    import diffusers.schedulers.scheduling_ddpm as diffusers_ddpm

    scheduler = DDPMScheduler(variance_type="fixed_small")
    sample = dummy_sample_deter()
    t = torch.tensor([999, 500, 1, 0])
    model_output = torch.stack([dummy_model(sample[i], int(t[i])) for i in range(4)])
    batched = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(0))
    # the noise ours draws for the batch; diffusers is handed its slice i through the randn_tensor it calls
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(0))
    reference = diffusers.DDPMScheduler(variance_type="fixed_small")
    for i in range(4):
        monkeypatch.setattr(diffusers_ddpm, "randn_tensor", lambda shape, i=i, **_: noise[i:i + 1].clone())
        ref = reference.step(model_output[i:i + 1], int(t[i]), sample[i:i + 1])
        torch.testing.assert_close(batched.pred_original_sample[i:i + 1], ref.pred_original_sample, rtol=0, atol=0)
        torch.testing.assert_close(batched.prev_sample[i:i + 1], ref.prev_sample, rtol=0, atol=0)


def test_config_round_trip_both_directions(tmp_path):
    config = {"beta_schedule": "squaredcos_cap_v2", "variance_type": "learned_range", "prediction_type": "v_prediction",
              "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "clip_sample": False}
    DDPMScheduler(**config).save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DDPMScheduler"
    theirs = diffusers.DDPMScheduler.from_pretrained(tmp_path / "ours")
    diffusers.DDPMScheduler(**config).save_pretrained(tmp_path / "theirs")
    ours = DDPMScheduler.from_pretrained(tmp_path / "theirs")
    for key in (k for k in diffusers.DDPMScheduler(**config).config if not k.startswith("_")):
        assert ours.config[key] == theirs.config[key] == saved.get(key, theirs.config[key]), key
    assert set(DDPMScheduler().config) == set(diffusers.DDPMScheduler().config)
    assert dict(DDPMScheduler().config) == dict(diffusers.DDPMScheduler().config)


def test_swap_to_other_diffusers_schedulers():
    ours = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    ddim = DDIMScheduler.from_config(ours.config)
    assert isinstance(ddim, DDIMScheduler) and ddim.config.prediction_type == "v_prediction"
    torch.testing.assert_close(ddim.alphas_cumprod, ours.alphas_cumprod, rtol=0, atol=0)
    dpm = DPMSolverMultistepScheduler.from_config(ours.config)
    torch.testing.assert_close(dpm.alphas_cumprod, ours.alphas_cumprod, rtol=0, atol=0)
    unet = tiny_unet()
    pipe = DDPMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(DDPMScheduler().config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=1, num_inference_steps=5, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (1, 8, 8, 3) and np.isfinite(images).all()
    assert DDIMScheduler in ours.compatibles
