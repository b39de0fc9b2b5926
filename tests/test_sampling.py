"""ddpm_hub.sampling: the sampler swap built from a saved config, and seeded chunked generation."""

import pytest
import torch

from conftest import tiny_unet
from ddpm_hub import DDPMScheduler
from ddpm_hub.errors import InputError
from ddpm_hub.sampling import generate, sampler_scheduler, sampling_pipeline


@pytest.mark.parametrize("kind", ["ddim", "dpm"])
def test_ode_samplers_use_only_the_mean_channels_of_a_learned_variance_model(kind):
    """A 1-channel learned-variance UNet outputs 2 channels; diffusers' DPM-Solver keeps [:, :3] (both) and DDIM
    cannot take it at all. sampling_pipeline runs them on the first channel: the same images as the sampler
    driven by hand on output[:, :1]."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    unet = tiny_unet(in_channels=1, out_channels=2)
    scheduler = DDPMScheduler(variance_type="learned_range")
    images = generate(sampling_pipeline(unet, scheduler.config, kind), 3, num_inference_steps=4, batch_size=2, seed=5)

    saved = {key: value for key, value in scheduler.config.items() if key != "_use_default_values"}  # as on disk
    sampler = (DDIMScheduler if kind == "ddim" else DPMSolverMultistepScheduler).from_config(
        {**saved, "variance_type": None})
    assert sampler.config.timestep_spacing == "leading"  # the saved DDPM value, not DPM-Solver's own default
    generator = torch.Generator().manual_seed(5)
    expected = []
    for size in (2, 1):  # the chunks generate draws, from one generator
        x = torch.randn((size, 1, 8, 8), generator=generator)
        sampler.set_timesteps(4)
        with torch.no_grad():
            for t in sampler.timesteps:
                x = sampler.step(unet(x, t).sample[:, :1], t, x, generator=generator).prev_sample
        expected.append((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
    assert images.shape == (3, 8, 8, 1)
    torch.testing.assert_close(images, torch.cat(expected), rtol=0, atol=1e-6)


def test_generate_is_seeded_by_its_seed_alone_and_restores_training_mode():
    unet = tiny_unet(in_channels=1).train()
    pipeline = sampling_pipeline(unet, DDPMScheduler().config, "ddpm")
    torch.manual_seed(123)
    a = generate(pipeline, 3, num_inference_steps=3, batch_size=2, seed=1)
    torch.manual_seed(456)  # the global RNG plays no part
    b = generate(pipeline, 3, num_inference_steps=3, batch_size=2, seed=1)
    c = generate(pipeline, 3, num_inference_steps=3, batch_size=2, seed=2)
    assert a.shape == (3, 8, 8, 1) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert unet.training and all(module.training for module in unet.modules())


def test_per_image_arguments_are_sliced_per_chunk():
    calls = []

    class Recorder:
        """Stands in for a pipeline: records each call's per-image argument, returns blank images."""
        scheduler = DDPMScheduler()
        components = {}

        def set_progress_bar_config(self, **kwargs):
            pass

        def __call__(self, class_labels, generator, num_inference_steps, output_type, guidance_scale):
            calls.append((list(class_labels), guidance_scale))
            return type("Output", (), {"images": torch.zeros(len(class_labels), 4, 4, 1).numpy()})

    images = generate(Recorder(), 5, num_inference_steps=2, batch_size=2, per_image={"class_labels": [0, 1, 2, 3, 4]},
                      guidance_scale=3.0)
    assert images.shape == (5, 4, 4, 1) and calls == [([0, 1], 3.0), ([2, 3], 3.0), ([4], 3.0)]
    with pytest.raises(InputError, match="class_labels has 2 entries for 5 images"):
        generate(Recorder(), 5, num_inference_steps=2, per_image={"class_labels": [0, 1]})


def test_unknown_sampler_is_a_one_line_error():
    with pytest.raises(InputError, match="sampler 'euler' is not supported; choose one of ddpm, ddim, dpm"):
        sampler_scheduler(DDPMScheduler().config, "euler")


def test_dpm_solver_at_all_training_steps_is_a_clear_error():
    pipeline = sampling_pipeline(tiny_unet(in_channels=1), DDPMScheduler(num_train_timesteps=20).config, "dpm")
    with pytest.raises(InputError, match="DPM-Solver\\+\\+ cannot take all 20 steps .* use at most 19"):
        generate(pipeline, 2, num_inference_steps=20)
    assert generate(pipeline, 2, num_inference_steps=19).shape == (2, 8, 8, 1)
