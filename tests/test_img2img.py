"""ddpm_hub.DDPMImg2ImgPipeline: SDEdit against the closed form of q(x_t|x_0) and diffusers' own samplers."""

import pytest
import torch

from conftest import tiny_unet
from ddpm_hub import DDPMImg2ImgPipeline, DDPMScheduler
from ddpm_hub.errors import InputError
from ddpm_hub.pipelines.class_conditional import DEFAULT_GUIDANCE_SCALE  # noqa: E402

CONFIG = {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}


def pipeline(**config) -> DDPMImg2ImgPipeline:
    config = {**CONFIG, **config}
    learned = config.get("variance_type") in ("learned", "learned_range")
    pipe = DDPMImg2ImgPipeline(unet=tiny_unet(1, out_channels=2 if learned else 1), scheduler=DDPMScheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def sdedit_by_hand(pipe, x0, strength, steps, kind, seed, network=None):
    """SDEdit written out with diffusers' own scheduler classes from the model's config: x_{t_0} = sqrt(abar_{t_0})
    x_0 + sqrt(1 - abar_{t_0}) z (note 001 特性2), z the generator's first draw, then the sampler's last
    int(steps * strength) steps (diffusers' img2img count); ODE samplers see the first C output channels.
    network: (x_t, t) -> model output (default: the unet alone)."""
    from diffusers import DDIMScheduler, DDPMScheduler as DiffusersDDPM, DPMSolverMultistepScheduler

    config = dict(pipe.scheduler.config)
    if kind != "ddpm":
        config["variance_type"] = None
    sampler = {"ddpm": DiffusersDDPM, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}[kind].from_config(
        {k: v for k, v in config.items() if not k.startswith("_")})
    sampler.set_timesteps(steps)
    start = steps - int(steps * strength)
    timesteps = sampler.timesteps[start:]
    if hasattr(sampler, "set_begin_index"):
        sampler.set_begin_index(start)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(x0.shape, generator=generator)
    abar = sampler.alphas_cumprod[timesteps[0]]
    x = abar.sqrt() * x0 + (1 - abar).sqrt() * z
    network = network or (lambda x, t: pipe.unet(x, t).sample)
    for t in timesteps:
        output = network(x, t)
        output = output if kind == "ddpm" else output[:, :1]
        x = sampler.step(output, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("strength", [1.0, 0.5, 0.45])
def test_sdedit_is_the_closed_form_then_the_samplers_last_steps(kind, strength):
    """strength 1 starts at the first scheduled timestep (the input only through sqrt(abar_T) x_0), 0.5 half of the
    way, 0.45 at int(8 * 0.45) = 3 steps from the end; learned_range for DDPM (the model's variance), the mean
    channels for the ODEs. The hand-written loop sets DPM-Solver's begin index as diffusers' img2img pipelines do;
    the pipeline leaves it to the solver's own lookup of the first timestep, which finds the same index."""
    pipe = pipeline(variance_type="learned_range", timestep_spacing="trailing")
    x0 = images()
    out = pipe(x0, strength=strength, num_inference_steps=8, sampler=kind, generator=torch.Generator().manual_seed(3),
               output_type="pt").images
    torch.testing.assert_close(out, sdedit_by_hand(pipe, x0, strength, 8, kind, 3), rtol=0, atol=1e-6)


def test_strength_one_sees_the_input_only_through_the_terminal_signal():
    """Two inputs, the same noise: the noisy starts differ by exactly sqrt(abar_{T-1}) (x_0 - x_0'), so with that
    scale set to 0 (zero terminal SNR) the two edits are the same image."""
    pipe = pipeline(timestep_spacing="trailing", rescale_betas_zero_snr=True)
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0
    a, b = (pipe(x0, strength=1.0, num_inference_steps=5, generator=torch.Generator().manual_seed(1),
                 output_type="pt").images for x0 in (images(seed=0), images(seed=1)))
    assert torch.equal(a, b)
    c = pipe(images(seed=1), strength=0.8, num_inference_steps=5, generator=torch.Generator().manual_seed(1),
             output_type="pt").images
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_strength_zero_returns_the_input_without_drawing_or_running_the_model(kind):
    pipe = pipeline()
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    x0 = images()
    for output_type in ("pt", "np"):
        out = pipe(x0, strength=0.0, num_inference_steps=10, sampler=kind, generator=generator,
                   output_type=output_type).images
        expected = (x0 / 2 + 0.5).clamp(0, 1)
        assert torch.equal(torch.as_tensor(out), expected if output_type == "pt" else expected.permute(0, 2, 3, 1))
    assert not calls and torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("kwargs, message", [
    ({"strength": 1.5}, r"strength must be a number in \[0, 1\], got 1.5"),
    ({"strength": -0.1}, r"strength must be a number in \[0, 1\], got -0.1"),
    ({"strength": "0.5"}, r"strength must be a number in \[0, 1\], got '0.5'"),
    ({"sampler": "euler"}, "sampler 'euler' is not supported; choose one of ddpm, ddim, dpm"),
    ({"num_inference_steps": 0}, "num_inference_steps must be an integer between 1 and 20"),
    ({"output_type": "latent"}, "output_type 'latent' is not supported"),
    ({"image": -torch.ones(1, 3, 8, 8)}, "image has 3 channels but the model takes 1"),
    ({"image": -torch.ones(1, 1, 16, 16)}, "image is 16x16 .* the model makes 8x8 images"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        pipeline()(**{"image": images(), "num_inference_steps": 4, **kwargs})
    assert "\n" not in str(error.value)


# ---------------------------------------------------- class-conditional models (train_ddpm.py --class_conditional)
NAMES = {0: "cat", 1: "dog", 2: "emu"}  # K = 3 classes; id 3 is "no class"


def class_pipeline() -> DDPMImg2ImgPipeline:
    """A class-conditional pipeline: 4 class embeddings, learned_range variance (2C outputs)."""
    pipe = DDPMImg2ImgPipeline(unet=tiny_unet(1, out_channels=2, num_class_embeds=4),
                               scheduler=DDPMScheduler(**CONFIG, variance_type="learned_range",
                                                       timestep_spacing="trailing"), id2label=NAMES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guided_by_hand(unet, ids: list[int], s: float):
    """eps_u + s (eps_c - eps_u) in the first channel, the conditional pass's variance channel (Ho & Salimans 2022
    eq. 6; GLIDE's variance), from two direct UNet calls: the class ids and the "no class" id 3."""
    def network(x, t):
        conditional = unet(x, t, class_labels=torch.tensor(ids)).sample
        unconditional = unet(x, t, class_labels=torch.full((len(ids),), 3)).sample
        return torch.cat([unconditional[:, :1] + s * (conditional[:, :1] - unconditional[:, :1]), conditional[:, 1:]],
                         dim=1)
    return network


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("labels, ids, guidance_scale, s", [
    (None, [3, 3], None, 1.0),  # no labels: the "no class" id, unguided
    ("dog", [1, 1], 1.0, 1.0),  # one for all, s = 1: the conditional model alone
    (["emu", 0], [2, 0], 3.0, 3.0),  # one per image, names and ids mixed
    ([1, 2], [1, 2], None, DEFAULT_GUIDANCE_SCALE),  # the pipelines' default
])
def test_a_class_conditional_edit_is_sdedit_with_the_guided_output(kind, labels, ids, guidance_scale, s):
    """Every sampler denoises with the guided output at each step (its mean channel for the ODE samplers)."""
    pipe = class_pipeline()
    x0 = images()
    out = pipe(x0, strength=0.6, num_inference_steps=5, sampler=kind, class_labels=labels,
               guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(3), output_type="pt").images
    expected = sdedit_by_hand(pipe, x0, 0.6, 5, kind, 3, network=guided_by_hand(pipe.unet, ids, s))
    # the pipeline runs both classes as one batch of 2B: float32 rounding differs from two B-batches by ~1e-7, times s
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_loads_a_class_conditional_folder_without_running_its_code(tmp_path):
    """The folder's pipeline.py raises on import; diffusers' own loader would import it (with trust_remote_code)."""
    import sys

    from ddpm_hub.export import save_class_conditional_pipeline

    save_class_conditional_pipeline(tmp_path, tiny_unet(1, num_class_embeds=4), CONFIG, NAMES)
    (tmp_path / "pipeline.py").write_text("raise RuntimeError('the folder code ran')\n")
    loaded_before = {name for name in sys.modules if name.startswith("diffusers_modules")}  # earlier tests' remote code
    pipe = DDPMImg2ImgPipeline.from_pretrained(tmp_path)
    assert type(pipe.scheduler) is DDPMScheduler and pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.id2label == NAMES and pipe.get_label_ids("dog") == [1]
    assert {name for name in sys.modules if name.startswith("diffusers_modules")} == loaded_before
    pipe.set_progress_bar_config(disable=True)
    out = pipe(images(), strength=0.5, num_inference_steps=4, class_labels="emu", output_type="pt").images
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("make, kwargs, message", [
    (pipeline, {"class_labels": "3"}, r"class_labels: this model has no classes \(its unet has no class embeddings"),
    (pipeline, {"guidance_scale": 2.0}, "guidance_scale=2.0 needs class_labels"),
    (class_pipeline, {"class_labels": ["dog", "zebra"]}, "class label 'zebra' is not a label of this model"),
    (class_pipeline, {"class_labels": [True]}, "class label True is neither a class id"),
    (class_pipeline, {"class_labels": 1, "guidance_scale": float("nan")}, "guidance_scale must be a number >= 0"),
])
def test_bad_class_labels_are_one_line_errors(make, kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        make()(images(), strength=0.0, num_inference_steps=4, **kwargs)  # checked even where no step runs
    assert "\n" not in str(error.value)
