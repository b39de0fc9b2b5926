"""Progressive distillation's math (ddpm_hub.distillation) against float64 closed forms written out here and against
diffusers' DDIMScheduler, and the loop's phased learning-rate schedule."""

import argparse

import pytest
import torch

from conftest import tiny_unet
from ddpm_hub import DDPMScheduler
from ddpm_hub.distillation import (Teacher, distillation_grid, distillation_loss, distillation_target,
                                   student_scheduler_config, teacher_two_steps)

COSINE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


def _ddim(config: dict, steps: int):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def _by_hand(output, z, a, s, prediction_type, clip):
    """x_hat, eps_hat written out (Salimans & Ho 2022 sec. 4; DDIM): v: x = a z - s v, eps = a v + s z."""
    if prediction_type == "v_prediction":
        x0, eps = a * z - s * output, a * output + s * z
    else:
        x0, eps = (z - s * output) / a, output
    return (x0.clamp(-1, 1) if clip else x0), eps


@pytest.mark.parametrize("prediction_type,clip", [("v_prediction", False), ("epsilon", True), ("v_prediction", True)])
def test_one_student_step_on_the_target_equals_two_teacher_ddim_steps(prediction_type, clip):
    """For each of the 4 student steps t -> s (T = 1000, the last onto x with alpha = 1), the teacher's two DDIM steps
    t -> t' -> s computed by hand in float64 equal ours, and equal two steps of diffusers' 8-step DDIMScheduler
    (1000 / 8 nests exactly); one student DDIM step with the v of the target x_tilde lands on them, by hand and in
    diffusers' 4-step DDIMScheduler."""
    teacher_config = {**COSINE, "prediction_type": prediction_type, "clip_sample": clip, "set_alpha_to_one": True,
                      "timestep_spacing": "trailing"}
    scheduler = DDPMScheduler(**COSINE)
    grid = distillation_grid(student_scheduler_config(teacher_config), 4)
    assert grid.timesteps.tolist() == [999, 749, 499, 249] and grid.midpoints.tolist() == [874, 624, 374, 124]
    assert grid.previous.tolist() == [749, 499, 249, -1]

    network = tiny_unet(in_channels=1, sample_size=8).double()
    call = lambda z, t: network(z, t).sample  # noqa: E731
    z_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    t, m, s = grid.timesteps, grid.midpoints, grid.previous
    ours = teacher_two_steps(Teacher(call, prediction_type, 1.0 if clip else None), scheduler, z_t, t, m, s)

    abar = scheduler.alphas_cumprod.double()
    coef = lambda k: (abar[k].sqrt(), (1 - abar[k]).sqrt()) if k >= 0 else (torch.tensor(1.0, dtype=torch.float64),  # noqa: E731
                                                                           torch.tensor(0.0, dtype=torch.float64))
    with torch.no_grad():
        for i in range(4):
            z, (a_t, s_t), (a_m, s_m), (a_s, s_s) = z_t[i:i + 1], coef(t[i]), coef(m[i]), coef(s[i])
            x0, eps = _by_hand(call(z, t[i:i + 1]), z, a_t, s_t, prediction_type, clip)
            z_mid = a_m * x0 + s_m * eps
            x0, eps = _by_hand(call(z_mid, m[i:i + 1]), z_mid, a_m, s_m, prediction_type, clip)
            z_teacher = a_s * x0 + s_s * eps
            torch.testing.assert_close(ours[i:i + 1], z_teacher, rtol=0, atol=1e-12)

            # diffusers: two steps of the teacher's own 8-step DDIM sampler (alphas in float32, so 1e-5)
            teacher = _ddim(teacher_config, 8)
            reference = teacher.step(call(z, t[i]), t[i], z).prev_sample
            reference = teacher.step(call(reference, m[i]), m[i], reference).prev_sample
            torch.testing.assert_close(reference, z_teacher, rtol=0, atol=1e-5)

            # the student: v of the target, one DDIM step, by hand and in diffusers' 4-step sampler
            x_target = distillation_target(z, z_teacher, a_t, s_t, a_s, s_s)
            eps_target = (z - a_t * x_target) / s_t
            v_target = a_t * eps_target - s_t * x_target
            torch.testing.assert_close(a_s * x_target + s_s * eps_target, z_teacher, rtol=0, atol=1e-10)
            student = _ddim(student_scheduler_config(teacher_config), 4)
            torch.testing.assert_close(student.step(v_target, t[i], z).prev_sample, z_teacher, rtol=0, atol=1e-5)
    if clip and prediction_type == "epsilon":  # the clipping took effect somewhere, so the test covers it
        unclipped = teacher_two_steps(Teacher(call, prediction_type, None), scheduler, z_t, t, m, s)
        assert not torch.allclose(unclipped, ours)


