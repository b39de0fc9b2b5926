"""The rest of diffusers' DDPMScheduler surface that code written against diffusers calls (`_get_variance`,
`previous_timestep`, `_threshold_sample`, `scale_model_input`, `__len__`, the settable attributes): the same values,
types and bits as diffusers 0.42's class, which is the reference in every test."""

import numpy as np
import pytest
import torch
import diffusers

from ddpm_hub import DDPMScheduler
from ddpm_hub.scheduling_ddpm import VARIANCE_TYPES

CONFIGS = [
    {},
    {"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": True},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing"},
]
# how the schedule is set before the calls: the full chain, a skipping sub-sequence, custom timesteps
SCHEDULES = [None, 7, [999, 640, 300, 100, 7, 1, 0]]


def _pair(config, schedule, **extra):
    schedulers = DDPMScheduler(**config, **extra), diffusers.DDPMScheduler(**config, **extra)
    for scheduler in schedulers:
        if isinstance(schedule, int):
            scheduler.set_timesteps(schedule)
        elif schedule is not None:
            scheduler.set_timesteps(timesteps=schedule)
    return schedulers


def _assert_same(ours, theirs, msg=""):
    """Same bits, dtype, shape and NaN/inf pattern (assert_close also checks dtype and device)."""
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True, msg=msg)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["full", "7-steps", "custom"])
@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_get_variance_matches_diffusers_for_every_type_and_timestep(config, schedule):
    """Every scheduled t, every variance type passed as the argument, with and without predicted_variance."""
    ours, theirs = _pair(CONFIGS[config], schedule)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1  # learned_range's v in [-1, 1], both ends included
    v[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])
    for t in ours.timesteps.tolist():
        for variance_type in VARIANCE_TYPES:
            for predicted in (None, v) if variance_type != "learned_range" else (v,):
                a = ours._get_variance(t, predicted_variance=predicted, variance_type=variance_type)
                b = theirs._get_variance(t, predicted_variance=predicted, variance_type=variance_type)
                if variance_type == "learned":
                    assert a is b is predicted  # diffusers hands the model's variance back as it is
                else:
                    _assert_same(a, b, msg=f"t={t} {variance_type} predicted={predicted is not None}")


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_get_variance_defaults_to_the_configured_type(variance_type):
    ours, theirs = _pair({"variance_type": variance_type}, None)
    v = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    for t in (0, 1, 2, 487, 998, 999):
        a, b = ours._get_variance(t, v), theirs._get_variance(t, v)
        _assert_same(a, b, msg=f"t={t}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_get_variance_learned_range_keeps_diffusers_dtype_promotion(dtype):
    ours, theirs = _pair({"variance_type": "learned_range"}, 10)
    v = (torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(dtype)
    for t in ours.timesteps.tolist():
        _assert_same(ours._get_variance(t, v), theirs._get_variance(t, v), msg=f"t={t}")


def test_get_variance_takes_a_0d_tensor_timestep():
    ours, theirs = _pair({"variance_type": "fixed_large"}, 10)
    for t in ours.timesteps:  # 0-d int64 tensors, as a sampling loop passes them
        _assert_same(ours._get_variance(t), theirs._get_variance(t))


def test_get_variance_returns_a_copy_not_a_view_of_the_step_tables():
    scheduler, reference = _pair({}, None)
    variance = scheduler._get_variance(500)
    variance.mul_(1000)  # diffusers computes a fresh tensor per call, so callers may modify it in place
    _assert_same(scheduler._get_variance(500), reference._get_variance(500))
    sample = torch.ones(1, 1, 2, 2)
    a = scheduler.step(sample, 500, sample, generator=torch.manual_seed(0)).prev_sample
    b = reference.step(sample, 500, sample, generator=torch.manual_seed(0)).prev_sample
    _assert_same(a, b)


def test_get_variance_learned_range_without_predicted_variance():
    """diffusers fails inside torch ((None + 1) / 2); ours says which argument is missing."""
    with pytest.raises(TypeError):
        diffusers.DDPMScheduler(variance_type="learned_range")._get_variance(10)
    with pytest.raises(ValueError, match=r"^variance_type='learned_range' needs predicted_variance") as info:
        DDPMScheduler(variance_type="learned_range")._get_variance(10)
    assert "\n" not in str(info.value)


def _describe(value):
    """A value with its type, and dtype/device for tensors: previous_timestep's return types must match too."""
    if torch.is_tensor(value):
        return ("tensor", value.tolist(), value.dtype, value.device.type, value.ndim)
    return (type(value).__name__, value)


@pytest.mark.parametrize("schedule", [None, 10, [900, 500, 3, 0], "10-then-custom"])
def test_previous_timestep_values_and_types_match(schedule):
    schedulers = []
    for cls in (DDPMScheduler, diffusers.DDPMScheduler):
        scheduler = cls()
        if schedule == "10-then-custom":
            scheduler.set_timesteps(10)
            scheduler.set_timesteps(timesteps=[900, 500, 3, 0])
        elif isinstance(schedule, int):
            scheduler.set_timesteps(schedule)
        elif schedule is not None:
            scheduler.set_timesteps(timesteps=schedule)
        schedulers.append(scheduler)
    ours, theirs = schedulers
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    assert ours.custom_timesteps == theirs.custom_timesteps
    for i, t in enumerate(ours.timesteps.tolist()):
        for given in (t, np.int64(t), torch.tensor(t), torch.tensor(t, dtype=torch.int32), theirs.timesteps[i]):
            assert _describe(ours.previous_timestep(given)) == _describe(theirs.previous_timestep(given)), (t, given)


def test_previous_timestep_batched_before_set_timesteps():
    t = torch.tensor([5, 0, 999])
    assert DDPMScheduler().previous_timestep(t).tolist() == diffusers.DDPMScheduler().previous_timestep(t).tolist()


def test_num_inference_steps_after_custom_timesteps_is_a_deliberate_difference():
    """diffusers keeps a previous call's count (10) after custom timesteps; ours describes the timesteps set."""
    ours, theirs = DDPMScheduler(), diffusers.DDPMScheduler()
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(10)
        scheduler.set_timesteps(timesteps=[900, 500, 3, 0])
    assert theirs.num_inference_steps == 10
    assert ours.num_inference_steps == 4 == len(ours.timesteps)


@pytest.mark.parametrize("steps", [1, 7, 1000])
def test_settable_attributes_after_set_timesteps(steps):
    ours, theirs = _pair({"timestep_spacing": "trailing"}, None)
    for scheduler in (ours, theirs):
        assert scheduler.num_inference_steps is None and scheduler.custom_timesteps is False
        scheduler.set_timesteps(steps, device="cpu")
    for name in ("num_inference_steps", "custom_timesteps", "init_noise_sigma", "variance_type", "order"):
        assert getattr(ours, name) == getattr(theirs, name), name
    _assert_same(ours.timesteps, theirs.timesteps)
    _assert_same(ours.one, theirs.one)
    assert len(ours) == len(theirs) == 1000


@pytest.mark.parametrize("config", CONFIGS + [{"beta_schedule": "sigmoid"}, {"beta_schedule": "laplace"}])
def test_schedule_tensors_are_bit_equal(config):
    ours, theirs = _pair(config, None)
    for name in ("betas", "alphas", "alphas_cumprod", "timesteps"):
        _assert_same(getattr(ours, name), getattr(theirs, name), msg=name)


def test_scale_model_input_returns_the_sample_itself():
    sample = torch.randn(2, 3, 4, 4)
    assert DDPMScheduler().scale_model_input(sample, 10) is sample
    assert diffusers.DDPMScheduler().scale_model_input(sample, 10) is sample


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 2, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ratio,max_value", [(0.995, 1.0), (0.9, 2.5), (0.5, 1.5)])
def test_threshold_sample_matches_diffusers(shape, dtype, ratio, max_value):
    config = {"thresholding": True, "dynamic_thresholding_ratio": ratio, "sample_max_value": max_value}
    ours, theirs = _pair(config, None)
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    _assert_same(ours._threshold_sample(x), theirs._threshold_sample(x))
