"""Image-to-image with any DDPM folder: SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with
Stochastic Differential Equations", Algorithm 1), for every prediction type and variance type and any sampler.

Noise the input x_0 part of the way, to the scheduled timestep t_0 that `strength` of the sampling steps start
from, with the forward process's closed form (note 001 特性2; our `add_noise`):

    x_{t_0} = sqrt(abar_{t_0}) x_0 + sqrt(1 - abar_{t_0}) z,        z ~ N(0, I)

then run the sampler's remaining steps t_0 > ... > 0 back to an image. How many steps that is follows diffusers'
img2img pipelines: int(num_inference_steps * strength), the last ones of the sampler's schedule. strength=0 returns
the input; strength=1 starts at the first scheduled timestep, as sampling does, and the input enters only through
sqrt(abar_{t_0}) x_0 (for the default cosine schedule with trailing spacing t_0 = T-1 and sqrt(abar_{T-1}) is about
5e-5, so the result is a fresh sample).

Why ours: diffusers has image-to-image only for latent models (StableDiffusionImg2ImgPipeline and its relatives);
nothing takes a pixel-space UNet2DModel.
"""

from __future__ import annotations

import numbers

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..errors import InputError
from ..sampling import SAMPLERS, check_sampler_steps, sampling_pipeline
from .components import EditingPipeline
from .image_inputs import ImageInput, check_output_type, model_image_shape, prepare_image, to_output


def sdedit_start(num_inference_steps: int, strength: float) -> int:
    """Index into the sampler's timesteps where SDEdit starts: num_inference_steps - int(num_inference_steps *
    strength), as diffusers' img2img pipelines count (num_inference_steps when strength is 0: no steps)."""
    return num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)


class DDPMImg2ImgPipeline(EditingPipeline):
    """SDEdit image-to-image with any DDPMPipeline folder: `DDPMImg2ImgPipeline.from_pretrained(folder)`; a
    class-conditional folder (ClassConditionalDDPMPipeline's) loads too and edits toward `class_labels` with
    classifier-free guidance.

    Components (`EditingPipeline`): unet (a UNet2DModel), scheduler (the model's DDPM scheduler config: ours, or
    diffusers' DDPMScheduler, read into ours), id2label (a class-conditional model's class names). The sampler that
    denoises is chosen per call ("ddpm", "ddim", "dpm"), built from that config by
    `ddpm_hub.sampling.sampler_scheduler`, as sampling builds it.
    """

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        strength: float = 0.8,
        num_inference_steps: int = 1000,
        sampler: str = "ddpm",
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Noise `image` to `strength` of the way and denoise it back.

        Args:
            image: PIL image(s), or [N x C x H x W] floats in [-1, 1] (and the other layouts
                `ddpm_hub.pixels.to_nchw` reads), of the model's size and channels.
            strength: in [0, 1]: how far into the noise the edit starts (0: the input itself; 1: from the noisiest
                scheduled timestep).
            num_inference_steps: the sampler's schedule; int(num_inference_steps * strength) of its steps are run.
            sampler: "ddpm" (our DDPMScheduler, the model's variance), "ddim" (eta 0) or "dpm" (DPM-Solver++ 2M).
            generator: torch generator(s) for the noise (z first, then the sampler's).
            output_type: "pil", "np" ([N x H x W x C] in [0, 1]) or "pt" ([N x C x H x W] in [0, 1]).
            return_dict: an ImagePipelineOutput, else a tuple.
            class_labels: for a class-conditional model, the class to edit toward: ids or names (`pipe.id2label`),
                one per image or one for all (ClassConditionalDDPMPipeline's spellings); None: its "no class" id
                (unconditional). An error for an unconditional model.
            guidance_scale: classifier-free guidance scale s >= 0 with class_labels (None:
                ClassConditionalDDPMPipeline's DEFAULT_GUIDANCE_SCALE; 1: the conditional model alone).
        """
        check_output_type(output_type)
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
            raise InputError(f"strength must be a number in [0, 1], got {strength!r}")
        if sampler not in SAMPLERS:
            raise InputError(f"sampler {sampler!r} is not supported; choose one of {', '.join(SAMPLERS)}")
        T = self.scheduler.config.num_train_timesteps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral) or \
                not 1 <= num_inference_steps <= T:
            raise InputError(f"num_inference_steps must be an integer between 1 and {T} (the model's T), "
                             f"got {num_inference_steps!r}")
        device, dtype = self._execution_device, self.unet.dtype
        x0 = prepare_image(image, model_image_shape(self.unet)).to(device, dtype)
        if isinstance(generator, list) and len(generator) != x0.shape[0]:
            raise InputError(f"{len(generator)} generators for {x0.shape[0]} images: give one per image")

        # the sampler built from the model's config, and the network as that sampler sees it (MeanOnly for ODEs)
        denoiser = sampling_pipeline(self.unet, self.scheduler.config, sampler)
        scheduler = denoiser.scheduler
        # (x_t, t) -> the model output that sampler takes: guided for class labels, over the network it sees
        predict = self.model_output(class_labels, guidance_scale, x0.shape[0], unet=denoiser.unet)
        check_sampler_steps(scheduler, int(num_inference_steps))
        scheduler.set_timesteps(int(num_inference_steps), device=device)
        start = sdedit_start(int(num_inference_steps), float(strength)) * scheduler.order
        timesteps = scheduler.timesteps[start:]
        x = x0
        if len(timesteps):
            z = randn_tensor(x0.shape, generator=generator, device=device, dtype=dtype)
            # x_{t_0} ~ q(x_{t_0}|x_0) = N(sqrt(abar_{t_0}) x_0, (1-abar_{t_0}) I) (note 001 特性2)
            x = self.scheduler.add_noise(x0, z, timesteps[:1].repeat(x0.shape[0]))
            for t in self.progress_bar(timesteps):
                x = scheduler.step(predict(x, t), t, x, generator=generator).prev_sample

        images = to_output(x, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
