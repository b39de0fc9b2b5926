"""ddpm_hub.DDPMInpaintPipeline: RePaint on our scheduler, against diffusers' deprecated RePaintPipeline, the
forward process's closed form, and an analytic model whose exact denoiser is known."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from conftest import tiny_unet
from ddpm_hub import DDPMInpaintPipeline, DDPMScheduler
from ddpm_hub.errors import InputError
from ddpm_hub.pipelines.inpaint import forward_jump, network_evaluations, repaint_levels, repaint_step
from ddpm_hub.pipelines.class_conditional import DEFAULT_GUIDANCE_SCALE  # noqa: E402

PREDICTIONS = ("epsilon", "sample", "v_prediction")
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")


def pipeline(unet=None, **config) -> DDPMInpaintPipeline:
    config = {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2", **config}
    learned = config.get("variance_type") in ("learned", "learned_range")
    pipe = DDPMInpaintPipeline(unet=unet or tiny_unet(1, out_channels=2 if learned else 1),
                               scheduler=DDPMScheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digits_and_mask(batch: int = 2, seed: int = 0):
    """Random [-1, 1] images [B x 1 x 8 x 8] and a random binary mask [B x 1 x 8 x 8]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 8, 8, generator=g) * 2 - 1, torch.rand(batch, 1, 8, 8, generator=g) > 0.5


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(250, 10, 10), (50, 5, 5), (20, 3, 2), (10, 10, 3),
                                                               (7, 2, 1), (5, 1, 4)])