@pytest.mark.parametrize("steps", [1, 4, 16, 64, 500])
def test_the_grid_is_what_diffusers_ddim_visits(steps):
    """With T = 1000 most step counts do not divide T: diffusers' DDIM then steps from a listed t to t - T // N,
    not to the next listed timestep. The grid's destination is the one diffusers' step uses (read back from a step
    with a zero v output, which gives (alpha_s alpha_t + sigma_s sigma_t) z), and the teacher's midpoint lies on
    the teacher's 2N-step timesteps, strictly inside each student step."""
    config = student_scheduler_config(COSINE)
    grid = distillation_grid(config, steps)
    student = _ddim(config, steps)
    assert torch.equal(grid.timesteps, student.timesteps.long())
    assert set(grid.midpoints.tolist()) <= set(_ddim(config, 2 * steps).timesteps.tolist())
    abar = DDPMScheduler(**COSINE).alphas_cumprod.double()
    z = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    for t, s in zip(grid.timesteps.tolist(), grid.previous.tolist()):
        a_s, s_s = (abar[s].sqrt(), (1 - abar[s]).sqrt()) if s >= 0 else (1.0, 0.0)
        expected = a_s * abar[t].sqrt() + s_s * (1 - abar[t]).sqrt()
        got = student.step(torch.zeros_like(z), t, z).prev_sample
        torch.testing.assert_close(got, expected * z, rtol=2e-6, atol=0)
    assert torch.all(grid.previous < grid.midpoints) and torch.all(grid.midpoints < grid.timesteps)


def test_the_students_schedule_is_the_teachers():
    """Same alphas_cumprod, bit for bit, in our DDPMScheduler (the targets) and the student's DDIMScheduler."""
    for schedule in ("linear", "squaredcos_cap_v2"):
        teacher = {"num_train_timesteps": 1000, "beta_schedule": schedule, "prediction_type": "epsilon",
                   "clip_sample": True, "timestep_spacing": "leading", "steps_offset": 1, "variance_type": "fixed_small"}
        config = student_scheduler_config(teacher)
        assert torch.equal(_ddim(config, 4).alphas_cumprod, DDPMScheduler(**COSINE | {"beta_schedule": schedule}).alphas_cumprod)
        assert config["prediction_type"] == "v_prediction" and config["clip_sample"] is False
        assert config["timestep_spacing"] == "trailing" and config["steps_offset"] == 0
        assert config["set_alpha_to_one"] is True and "variance_type" not in config


def test_the_loss_is_truncated_snr_weighted_x_error():
    """mean_b max(SNR_b, 1) * mean_pixels (alpha z - sigma v_hat - x_tilde)^2, by hand, at a low and a high SNR."""
    generator = torch.Generator().manual_seed(1)
    v_hat, z, x_target = (torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    abar = torch.tensor([0.002, 0.98], dtype=torch.float64)  # SNR 0.002 (weight 1) and 49 (weight 49)
    alpha, sigma = abar.sqrt().reshape(2, 1, 1, 1), (1 - abar).sqrt().reshape(2, 1, 1, 1)
    per_image = [((alpha[b] * z[b] - sigma[b] * v_hat[b] - x_target[b]) ** 2).mean() for b in range(2)]
    expected = (1.0 * per_image[0] + 49.0 * per_image[1]) / 2
    assert distillation_loss(v_hat, z, x_target, alpha, sigma).item() == pytest.approx(expected.item(), rel=1e-6)


def test_grid_refuses_what_does_not_nest():
    with pytest.raises(ValueError, match="trailing"):
        distillation_grid({**student_scheduler_config(COSINE), "timestep_spacing": "leading"}, 4)
    with pytest.raises(ValueError, match="2N <= T"):
        distillation_grid(student_scheduler_config(COSINE), 600)


def test_phased_learning_rate_schedule_restarts_each_phase():
    """One phase: diffusers' get_scheduler itself. Several: its multipliers restarted at each phase's first step."""
    from diffusers.optimization import get_scheduler

    from ddpm_hub.training.loop import learning_rate_schedule

    def lrs(schedule, count):
        values = []
        for _ in range(count):
            values.append(schedule.get_last_lr()[0])
            schedule.optimizer.step()
            schedule.step()
        return values

    args = argparse.Namespace(lr_scheduler="cosine", lr_warmup_steps=2, learning_rate=0.1)
    fresh = lambda: torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # noqa: E731
    single = lrs(learning_rate_schedule(fresh(), args, [6], 1), 6)
    assert single == lrs(get_scheduler("cosine", fresh(), num_warmup_steps=2, num_training_steps=6), 6)
    phased = lrs(learning_rate_schedule(fresh(), args, [6, 4], 1), 10)
    assert phased[:6] == single
    assert phased[6:] == lrs(get_scheduler("cosine", fresh(), num_warmup_steps=2, num_training_steps=4), 4)
    two_processes = lrs(learning_rate_schedule(fresh(), args, [3, 3], 2), 12)  # accelerate steps it per process
    assert two_processes[6] == 0.0 and two_processes[5] > 0
