"""Bad input to DDPMScheduler: a ValueError that names the input and, for options, lists what is allowed."""

import pytest
import torch

from ddpm_hub import DDPMScheduler


@pytest.mark.parametrize("key,value,allowed", [
    ("beta_schedule", "cosine", "linear, scaled_linear, squaredcos_cap_v2, sigmoid"),
    ("variance_type", "fixed", "fixed_small, fixed_small_log, fixed_large, fixed_large_log, learned, learned_range"),
    ("prediction_type", "noise", "epsilon, sample, v_prediction"),
    ("timestep_spacing", "uniform", "linspace, leading, trailing"),
])
def test_unknown_option_lists_allowed_values(key, value, allowed):
    with pytest.raises(ValueError) as info:
        DDPMScheduler(**{key: value})
    message = str(info.value)
    assert key in message and repr(value) in message and "\n" not in message
    for choice in allowed.split(", "):
        assert choice in message


def test_trained_betas_of_wrong_length():
    with pytest.raises(ValueError, match="trained_betas.*num_train_timesteps=10"):
        DDPMScheduler(num_train_timesteps=10, trained_betas=[0.1] * 9)


def test_too_many_inference_steps():
    with pytest.raises(ValueError, match="num_inference_steps.*1000.*1001"):
        DDPMScheduler().set_timesteps(1001)
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDPMScheduler().set_timesteps(0)


def test_set_timesteps_needs_exactly_one_argument():
    with pytest.raises(ValueError, match="not both"):
        DDPMScheduler().set_timesteps(10, timesteps=[5, 1])
    with pytest.raises(ValueError, match="needs num_inference_steps or timesteps"):
        DDPMScheduler().set_timesteps()


@pytest.mark.parametrize("timesteps,match", [
    ([10, 20, 5], "strictly descending"),
    ([10, 10, 5], "strictly descending"),
    ([1000, 500, 0], r"\[0, 999\]"),
    ([500, 3, -1], r"\[0, 999\]"),
    ([], "non-empty"),
])
def test_bad_custom_timesteps(timesteps, match):
    with pytest.raises(ValueError, match=match):
        DDPMScheduler().set_timesteps(timesteps=timesteps)


def test_steps_offset_pushing_timesteps_out_of_range():
    with pytest.raises(ValueError, match="steps_offset=1"):
        DDPMScheduler(steps_offset=1).set_timesteps(1000)


def test_model_output_shape_mismatch():
    sample = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"model_output shape \(2, 1, 4, 4\) does not match sample shape"):
        DDPMScheduler().step(torch.zeros(2, 1, 4, 4), 10, sample)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_learned_variance_without_2c_channels(variance_type):
    sample = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=rf"variance_type='{variance_type}' needs .*2\*C=6 channels"):
        DDPMScheduler(variance_type=variance_type).step(torch.zeros(2, 3, 4, 4), 10, sample)


def test_step_at_a_timestep_outside_the_schedule():
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep 5 is not one of the scheduled timesteps"):
        scheduler.step(torch.zeros(1, 1, 2, 2), 5, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="timestep 1000 is not one of the scheduled"):
        DDPMScheduler().step(torch.zeros(1, 1, 2, 2), 1000, torch.zeros(1, 1, 2, 2))


def test_add_noise_rejects_bad_timesteps():
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        DDPMScheduler().add_noise(x, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="integer tensor"):
        DDPMScheduler().add_noise(x, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        DDPMScheduler().add_noise(x, x, torch.tensor([1, 2, 3]))