def test_the_resampling_schedule_is_diffusers(steps, jump_length, jump_n_sample):
    """repaint_levels is RePaintScheduler.set_timesteps' list, read as levels: after the step down from entry e the
    sample is at level e - 1 (the schedule of the RePaint authors' code, which diffusers copied)."""
    from diffusers import RePaintScheduler

    theirs = RePaintScheduler(num_train_timesteps=1000)
    theirs.set_timesteps(steps, jump_length, jump_n_sample)
    entries = (theirs.timesteps // (1000 // steps)).tolist()
    path = repaint_levels(steps, jump_length, jump_n_sample)
    assert path == [steps - 1] + [e - 1 for e in entries]
    assert path[-1] == -1 and all(abs(b - a) == 1 for a, b in itertools.pairwise(path))
    assert network_evaluations(steps, jump_length, jump_n_sample) == sum(
        1 for previous, e in zip([steps] + entries, entries) if e < previous)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("variance_type", VARIANCES)
def test_known_pixels_come_back_exactly(prediction_type, variance_type):
    """Every prediction and variance type, a schedule that skips timesteps, with resampling: the known pixels of the
    result are the input's bits (after the pipeline's own x / 2 + 0.5 conversion), the others are filled in. (For
    "learned" the random network's raw output is read as a variance, negative in places: NaN fills the unknown
    pixels, as it would in DDPMPipeline's samples, and still does not touch the known ones.)"""
    pipe = pipeline(prediction_type=prediction_type, variance_type=variance_type)
    image, mask = digits_and_mask()
    out = pipe(image, mask, num_inference_steps=10, jump_length=2, jump_n_sample=2,
               generator=torch.Generator().manual_seed(0), output_type="pt").images
    expected = (image / 2 + 0.5).clamp(0, 1)
    assert torch.equal(out[mask], expected[mask])
    assert not torch.equal(out[~mask], expected[~mask])
    assert torch.isfinite(out).all() or variance_type == "learned"


def test_an_all_ones_mask_returns_the_input():
    image, _ = digits_and_mask(3)
    for output_type in ("pt", "np"):
        out = pipeline(prediction_type="v_prediction")(image, torch.ones(1, 1, 8, 8), num_inference_steps=5,
                                                        jump_length=2, jump_n_sample=2, output_type=output_type).images
        expected = (image / 2 + 0.5).clamp(0, 1)
        assert np.array_equal(np.asarray(out), expected.numpy() if output_type == "pt" else
                              expected.permute(0, 2, 3, 1).numpy())


def _noise_tapes(pipe: DDPMInpaintPipeline, steps: int, jump_length: int, jump_n_sample: int, shape, seed: int = 1):
    """The same noise for both pipelines: one draw per move of the schedule (and x_T), handed to each in the order
    it draws. diffusers draws once per move and uses that draw for both the known and the unknown pixels (its
    "Noise is being reused"); ours draws for each separately, as the paper's Algorithm 1 (lines 4 and 6), except at
    the last timestep, where neither is needed. The known and unknown pixels are disjoint, so one draw serves both
    without changing the distribution. (A step back up that crosses k timesteps takes k draws in both; the tapes
    are written for schedules where k = 1 or there are no steps back up.)"""
    g = torch.Generator().manual_seed(seed)
    path = repaint_levels(steps, jump_length, jump_n_sample)
    draws = [torch.randn(shape, generator=g) for _ in path]
    pipe.scheduler.set_timesteps(steps)
    timesteps = pipe.scheduler.timesteps.tolist()
    ours = [draws[0]]
    for k, (a, b) in enumerate(itertools.pairwise(path), start=1):
        if b > a:  # a step back up, across one timestep
            assert timesteps[steps - 1 - b] - (timesteps[steps - 1 - a] if a >= 0 else -1) == 1
            ours.append(draws[k])
        elif timesteps[steps - 1 - a] != timesteps[-1]:
            ours += [draws[k], draws[k]]  # the reverse step's noise, then the known pixels'
    return ours, draws


def _run_on_tape(pipe, tape, monkeypatch, *args, **kwargs):
    queue = list(tape)
    monkeypatch.setattr(torch, "randn", lambda *shape, **_: queue.pop(0).clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers' deprecation of its preprocessing
        images = pipe(*args, **kwargs).images
    monkeypatch.undo()
    assert not queue, f"{len(queue)} noise draws left over"
    return torch.as_tensor(np.asarray(images)).reshape(-1, 8, 8, 1)


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(10, 3, 1), (20, 3, 3)])
def test_epsilon_model_agrees_with_diffusers_repaint_given_the_same_noise(steps, jump_length, jump_n_sample,
                                                                          monkeypatch):
    """An epsilon model, diffusers' RePaintPipeline at eta=1 (DDPM; its default eta=0 is DDIM): the same result to
    float32 round-off. Without resampling on a schedule that skips timesteps (10 of 20), and with resampling where
    each step is one timestep (diffusers' undo_step steps back up with the wrong betas when a step skips timesteps,
    test_diffusers_steps_back_up_with_the_wrong_betas_when_steps_skip).

    Not bit-equal: diffusers writes the reverse step in DDIM's form sqrt(abar_prev) x_0 + sqrt(1 - abar_prev -
    sigma^2) eps + sigma z, ours (and DDPMScheduler's) as the posterior coef_x0 x_0 + coef_xt x_t (note 001, 逆向过程):
    equal in exact arithmetic. With clip_sample=True they differ wherever the clip changes x_0: DDIM's form keeps the
    model's eps, the posterior does not (test_clipping_is_where_diffusers_repaint_and_ours_part)."""
    from diffusers import RePaintPipeline, RePaintScheduler

    config = {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}
    ours = pipeline(**config)
    theirs = RePaintPipeline(unet=ours.unet, scheduler=RePaintScheduler(**config))
    theirs.set_progress_bar_config(disable=True)
    image, mask = digits_and_mask()
    our_tape, their_tape = _noise_tapes(ours, steps, jump_length, jump_n_sample, image.shape)
    args = {"num_inference_steps": steps, "jump_length": jump_length, "jump_n_sample": jump_n_sample,
            "output_type": "np"}
    a = _run_on_tape(ours, our_tape, monkeypatch, image, mask, **args)
    b = _run_on_tape(theirs, their_tape, monkeypatch, image, mask.float(), eta=1.0, **args)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)


