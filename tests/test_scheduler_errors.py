"""Bad input to DDPMScheduler: a ValueError that names the input and, for options, lists what is allowed.

Where diffusers accepts the input and we do not (the "Stricter checks" of the module docstring), the test also
shows what diffusers computes from it: NaN or a silently wrong result. If diffusers ever gives a sound result for
such an input, that test fails and the check should go."""

import numpy as np
import pytest
import torch
import diffusers

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


def _one_line_error(match: str, **config) -> str:
    with pytest.raises(ValueError, match=match) as info:
        DDPMScheduler(**config)
    assert "\n" not in str(info.value)
    return str(info.value)


def _nonfinite_steps(scheduler, model_output_fn, timesteps) -> list[int]:
    sample = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    bad = []
    for t in timesteps:
        out = scheduler.step(model_output_fn(sample), t, sample, generator=torch.manual_seed(0)).prev_sample
        if not torch.isfinite(out).all():
            bad.append(t)
    return bad


def test_beta_end_2_is_nan_in_diffusers_and_rejected_here():
    """diffusers' test_betas checks beta_end=2 at t = 0 only; betas pass 1 at t = 474 and abar_t underflows to 0."""
    theirs = diffusers.DDPMScheduler(beta_start=0.1, beta_end=2)
    bad = _nonfinite_steps(theirs, lambda x: 0.1 * x, range(1000))
    assert len(bad) > 700 and 0 not in bad  # 755 of 1000 with diffusers 0.42.1
    message = _one_line_error(r"^beta_schedule='linear' with beta_start=0.1, beta_end=2 gives beta_474=",
                              beta_start=0.1, beta_end=2)
    assert "every beta_t must lie in (0, 1]" in message


@pytest.mark.parametrize("config,variance_type,t", [
    ({"beta_start": 0.0}, "fixed_small", 0),  # beta_0 = 0: coef_x0 = sqrt(1) * 0 / (1 - 1) = 0/0
    ({"beta_start": -0.01}, "fixed_small", 0),  # 1 - abar_0 = -0.01: sqrt of a negative number
    # beta_500 = 0: log beta_500 = -inf, and learned_range's v = -1 multiplies it by 0
    ({"trained_betas": np.where(np.arange(1000) == 500, 0.0, np.linspace(1e-4, 0.02, 1000)).tolist()},
     "learned_range", 500),
])
def test_betas_outside_0_1_are_nan_in_diffusers_and_rejected_here(config, variance_type, t):
    theirs = diffusers.DDPMScheduler(variance_type=variance_type, **config)
    if variance_type == "learned_range":
        output = lambda x: torch.cat([0.1 * x, -torch.ones_like(x)], dim=1)  # noqa: E731
    else:
        output = lambda x: 0.1 * x  # noqa: E731
    assert _nonfinite_steps(theirs, output, [t]) == [t]
    source = "trained_betas" if "trained_betas" in config else f"beta_start={config['beta_start']}"
    message = _one_line_error(rf"{source}.* gives beta_{t}=", variance_type=variance_type, **config)
    assert "every beta_t must lie in (0, 1]" in message


def test_two_trained_betas_with_1000_timesteps_fail_inside_torch_in_diffusers():
    """diffusers' test_trained_betas steps at t = 0 only; the scheduler still lists 1000 timesteps."""
    theirs = diffusers.DDPMScheduler(trained_betas=[0.1, 0.2])
    assert len(theirs) == 1000 and len(theirs.timesteps) == 1000 and len(theirs.alphas_cumprod) == 2
    sample = torch.ones(1, 1, 2, 2)
    usable = []
    for t in theirs.timesteps.tolist():
        try:
            theirs.step(sample, t, sample, generator=torch.manual_seed(0))
            usable.append(t)
        except IndexError:
            pass
    assert usable == [1, 0]
    _one_line_error(r"^trained_betas must be a 1-D list of num_train_timesteps=1000 values, got shape \(2,\)",
                    trained_betas=[0.1, 0.2])


def test_more_trained_betas_than_timesteps_are_silently_truncated_in_diffusers():
    betas = np.linspace(1e-4, 0.02, 1000).tolist()
    theirs = diffusers.DDPMScheduler(num_train_timesteps=10, trained_betas=betas)
    first = int(theirs.timesteps[0])
    assert first == 9 and float(theirs.alphas_cumprod[first]) > 0.99  # x_T is almost clean data, not noise
    assert float(theirs.alphas_cumprod[-1]) < 1e-4  # what the trained schedule reaches at its last beta
    _one_line_error(r"^trained_betas must be a 1-D list of num_train_timesteps=10 values, got shape \(1000,\)",
                    num_train_timesteps=10, trained_betas=betas)


@pytest.mark.parametrize("variance_type", ["other", "fixed_larg"])
def test_unknown_variance_type_is_silently_fixed_small_in_diffusers(variance_type):
    """diffusers' test_variance_type passes "other": its step then gives exactly fixed_small's bits."""
    sample = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)

    def prev(variance):
        scheduler = diffusers.DDPMScheduler(variance_type=variance)
        return scheduler.step(0.1 * sample, 500, sample, generator=torch.manual_seed(0)).prev_sample

    assert torch.equal(prev(variance_type), prev("fixed_small"))
    assert not torch.equal(prev("fixed_large"), prev("fixed_small"))
    assert torch.equal(diffusers.DDPMScheduler()._get_variance(500, variance_type=variance_type),
                       diffusers.DDPMScheduler()._get_variance(500, variance_type="fixed_small"))
    message = _one_line_error(rf"^variance_type='{variance_type}' is not supported; choose one of fixed_small, ",
                              variance_type=variance_type)
    assert "learned_range" in message
    with pytest.raises(ValueError, match=rf"^variance_type='{variance_type}' is not supported; choose one of "):
        DDPMScheduler()._get_variance(500, variance_type=variance_type)


def test_negative_timesteps_wrap_around_in_diffusers():
    """diffusers reads alphas_cumprod[-1] for t = -1: the noisiest timestep, silently."""
    x = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    theirs = diffusers.DDPMScheduler()
    torch.testing.assert_close(theirs.add_noise(x, x, torch.tensor([-1])), theirs.add_noise(x, x, torch.tensor([999])),
                               rtol=0, atol=0)
    custom = diffusers.DDPMScheduler()
    custom.set_timesteps(timesteps=[500, 3, -1])
    x0_at_minus_1 = custom.step(0.1 * x, -1, x).pred_original_sample
    x0_at_999 = diffusers.DDPMScheduler().step(0.1 * x, 999, x, generator=torch.manual_seed(0)).pred_original_sample
    torch.testing.assert_close(x0_at_minus_1, x0_at_999, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^timesteps must lie in \[0, 999\]"):
        DDPMScheduler().add_noise(x, x, torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"^timesteps must lie in \[0, 999\]"):
        DDPMScheduler().set_timesteps(timesteps=[500, 3, -1])
    with pytest.raises(ValueError, match="^timestep -1 is not one of the scheduled timesteps"):
        DDPMScheduler().step(0.1 * x, -1, x)


def test_a_model_output_of_another_shape_is_broadcast_silently_in_diffusers():
    sample = torch.linspace(-1, 1, 96).reshape(2, 3, 4, 4)
    output = torch.ones(2, 1, 4, 4)
    assert diffusers.DDPMScheduler().step(output, 10, sample).prev_sample.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"^model_output shape \(2, 1, 4, 4\) does not match sample shape"):
        DDPMScheduler().step(output, 10, sample)
