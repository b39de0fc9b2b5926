"""Inpainting with any DDPM folder: RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
Probabilistic Models") on our scheduler's forward process and reverse step, for every prediction type and variance
type.

Each denoising step keeps what is known and samples what is not (RePaint eq. 8, Algorithm 1 lines 4-8):

    x_{t-1}^known   ~ q(x_{t-1}|x_0) = N(sqrt(abar_{t-1}) x_0, (1-abar_{t-1}) I)     (note 001 特性2)
    x_{t-1}^unknown ~ p_theta(x_{t-1}|x_t)                                          (note 001 逆向过程; `step`)
    x_{t-1}         = m * x_{t-1}^known + (1-m) * x_{t-1}^unknown                    (m = 1: a known pixel)

and resampling goes back up with the forward process (RePaint sec. 4.2, Algorithm 1 line 10),

    x_t ~ q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I)                       (note 000 二、1; note 001 前向过程)

`jump_length` levels at a time, `jump_n_sample - 1` times at every `jump_length`-th level (the schedule of the
authors' code and of diffusers' RePaintScheduler). At the last step x_0^known = x_0, so the known pixels come back
exactly; the pipeline pastes them in once more at the end, so that holds whatever the reverse step returns.

Why ours: diffusers' RePaintPipeline is deprecated (diffusers PR 6169), and its RePaintScheduler reads every model
output as epsilon (wrong for v-prediction and sample models), ignores learned variances, and steps back up with the
betas of the wrong timesteps when a step skips timesteps (its `undo_step` takes beta[t_last .. t_last+k-1] for the
k = T / num_inference_steps forward steps from x_{t_last-k} to x_{t_last}; right only for k = 1). Here the unknown
region takes our scheduler's `step`, so it is p_theta for the model's own prediction_type and variance_type, and the
jumps take the scheduler's forward steps `add_noise_step` over exactly the timesteps between two scheduled ones.

Two equations of the paper's Algorithm 1 are not copied: line 5 scales the noise by the variance 1 - abar_t (the
standard deviation is its square root), and its q(x^known) has abar_t where x_{t-1}'s marginal has abar_{t-1}
(eq. 8a; diffusers' RePaintScheduler also uses abar_{t-1}).
"""

from __future__ import annotations

import itertools
import numbers

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..errors import InputError
from ..scheduling_ddpm import DDPMScheduler
from .components import EditingPipeline
from .image_inputs import ImageInput, check_output_type, model_image_shape, prepare_image, prepare_mask, to_output


def repaint_levels(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's resampling schedule (sec. 4.2) as the path of levels the sample visits.

    Level l >= 0 is x at the l-th scheduled timestep counted from the clean end (the scheduler's
    timesteps[num_steps - 1 - l]); level -1 is x_0. The path starts at num_steps - 1 (x_T ~ N(0, I)) and ends at -1;
    each move is one level down (a denoising step: one network evaluation) or one level up (a forward step). After
    the step down from each level l = 0, j, 2j, ... below num_steps - j (j = jump_length) the path goes j levels back
    up, jump_n_sample - 1 times per such level. This is diffusers' RePaintScheduler.set_timesteps list (after its
    step down from list entry e the sample is at level e - 1): tests/test_inpaint.py compares the two.
    """
    jumps = {level: jump_n_sample - 1 for level in range(0, num_steps - jump_length, jump_length)}
    path = [num_steps - 1]
    level = num_steps
    while level >= 1:
        level -= 1
        path.append(level - 1)  # denoise from `level` to level - 1
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                path.append(level - 1)  # forward, back to level - 1
    return path


def network_evaluations(num_steps: int, jump_length: int, jump_n_sample: int) -> int:
    """How many times RePaint runs the network per image: the steps down in `repaint_levels`."""
    path = repaint_levels(num_steps, jump_length, jump_n_sample)
    return sum(b < a for a, b in itertools.pairwise(path))


def _as_timesteps(timesteps: int | torch.Tensor, batch: int) -> torch.Tensor:
    t = torch.as_tensor(timesteps).reshape(-1).long()
    return t.expand(batch) if t.numel() == 1 else t


def forward_jump(scheduler: DDPMScheduler, sample: torch.Tensor, from_timesteps: int | torch.Tensor,
                 to_timesteps: int | torch.Tensor,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t|x_s) forward from timestep s to t > s (s = -1: from x_0) by the forward steps s+1, ..., t,
    each the scheduler's `add_noise_step`: x_k = sqrt(1-beta_k) x_{k-1} + sqrt(beta_k) z_k, q(x_k|x_{k-1}) of note 000
    (二、1、扩散过程) and note 002 (3), RePaint's Algorithm 1 line 10. Together they draw from
    N(sqrt(abar_t/abar_s) x_s, (1 - abar_t/abar_s) I) (note 001 特性2, there from x_0).

    Args:
        sample: x_s, [N x C x H x W].
        from_timesteps, to_timesteps: s and t, ints or (N,) tensors (per-sample timesteps), -1 <= s < t < T.
        generator: draws z_k, one [N x C x H x W] draw per timestep k from min(s)+1 to max(t); a sample takes the
            steps in its own (s, t] and keeps its value through the others.
    Returns: x_t, [N x C x H x W], the sample's dtype.
    """
    batch = sample.shape[0]
    s, t = _as_timesteps(from_timesteps, batch), _as_timesteps(to_timesteps, batch)
    T = scheduler.config.num_train_timesteps
    if bool((s >= t).any()) or int(s.min()) < -1 or int(t.max()) >= T:
        raise ValueError(f"forward_jump goes from s to t with -1 <= s < t < {T}, got s={s.tolist()}, t={t.tolist()}")
    s, t = s.to(sample.device), t.to(sample.device)
    x = sample
    for k in range(int(s.min()) + 1, int(t.max()) + 1):
        z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        stepped = scheduler.add_noise_step(x, z, torch.full_like(t, k))
        x = torch.where(((s < k) & (k <= t)).reshape(-1, *([1] * (sample.ndim - 1))), stepped, x)
    return x