def test_clipping_is_where_diffusers_repaint_and_ours_part(monkeypatch):
    """The one exact difference: with clip_sample=True a clipped x_0 estimate enters diffusers' DDIM-form step next
    to the model's unclipped eps. Clip x_0 in neither and the two agree; a model whose x_0 estimates leave [-1, 1]
    makes them part (as DDPMPipeline and RePaint part there)."""
    from diffusers import RePaintPipeline, RePaintScheduler

    image, mask = digits_and_mask()
    results = {}
    for clip in (False, True):
        config = {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2", "clip_sample": clip}
        ours = pipeline(**config)
        theirs = RePaintPipeline(unet=ours.unet, scheduler=RePaintScheduler(**config))
        theirs.set_progress_bar_config(disable=True)
        our_tape, their_tape = _noise_tapes(ours, 10, 3, 1, image.shape)
        args = {"num_inference_steps": 10, "jump_length": 3, "jump_n_sample": 1, "output_type": "np"}
        a = _run_on_tape(ours, our_tape, monkeypatch, image, mask, **args)
        b = _run_on_tape(theirs, their_tape, monkeypatch, image, mask.float(), eta=1.0, **args)
        results[clip] = (a - b).abs().max()
    assert results[False] < 2e-6 and results[True] > 0.1


def _mean_coefficient(scheduler, s, t, shape=(1, 1)):
    """forward_jump's coefficient on x_s: the output is x_s times it plus noise, so two runs on the same noise
    from ones and from zeros differ by it."""
    run = lambda x: forward_jump(scheduler, x, s, t, torch.Generator().manual_seed(0))  # noqa: E731
    return run(torch.ones(shape)) - run(torch.zeros(shape))


def test_diffusers_steps_back_up_with_the_wrong_betas_when_steps_skip():
    """Going back up from x_{t-k} to x_t takes q(x_t|x_{t-k}), mean coefficient sqrt(abar_t / abar_{t-k}) = prod
    sqrt(1 - beta_i) over i = t-k+1..t. diffusers' undo_step(x, t) multiplies by sqrt(1 - beta_i) over i = t..t+k-1
    (here k = 4: timesteps 8..11 instead of 5..8); ours by the right product (float64 from the betas)."""
    from diffusers import RePaintScheduler

    theirs = RePaintScheduler(num_train_timesteps=20)
    theirs.set_timesteps(5, jump_length=1, jump_n_sample=2)  # k = 20 / 5 = 4 timesteps per step
    betas = theirs.betas.double()
    right = float(torch.prod((1 - betas[5:9]).sqrt()))  # x_4 -> x_8
    wrong = float(torch.prod((1 - betas[8:12]).sqrt()))
    diffusers_coef = float(theirs.undo_step(torch.ones(1), 8, generator=torch.Generator().manual_seed(0)) -
                           theirs.undo_step(torch.zeros(1), 8, generator=torch.Generator().manual_seed(0)))
    ours = float(_mean_coefficient(DDPMScheduler(num_train_timesteps=20), 4, 8))
    assert diffusers_coef == pytest.approx(wrong, abs=1e-6) and abs(diffusers_coef - right) > 1e-3
    assert ours == pytest.approx(right, abs=1e-6)


def test_forward_jump_draws_from_the_closed_form_with_per_sample_timesteps():
    """x_t ~ N(sqrt(abar_t/abar_s) x_s, (1 - abar_t/abar_s) I), the products of alpha_i = 1 - beta_i over s < i <= t
    computed here in float64 from the betas (s = -1 starts from x_0: the whole product abar_t): the mean coefficient
    exactly, the variance over 40,000 draws per image (standard error 0.7%)."""
    scheduler = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    alphas = 1 - scheduler.betas.double()
    s, t = torch.tensor([-1, 0, 10, 48]), torch.tensor([0, 1, 30, 49])
    ratio = torch.stack([torch.prod(alphas[a + 1:b + 1]) for a, b in zip(s.tolist(), t.tolist())])
    coefficient = _mean_coefficient(scheduler, s, t, shape=(4, 1, 1, 1)).flatten().double()
    torch.testing.assert_close(coefficient, ratio.sqrt(), rtol=0, atol=1e-6)
    draws = forward_jump(scheduler, torch.zeros(4, 1, 200, 200), s, t, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.double().var(dim=(1, 2, 3)), 1 - ratio, rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="forward_jump goes from s to t"):
        forward_jump(scheduler, draws, t, s)


def test_a_repaint_step_takes_per_sample_timesteps():
    """A batch whose images sit at different timesteps steps as each image does alone (one generator per image)."""
    pipe = pipeline(prediction_type="v_prediction", variance_type="learned_range")
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[[2, 6]]
    x, image, mask = torch.randn(2, 1, 8, 8), *digits_and_mask()
    with torch.no_grad():
        output = torch.cat([pipe.unet(x[i:i + 1], t[i]).sample for i in range(2)])
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]
    batched = repaint_step(pipe.scheduler, output, t, x, image, mask, gens())
    alone = torch.cat([repaint_step(pipe.scheduler, output[i:i + 1], int(t[i]), x[i:i + 1], image[i:i + 1],
                                    mask[i:i + 1], gens()[i]) for i in range(2)])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)


class TwoPointDenoiser(ModelMixin, ConfigMixin):
    """The exact denoiser for data x_0 = s u, s = +1 or -1 with equal probability: E[x_0|x_t] = u tanh(sqrt(abar_t)
    <u, x_t> / (1 - abar_t)), given as the prediction the scheduler expects (eps, x_0 or v), plus a variance output
    for the learned types (learned: the posterior variance tilde-beta_t; learned_range: v = 0)."""

    @register_to_config
    def __init__(self, alphas_cumprod: list, prediction_type: str, variance_type: str, in_channels: int = 1,
                 sample_size: int = 4, level: float = 0.8):
        super().__init__()
        self.register_buffer("abar", torch.tensor(alphas_cumprod, dtype=torch.float64))

    def forward(self, sample, timestep, **_):
        abar = self.abar[int(timestep)]
        prev = self.abar[int(timestep) - 1] if int(timestep) > 0 else torch.tensor(1.0, dtype=torch.float64)
        x = sample.double()
        u = torch.full_like(x[:1], self.config.level)
        x0 = u * torch.tanh(abar.sqrt() * (x * u).sum(dim=(1, 2, 3), keepdim=True) / (1 - abar))
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}
        out = out[self.config.prediction_type]
        if self.config.variance_type == "learned":
            out = torch.cat([out, torch.full_like(out, float((1 - prev) / (1 - abar) * (1 - abar / prev)))], 1)
        elif self.config.variance_type == "learned_range":
            out = torch.cat([out, torch.zeros_like(out)], 1)
        return UNet2DOutput(sample=out.float())


def two_point_pipeline(prediction_type: str, variance_type: str) -> DDPMInpaintPipeline:
    scheduler = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2",
                              prediction_type=prediction_type, variance_type=variance_type)
    model = TwoPointDenoiser(scheduler.alphas_cumprod.tolist(), prediction_type, variance_type)
    pipe = DDPMInpaintPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("variance_type", VARIANCES)
def test_inpainting_with_the_exact_denoiser_recovers_the_data(prediction_type, variance_type):
    """Data: the image +0.8 everywhere or -0.8 everywhere. Keep the top half of a +0.8 image: every inpainted bottom
    half must come out +0.8 (with an empty mask the same sampler gives both signs, so the known half decides)."""
    pipe = two_point_pipeline(prediction_type, variance_type)
    image = torch.full((16, 1, 4, 4), 0.8)
    image[:, :, 2:] = -0.8  # the pixels to fill in hold the wrong answer: it must not leak through
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    args = {"num_inference_steps": 50, "jump_length": 5, "jump_n_sample": 2, "output_type": "pt"}
    out = pipe(image, mask, generator=torch.Generator().manual_seed(0), **args).images * 2 - 1
    torch.testing.assert_close(out[:, :, 2:], torch.full_like(out[:, :, 2:], 0.8), rtol=0, atol=0.05)
    free = pipe(image, torch.zeros(1, 1, 4, 4), generator=torch.Generator().manual_seed(0), **args).images * 2 - 1
    signs = free.mean(dim=(1, 2, 3)).sign()
    assert (signs > 0).any() and (signs < 0).any()