def known_region(scheduler: DDPMScheduler, image: torch.Tensor, timesteps: int | torch.Tensor,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """x_t^known ~ q(x_t|x_0) = N(sqrt(abar_t) x_0, (1-abar_t) I) (RePaint eq. 8a; note 001 特性2, our `add_noise`),
    and x_0 itself where t = -1 (the step to x_0). image: x_0 [N x C x H x W]; timesteps: an int or (N,) tensor.
    No noise is drawn when every t is -1."""
    t = _as_timesteps(timesteps, image.shape[0]).to(image.device)
    if bool((t < 0).all()):
        return image
    noise = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    noisy = scheduler.add_noise(image, noise, t.clamp(min=0))
    return torch.where((t >= 0).reshape(-1, *([1] * (image.ndim - 1))), noisy, image)


def repaint_step(scheduler: DDPMScheduler, model_output: torch.Tensor, timestep: int | torch.Tensor,
                 sample: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """One RePaint denoising step from x_t (RePaint eq. 8; Algorithm 1 lines 4-8):
    x_{t-1} = m * x_{t-1}^known + (1-m) * x_{t-1}^unknown, the known part from q(x_{t-1}|x_0) (`known_region`), the
    unknown from the model's p_theta(x_{t-1}|x_t) (`scheduler.step`: every prediction_type and variance_type).

    Args:
        model_output: the network's output at (x_t, t), [N x C x H x W] ([N x 2C x H x W] for learned variances).
        timestep: t, an int or an (N,) tensor of per-sample timesteps, each one of scheduler.timesteps.
        sample: x_t [N x C x H x W]; image: x_0 [N x C x H x W]; mask: bool, broadcastable to [N x C x H x W],
            True where the pixel is known.
    Returns: x_{t-1} [N x C x H x W]. The two noises are drawn one after the other from `generator` (step's first).
    """
    unknown = scheduler.step(model_output, timestep, sample, generator=generator).prev_sample
    prev = scheduler.previous_timestep(timestep)
    known = known_region(scheduler, image, prev, generator)
    return torch.where(mask, known, unknown)


class DDPMInpaintPipeline(EditingPipeline):
    """RePaint inpainting with any DDPMPipeline folder: `DDPMInpaintPipeline.from_pretrained(folder)`.

    A drop-in for diffusers' deprecated RePaintPipeline (same arguments in the same order, same mask convention:
    1 keeps a pixel, 0 is filled in), for every prediction_type ("epsilon", "sample", "v_prediction") and
    variance_type (learned ones included) of the model's own scheduler config. A class-conditional folder
    (ClassConditionalDDPMPipeline's) loads too and fills in toward `class_labels` with classifier-free guidance.

    Components (`EditingPipeline`): unet (a UNet2DModel), scheduler (a DDPM scheduler config: ours, or diffusers'
    DDPMScheduler, read into ours; its config is the model's, never re-typed), id2label (a class-conditional
    model's class names).
    """

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 250,
        eta: float | None = None,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Fill in the masked pixels of `image`.

        Args:
            image: the images to inpaint (see `ddpm_hub.pipelines.image_inputs`): PIL image(s), or [N x C x H x W]
                floats in [-1, 1] (and the other layouts `ddpm_hub.pixels.to_nchw` reads), of the model's size and
                channels.
            mask_image: 1 (True, 255) keeps a pixel, 0 fills it in; binary, the image's size; one per image or one
                for all.
            num_inference_steps: the scheduled timesteps (the model's timestep_spacing), 1..T.
            eta: diffusers' DDIM weight; only None or 1.0 (DDPM, as in the RePaint paper): the unknown region is
                always drawn from the model's own p_theta(x_{t-1}|x_t), with its variance_type.
            jump_length: levels gone back up per resampling (j in the paper, sec. 4.2).
            jump_n_sample: how many times each jump point is passed (r, resamplings; 1: no resampling).
            generator: torch generator(s) for the noise.
            output_type: "pil", "np" ([N x H x W x C] in [0, 1]) or "pt" ([N x C x H x W] in [0, 1]).
            return_dict: an ImagePipelineOutput, else a tuple.
            class_labels: for a class-conditional model, the class to fill in toward: ids or names
                (`pipe.id2label`), one per image or one for all (ClassConditionalDDPMPipeline's spellings); None:
                its "no class" id (unconditional). An error for an unconditional model.
            guidance_scale: classifier-free guidance scale s >= 0 with class_labels (None:
                ClassConditionalDDPMPipeline's DEFAULT_GUIDANCE_SCALE; 1: the conditional model alone).
        """
        check_output_type(output_type)
        if eta is not None and eta != 1.0:
            raise InputError(f"eta={eta} is not supported: DDPMInpaintPipeline draws the unknown region from the "
                             "model's own DDPM reverse step (eta=1 in diffusers' RePaintScheduler, as in the RePaint "
                             "paper); drop eta")
        n = check_repaint_steps(self.scheduler, num_inference_steps, jump_length, jump_n_sample)
        device, dtype = self._execution_device, self.unet.dtype
        original = prepare_image(image, model_image_shape(self.unet)).to(device, dtype)
        mask = prepare_mask(mask_image, original).to(device)
        if isinstance(generator, list) and len(generator) != original.shape[0]:
            raise InputError(f"{len(generator)} generators for {original.shape[0]} images: give one per image")
        predict = self.model_output(class_labels, guidance_scale, original.shape[0])  # (x_t, t) -> model output

        self.scheduler.set_timesteps(n, device=device)
        timesteps = self.scheduler.timesteps.tolist()
        timestep_at = lambda level: timesteps[n - 1 - level] if level >= 0 else -1
        path = repaint_levels(n, jump_length, jump_n_sample)

        x = randn_tensor(original.shape, generator=generator, device=device, dtype=dtype)  # x_T ~ N(0, I)
        for a, b in self.progress_bar(list(itertools.pairwise(path))):
            s, t = timestep_at(a), timestep_at(b)
            if b < a:  # down: x_s -> x_t, t the next scheduled timestep (-1: x_0)
                x = repaint_step(self.scheduler, predict(x, s), s, x, original, mask, generator)
            else:  # back up: x_s -> x_t ~ q(x_t|x_s)
                x = forward_jump(self.scheduler, x, s, t, generator)
        x = torch.where(mask, original, x)  # the known pixels, exactly (the last step already gave them)

        images = to_output(x, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def check_repaint_steps(scheduler: DDPMScheduler, num_inference_steps: int, jump_length: int,
                        jump_n_sample: int) -> int:
    """num_inference_steps as an int in [1, T]; jump_length and jump_n_sample integers >= 1 (InputError otherwise)."""
    T = scheduler.config.num_train_timesteps
    for name, value, low, high in (("num_inference_steps", num_inference_steps, 1, T),
                                   ("jump_length", jump_length, 1, None), ("jump_n_sample", jump_n_sample, 1, None)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high and value > high):
            allowed = f"between {low} and {high} (the model's T)" if high else f">= {low}"
            raise InputError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(num_inference_steps)