def test_diffusers_repaint_reads_a_v_prediction_as_noise():
    """The exact v-prediction denoiser at a middle timestep: diffusers' RePaintScheduler turns its output into an
    x_0 estimate as if it were eps (clipped to +-1 where E[x_0|x_t] is 0.61 here), our scheduler into E[x_0|x_t].
    (On this two-point toy the end result of diffusers' loop still comes out close: as abar_t -> 1, v -> eps;
    benchmarks/inpainting.py measures the damage on digits.)"""
    from diffusers import RePaintScheduler

    ours = two_point_pipeline("v_prediction", "fixed_small")
    theirs = RePaintScheduler.from_config({k: v for k, v in ours.scheduler.config.items()
                                           if k not in ("variance_type", "prediction_type")})
    ours.scheduler.set_timesteps(50)
    theirs.set_timesteps(50, jump_length=1, jump_n_sample=1)
    t = 40
    x = ours.scheduler.add_noise(torch.full((1, 1, 4, 4), 0.8),
                                 torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([t]))
    v = ours.unet(x, t).sample
    exact = ours.unet.__class__(ours.unet.abar.tolist(), "sample", "fixed_small")(x, t).sample  # E[x_0|x_t]
    their_x0 = theirs.step(v, t, x, x, torch.ones_like(x)).pred_original_sample
    our_x0 = ours.scheduler.step(v, t, x).pred_original_sample
    torch.testing.assert_close(our_x0, exact, rtol=0, atol=1e-5)
    assert (their_x0 - exact).abs().mean() > 0.3


def test_loads_a_ddpm_pipeline_folder_with_its_own_scheduler_config(tmp_path):
    """A folder written by train_ddpm.py's exporter (diffusers' classes only, the google/ddpm-* layout) loads; the
    scheduler is ours with the folder's config; a scheduler of another kind passed in is refused."""
    from diffusers import RePaintScheduler

    from ddpm_hub.export import save_pipeline

    save_pipeline(tmp_path, tiny_unet(1), {"num_train_timesteps": 30, "prediction_type": "v_prediction",
                                           "beta_schedule": "squaredcos_cap_v2"})
    pipe = DDPMInpaintPipeline.from_pretrained(tmp_path)
    assert type(pipe.scheduler) is DDPMScheduler
    assert (pipe.scheduler.config.num_train_timesteps, pipe.scheduler.config.prediction_type) == (30, "v_prediction")
    with pytest.raises(InputError, match="needs the model's DDPM scheduler, got RePaintScheduler"):
        DDPMInpaintPipeline.from_pretrained(tmp_path, scheduler=RePaintScheduler())


BAD_CALLS = [
    (lambda img, m: (img[:, :, :4], m), "image is 8x4 .* the model makes 8x8 images"),
    (lambda img, m: (img.repeat(1, 3, 1, 1), m), "image has 3 channels but the model takes 1"),
    (lambda img, m: (img, m[..., :4]), "mask_image is 4x8 .* but image is 8x8"),
    (lambda img, m: (img, m.float() * 0.5), "mask_image must be binary.* holds 0.5, allowed: 0 and 1"),
    (lambda img, m: (img, (m * 128).to(torch.uint8)), "holds 128, allowed: 0 and 255"),
    (lambda img, m: (img, m.repeat(3, 1, 1, 1)[:3]), r"shape \(3, 1, 8, 8\), which does not fit image"),
    (lambda img, m: (img * 3, m), r"must be in \[-1, 1\]"),
]


@pytest.mark.parametrize("make, message", BAD_CALLS)
def test_bad_images_and_masks_are_one_line_errors(make, message):
    image, mask = make(*digits_and_mask())
    with pytest.raises(InputError, match=message) as error:
        pipeline()(image, mask, num_inference_steps=2)
    assert "\n" not in str(error.value)


def test_a_grey_pil_mask_is_an_error_not_a_threshold():
    """diffusers thresholds a PIL mask at 0.5; a grey (anti-aliased) edge is refused here, in one line."""
    from PIL import Image

    image, _ = digits_and_mask(1)
    grey = Image.fromarray(np.full((8, 8), 200, dtype=np.uint8))
    with pytest.raises(InputError, match="holds 200, allowed: 0 and 255"):
        pipeline()(image, grey, num_inference_steps=2)
    rgb = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"3 channels \(PIL mode RGB\) but the model takes 1"):
        pipeline()(rgb, Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)), num_inference_steps=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"eta": 0.0}, "eta=0.0 is not supported"),
    ({"jump_length": 0}, "jump_length must be an integer >= 1, got 0"),
    ({"jump_n_sample": 2.5}, "jump_n_sample must be an integer >= 1, got 2.5"),
    ({"num_inference_steps": 21}, "num_inference_steps must be an integer between 1 and 20"),
    ({"output_type": "latent"}, "output_type 'latent' is not supported"),
    ({"generator": [torch.Generator()]}, "1 generators for 2 images"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    image, mask = digits_and_mask()
    with pytest.raises(InputError, match=message) as error:
        pipeline()(image, mask, **{"num_inference_steps": 2, **kwargs})
    assert "\n" not in str(error.value)


# ---------------------------------------------------- class-conditional models (train_ddpm.py --class_conditional)
NAMES = {0: "cat", 1: "dog", 2: "emu"}  # K = 3 classes; id 3 is "no class"


def class_pipeline(**config) -> DDPMInpaintPipeline:
    """A class-conditional DDPMInpaintPipeline: a tiny UNet with K + 1 = 4 class embeddings, learned_range variance
    (2C outputs, so the variance channels are checked too)."""
    config = {"num_train_timesteps": 20, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
              "variance_type": "learned_range", **config}
    pipe = DDPMInpaintPipeline(unet=tiny_unet(1, out_channels=2, num_class_embeds=4), scheduler=DDPMScheduler(**config),
                               id2label=NAMES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_class_conditional(folder, unet=None):
    """A ClassConditionalDDPMPipeline folder as train_ddpm.py --class_conditional exports it, whose pipeline.py
    raises on import: loading it must run no code from the folder."""
    from ddpm_hub.export import save_class_conditional_pipeline

    save_class_conditional_pipeline(folder, unet or tiny_unet(1, num_class_embeds=4),
                                    dict(DDPMScheduler(num_train_timesteps=20, prediction_type="v_prediction").config),
                                    NAMES)
    (folder / "pipeline.py").write_text("raise RuntimeError('the folder code ran')\n")
    return folder


def test_loads_a_class_conditional_folder_without_running_its_code(tmp_path):
    """Diffusers' loader would import the folder's pipeline.py (and refuse without trust_remote_code); ours loads
    unet/, scheduler/ and id2label through ClassConditionalDDPMPipeline.from_pretrained."""
    import sys

    save_class_conditional(tmp_path)
    loaded_before = {name for name in sys.modules if name.startswith("diffusers_modules")}  # earlier tests' remote code
    pipe = DDPMInpaintPipeline.from_pretrained(tmp_path)
    assert type(pipe.scheduler) is DDPMScheduler and pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.num_class_embeds == 4 and pipe.id2label == NAMES
    assert pipe.get_label_ids(["emu", "cat"]) == [2, 0]
    assert {name for name in sys.modules if name.startswith("diffusers_modules")} == loaded_before


def test_a_hub_repo_takes_the_loader_its_model_index_names(tmp_path, monkeypatch):
    """Through an injected client (huggingface_hub's downloads and diffusers' DiffusionPipeline.download, the network
    boundary): a class-conditional repo is read by its model_index.json and downloaded without its code; a plain one
    still takes diffusers' loader."""
    import huggingface_hub
    from diffusers import DiffusionPipeline

    from ddpm_hub.export import save_pipeline

    folders = {"alice/animals": save_class_conditional(tmp_path / "cc"), "alice/digits": tmp_path / "plain"}
    save_pipeline(folders["alice/digits"], tiny_unet(1), {"num_train_timesteps": 30})
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kwargs: (
        calls.append(("index", repo, kwargs)), str(folders[repo] / name))[1])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kwargs: (
        calls.append(("snapshot", repo, kwargs)), str(folders[repo]))[1])
    monkeypatch.setattr(DiffusionPipeline, "download", classmethod(lambda cls, repo, **kwargs: (
        calls.append(("diffusers", repo, kwargs)), str(folders[repo]))[1]))
    pipe = DDPMInpaintPipeline.from_pretrained("alice/animals", revision="v1")
    assert pipe.id2label == NAMES and [c[:2] for c in calls] == [("index", "alice/animals"),
                                                                 ("snapshot", "alice/animals")]
    assert calls[0][2]["revision"] == calls[1][2]["revision"] == "v1"
    assert "pipeline.py" not in str(calls[1][2]["allow_patterns"])
    calls.clear()
    pipe = DDPMInpaintPipeline.from_pretrained("alice/digits")
    assert pipe.id2label == {} and pipe.scheduler.config.num_train_timesteps == 30
    assert [c[:2] for c in calls] == [("index", "alice/digits"), ("diffusers", "alice/digits")]


def record_steps(pipe, monkeypatch) -> list:
    """Every (model_output, t, x_t) the pipeline's scheduler.step receives, in order."""
    calls, step = [], pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda output, t, x, **kwargs: (
        calls.append((output.clone(), t, x.clone())), step(output, t, x, **kwargs))[1])
    return calls


@pytest.mark.parametrize("labels, ids, guidance_scale, s", [
    (None, [3, 3], None, 1.0),  # no labels: the "no class" id, unguided
    ("dog", [1, 1], 1.0, 1.0),  # one label for all, s = 1: the conditional model alone
    (["emu", 0], [2, 0], 3.0, 3.0),  # one per image, names and ids mixed
    ([1, 2], [1, 2], None, DEFAULT_GUIDANCE_SCALE),  # the pipelines' default
])
@torch.no_grad()
def test_each_step_takes_the_guided_output_and_the_known_pixels_stay(labels, ids, guidance_scale, s, monkeypatch):
    """At every network call the scheduler gets eps_u + s (eps_c - eps_u) in the first C channels and the conditional
    pass's variance channels (Ho & Salimans 2022 eq. 6; GLIDE's variance), written here from two direct UNet calls
    with the class ids and the "no class" id 3; the known pixels still come back exactly."""
    pipe = class_pipeline()
    calls = record_steps(pipe, monkeypatch)
    image, mask = digits_and_mask()
    out = pipe(image, mask, num_inference_steps=5, jump_length=2, jump_n_sample=2, class_labels=labels,
               guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert len(calls) == network_evaluations(5, 2, 2)
    largest_gap = 0.0
    for output, t, x in calls:
        conditional = pipe.unet(x, t, class_labels=torch.tensor(ids)).sample
        unconditional = pipe.unet(x, t, class_labels=torch.tensor([3, 3])).sample
        largest_gap = max(largest_gap, float((conditional - unconditional)[:, :1].abs().max()))
        expected = torch.cat([unconditional[:, :1] + s * (conditional[:, :1] - unconditional[:, :1]),
                              conditional[:, 1:]], dim=1)
        # the pipeline runs both classes as one batch of 2B: float32 rounding differs from two B-batches by ~1e-7,
        # times s
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
    if labels is not None:  # the classes differ enough that a wrong s would show beyond the tolerance
        assert largest_gap > 1e-3, largest_gap
    expected_image = (image / 2 + 0.5).clamp(0, 1)
    assert torch.equal(out[mask], expected_image[mask]) and not torch.equal(out[~mask], expected_image[~mask])


def test_labels_steer_the_fill():
    """Same noise, two classes: different fills (the labels reach the network)."""
    pipe = class_pipeline()
    image, mask = digits_and_mask()
    a, b = (pipe(image, mask, num_inference_steps=4, jump_length=2, jump_n_sample=1, class_labels=label,
                 guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
            for label in ("cat", "emu"))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("make, kwargs, message", [
    (pipeline, {"class_labels": 1}, r"class_labels: this model has no classes \(its unet has no class embeddings"),
    (pipeline, {"guidance_scale": 3.0}, "guidance_scale=3.0 needs class_labels"),
    (class_pipeline, {"guidance_scale": 3.0}, "guidance_scale=3.0 needs class_labels"),
    (class_pipeline, {"class_labels": "zebra"}, "class label 'zebra' is not a label of this model; choose one of "
                                                "'cat'"),
    (class_pipeline, {"class_labels": 3}, r"class id 3 is out of range: this model has classes 0..2"),
    (class_pipeline, {"class_labels": [0, 1, 2]}, "class_labels has 3 entries for 2 images"),
    (class_pipeline, {"class_labels": 0, "guidance_scale": -1.0}, "guidance_scale must be a number >= 0"),
])
def test_bad_class_labels_are_one_line_errors(make, kwargs, message):
    image, mask = digits_and_mask()
    with pytest.raises(InputError, match=message) as error:
        make()(image, mask, num_inference_steps=2, **kwargs)
    assert "\n" not in str(error.value)
