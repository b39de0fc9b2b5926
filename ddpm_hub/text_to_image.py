"""The latent, text-conditioned model of Stable Diffusion: its pieces for training, sampling, scoring and export.

Note 001 (001_efb2839ace1b9e21.txt, "Stable Diffusion" / "Speed up - Diffusion on Latent") ends with the model
this module assembles: the DDPM of the notes run on the latents z = E(x) of an autoencoder (note 003's VAE,
`ddpm_hub.vae`), its U-Net conditioned on text through cross-attention (the "unet-with-text" figure) on the
states of a text encoder (`ddpm_hub.text_encoder`). The training objective is the notes' L_simple on latents,

    E || z - z_theta(sqrt(abar_t) z_0 + sqrt(1-abar_t) z, t, tau(y)) ||^2,   z_0 = scaling_factor * (mu + sigma eps),

where tau(y) are the text states of caption y and z_0 a sample of the VAE posterior q(z|x) (note 003 (2.8))
scaled to unit variance (`ddpm_hub.vae.latent_scaling_factor`). It is `ddpm_hub.training.diffusion_loss` itself,
with the text states passed to the U-Net, so every loss option of the pixel-space model applies unchanged.

Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Algorithm 1) trains the same
network unconditionally on a share of the batch by replacing the caption with the empty prompt "" (`drop_captions`);
sampling then follows eps_uncond + w (eps_cond - eps_uncond) with guidance scale w, which is what
`StableDiffusionPipeline` computes for guidance_scale > 1.

Everything is stored in the stock formats: `save_text_to_image_pipeline` writes a `StableDiffusionPipeline` folder
(vae/, text_encoder/, tokenizer/, unet/, scheduler/, model_index.json) that loads without ddpm_hub.

Shapes: images [N x C x H x W] in [-1, 1]; latents [N x c x H/f x W/f] (c the VAE's latent_channels, f its
down-sampling factor); text states [N x L x D] (L the tokenizer's model_max_length, D the text encoder's
hidden_size, which is the U-Net's cross_attention_dim).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data.shapes import COLOURS, SHAPES, AdherenceResult, score_prompt_adherence
from .errors import InputError, one_line
from .export import save_pipeline_parts
from .hub import is_repo_id
from .pixels import from_uint8
from .sampling import generate, sampler_scheduler
from .scheduling_ddpm import DDPMScheduler
from .text_encoder import encode_prompts, tokenize_captions
from .training.objectives import LossConfig, diffusion_loss


DEFAULT_VALIDATION_PROMPTS = ("a red circle", "a green square", "a blue triangle", "a yellow circle")
COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
PIPELINE_PARTS = (*COMPONENTS, "model_index.json")
PRETRAINED_FLAG = "--pretrained_model_name_or_path"



# ------------------------------------------------------------------------------------------------ the U-Net
def default_conditional_unet_config(latent_size: int, latent_channels: int = 4,
                                    cross_attention_dim: int = 64) -> dict[str, Any]:
    """A `UNet2DConditionModel` config sized for a 2-core CPU: 1,687,652 parameters for 4 x 8 x 8 latents and
    64-d text states.

    Three levels (32, 64, 64 channels; 8x8 -> 4x4 -> 2x2 for 8x8 latents): a plain ResNet level at full latent
    resolution, then cross-attention to the text at 4x4 and 2x2 and in the middle block, where an image of one
    shape decides what and where. One AdamW step on a batch of 64 takes about 0.25 s on one core. diffusers names
    the number of heads `attention_head_dim` in this class (its `num_attention_heads` argument is refused), so 4
    here means 4 heads.
    """
    return {
        "sample_size": latent_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "layers_per_block": 1,
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 16,
        "attention_head_dim": 4,
        "cross_attention_dim": cross_attention_dim,
    }


def conditional_unet_config_for(user_config: Mapping[str, Any] | None, latent_size: int, latent_channels: int,
                                cross_attention_dim: int) -> dict[str, Any]:
    """The UNet2DConditionModel config to train: the default, or a user's (--model_config_name_or_path) with
    sample_size set to the latent size and in/out channels and cross_attention_dim filled in where it leaves them
    out. A user's in/out channels are kept (`ddpm_hub.vae.check_latent_channels` judges them); a cross_attention_dim
    other than the text encoder's hidden size is an InputError."""
    if user_config is None:
        return default_conditional_unet_config(latent_size, latent_channels, cross_attention_dim)
    given = user_config.get("cross_attention_dim")
    if given is not None and given != cross_attention_dim:
        raise InputError(f"--model_config_name_or_path sets cross_attention_dim {given}, but the text encoder's "
                         f"states have {cross_attention_dim} features: set it to {cross_attention_dim} or leave it out")
    return {"in_channels": latent_channels, "out_channels": latent_channels, **user_config,
            "sample_size": latent_size, "cross_attention_dim": cross_attention_dim}


def build_conditional_unet(config: Mapping[str, Any], seed: int = 0):
    """A freshly initialised `UNet2DConditionModel` from `config`, its weights drawn from `seed` (torch's global RNG
    is restored afterwards). InputError for a latent size its levels cannot halve evenly, or an invalid config."""
    from diffusers import UNet2DConditionModel

    levels = len(config.get("block_out_channels", (320, 640, 1280, 1280)))
    factor, size = 2 ** (levels - 1), config.get("sample_size")
    if isinstance(size, int) and (size < 1 or size % factor):
        raise InputError(f"the latents are {size}x{size}, which this U-Net cannot use: its {levels} levels halve them "
                         f"{levels - 1} times, so the latent size (--resolution / the VAE's factor) must be a "
                         f"multiple of {factor}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return UNet2DConditionModel.from_config(dict(config))
        except (TypeError, ValueError) as error:
            raise InputError(f"the U-Net config is not a valid UNet2DConditionModel config: {one_line(error)}") from None


def latent_size(resolution: int, vae) -> int:
    """Latent side for images of side `resolution`: resolution / f, f = 2 ** (VAE levels - 1); InputError unless
    f divides it."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % factor:
        raise InputError(f"--resolution {resolution} is not usable with this VAE: it must be a multiple of {factor} "
                         f"(the VAE down-samples by {factor})")
    return resolution // factor


def check_cross_attention(unet_config: Mapping[str, Any], text_encoder) -> None:
    """InputError unless the U-Net attends to states of the text encoder's width (cross_attention_dim ==
    hidden_size)."""
    width = int(text_encoder.config.hidden_size)
    if int(unet_config.get("cross_attention_dim", -1)) != width:
        raise InputError(f"the U-Net's cross_attention_dim ({unet_config.get('cross_attention_dim')}) does not match "
                         f"the text encoder's hidden_size ({width}): the U-Net attends to the text states")


# ------------------------------------------------------------------------------------------------ the parts
@dataclass
class TextToImageComponents:
    """The five parts of a Stable Diffusion model, as training holds them.

    vae: diffusers AutoencoderKL, frozen, its config's scaling_factor set.
    tokenizer, text_encoder: transformers CLIPTokenizer and CLIPTextModel.
    unet: diffusers UNet2DConditionModel (in_channels = the VAE's latent_channels, cross_attention_dim = the
        text encoder's hidden_size).
    scheduler: ddpm_hub's DDPMScheduler, the forward process training uses (exported as diffusers' DDPMScheduler).
    train_text_encoder: whether the text encoder is trained with the U-Net (False: frozen, e.g. pretrained).
    """

    vae: Any
    tokenizer: Any
    text_encoder: Any
    unet: Any
    scheduler: DDPMScheduler
    train_text_encoder: bool = True

    def trained_models(self) -> dict[str, torch.nn.Module]:
        """The models the optimizer updates, by component name: the U-Net, and the text encoder if trained."""
        models = {"unet": self.unet}
        if self.train_text_encoder:
            models["text_encoder"] = self.text_encoder
        return models


def pipeline_scheduler_config(scheduler_config: Mapping[str, Any]) -> dict[str, Any]:
    """The scheduler config a StableDiffusionPipeline folder stores: ours (same keys as diffusers' DDPMScheduler)
    with steps_offset=1 and clip_sample=False, which StableDiffusionPipeline.__init__ otherwise rewrites with a
    FutureWarning (clipping x_0 to [-1, 1] is for pixels, not unit-variance latents)."""
    config = {key: value for key, value in scheduler_config.items() if not key.startswith("_")}
    return {**config, "steps_offset": 1, "clip_sample": False}


def build_pipeline(components: TextToImageComponents, sampler: str = "ddpm"):
    """A stock `StableDiffusionPipeline` over the components (shared, not copied), with the sampler asked for
    (`ddpm_hub.sampling.sampler_scheduler`, on the scheduler config the exported folder stores), no safety
    checker, progress bars off."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=sampler_scheduler(pipeline_scheduler_config(components.scheduler.config), sampler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------------- the text
def drop_captions(captions: Sequence[str], probability: float) -> list[str]:
    """Classifier-free guidance's conditioning dropout (Ho & Salimans 2022, Algorithm 1, line 3): each caption is
    replaced by the empty prompt "" with `probability`, independently, by u_i < probability for u = torch.rand(N)
    from torch's global RNG (always drawn, whatever the probability, so the RNG stream does not depend on it)."""
    if not 0.0 <= probability <= 1.0:
        raise InputError(f"--conditioning_dropout_prob {probability!r} must be between 0 and 1")
    dropped = (torch.rand(len(captions)) < probability).tolist()
    return ["" if drop else caption for caption, drop in zip(captions, dropped)]


def check_caption_lengths(tokenizer, captions: Sequence[str]) -> None:
    """Tokenize every distinct caption once; `tokenize_captions` logs one warning saying how many are longer than
    the tokenizer's model_max_length and will be truncated. Raises InputError for non-string captions."""
    distinct = sorted(set(captions))
    if distinct:
        tokenize_captions(tokenizer, distinct)


# ------------------------------------------------------------------------------------------------ latents
class LatentDataset(torch.utils.data.Dataset):
    """The VAE posterior q(z|x) = N(mu, diag sigma^2) of every training image, computed once with a frozen VAE,
    with the images' captions: a batch is {"latent_mean", "latent_std": float32 [B x c x h x w] (CPU), "captions":
    B strings}. `sample_latents` draws z = mu + sigma * eps per step, as `latent_dist.sample()` would, without
    re-encoding. Valid only for images without per-access augmentation (no random flip or crop).

    dataset: a `CaptionedImageDataset` whose images are one uint8 tensor; its `caption` (and `set_epoch`, which
    main calls on it) chooses among several captions per image.
    """

    def __init__(self, dataset, vae, batch_size: int = 256):
        images = dataset.images
        assert isinstance(images, torch.Tensor) and not dataset.random_flip, "only for images without augmentation"
        self.dataset = dataset
        self.latent_mean, self.latent_std = encode_posteriors(vae, images, batch_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        self.dataset.set_epoch(epoch, seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {"latent_mean": batch["latent_mean"][0], "latent_std": batch["latent_std"][0],
                "caption": batch["captions"][0]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        index = torch.as_tensor(indices)
        return {"latent_mean": self.latent_mean[index], "latent_std": self.latent_std[index],
                "captions": [self.dataset.caption(int(i)) for i in indices]}


@torch.no_grad()
def encode_posteriors(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) of q(z|x) for uint8 images [N x C x H x W] in 0..255: two float32 tensors [N x c x h x w] on the
    CPU, sigma = exp(logvar / 2) as diffusers' DiagonalGaussianDistribution computes it (logvar clamped to
    [-30, 20])."""
    device = next(vae.parameters()).device
    means, stds = [], []
    for chunk in images.split(batch_size):
        posterior = vae.encode(from_uint8(chunk).to(device)).latent_dist
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def sample_latents(batch: Mapping[str, Any], vae) -> torch.Tensor:
    """z_0 = scaling_factor * z, z ~ q(z|x) (note 003 (2.8): z = mu + sigma * eps, eps from torch's global RNG):
    from the cached posterior of a `LatentDataset` batch, or by encoding batch["pixel_values"] ([B x C x H x W] in
    [-1, 1]) with the frozen VAE. Returns [B x c x h x w] float32, unit variance over the training data."""
    if "latent_mean" in batch:
        mean, std = batch["latent_mean"], batch["latent_std"]
        latents = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
    else:
        with torch.no_grad():
            pixels = batch["pixel_values"]
            latents = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.sample().float()
    return latents * vae.config.scaling_factor


# -------------------------------------------------------------------------------------------------- the loss
def text_to_image_loss(unet, text_encoder, tokenizer, latents: torch.Tensor, captions: Sequence[str],
                       scheduler: DDPMScheduler, loss_config: LossConfig,
                       conditioning_dropout_prob: float = 0.1) -> torch.Tensor:
    """One Monte Carlo estimate of L_simple on latents, conditioned on text (module docstring; note 001, Stable
    Diffusion), as a scalar float32 tensor.

    1. classifier-free guidance's dropout: each caption becomes "" with conditioning_dropout_prob (`drop_captions`);
    2. tau(y): the text states [B x L x D] (`encode_prompts`; gradients reach a trained text encoder);
    3. the pixel-space objective on the latents [B x c x h x w] (scaled posterior samples, `sample_latents`):
       `ddpm_hub.training.diffusion_loss` with encoder_hidden_states = tau(y): t ~ U{0..T-1}, z ~ N(0, I),
       x_t from `scheduler.add_noise`, the prediction type's target and min-SNR weights of `loss_config`.
    Every random draw (dropout, t, z) comes from torch's global RNG, so accelerate's saved RNG state makes resume
    exact.
    """
    if len(captions) != latents.shape[0]:
        raise InputError(f"got {len(captions)} captions for {latents.shape[0]} latents: give one per image")
    if loss_config.loss_type != "simple":
        raise InputError(f"--loss_type {loss_config.loss_type!r} is for pixel-space models (its L_vlb uses the "
                         "8-bit pixel decoder); text-to-image trains L_simple on latents")
    captions = drop_captions(captions, conditioning_dropout_prob)  # 1.
    states = encode_prompts(tokenizer, text_encoder, captions, warn_truncation=False)  # 2.
    return diffusion_loss(unet, latents, scheduler, loss_config, model_kwargs={"encoder_hidden_states": states})  # 3.


# ----------------------------------------------------------------------------------------- pretrained folders
@dataclass
class PretrainedParts:
    """What `load_pretrained_components` returns: the frozen vae and text side, the U-Net to fine-tune, and the
    scheduler config (a dict, as stored in the folder)."""

    vae: Any
    tokenizer: Any
    text_encoder: Any
    unet: Any
    scheduler_config: dict[str, Any]


def load_pretrained_components(path_or_id: str | os.PathLike) -> PretrainedParts:
    """The parts of a Stable Diffusion folder (or Hub repository) for --pretrained_model_name_or_path, as diffusers'
    train_text_to_image.py loads them: vae/ (AutoencoderKL) and text_encoder/ + tokenizer/ frozen, unet/
    (UNet2DConditionModel) to train, scheduler/ read as a config. A missing or unreadable component is a one-line
    InputError that names it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .text_encoder import load_text_components

    name = os.fspath(path_or_id)
    root = Path(name).expanduser()
    if root.is_dir():
        _check_components_present(root, name)
        name = str(root)
    elif root.exists() or not is_repo_id(name):
        raise InputError(f"{PRETRAINED_FLAG} {name!r} is not a folder: give a Stable Diffusion folder (vae/, "
                         "text_encoder/, tokenizer/, unet/, scheduler/) or a Hugging Face Hub id")
    scheduler_config = _load_component(name, "scheduler",
                                       lambda: DDPMScheduler.load_config(name, subfolder="scheduler"))
    unet_config = _load_component(name, "unet", lambda: UNet2DConditionModel.load_config(name, subfolder="unet"))
    if unet_config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise InputError(f"{PRETRAINED_FLAG} {name!r}: unet/ holds a {unet_config['_class_name']}, not the "
                         "UNet2DConditionModel of a Stable Diffusion folder")
    unet = _load_component(name, "unet", lambda: UNet2DConditionModel.from_pretrained(name, subfolder="unet"))
    vae = _load_component(name, "vae", lambda: AutoencoderKL.from_pretrained(name, subfolder="vae"))
    try:
        tokenizer, text_encoder = load_text_components(name)
    except InputError as error:
        raise InputError(f"{PRETRAINED_FLAG} {name!r}: text_encoder/ or tokenizer/ is unusable ({error})") from None
    return PretrainedParts(vae=vae.requires_grad_(False).eval(), tokenizer=tokenizer, text_encoder=text_encoder,
                           unet=unet, scheduler_config=dict(scheduler_config))


def _check_components_present(root: Path, name: str) -> None:
    required = {"vae": ("config.json",), "unet": ("config.json",), "text_encoder": ("config.json",),
                "scheduler": ("scheduler_config.json",)}
    for component in COMPONENTS:
        folder = root / component
        if not folder.is_dir():
            raise InputError(f"{PRETRAINED_FLAG} {name!r} has no {component}/ folder: a Stable Diffusion folder holds "
                             f"{', '.join(c + '/' for c in COMPONENTS)} (as StableDiffusionPipeline.save_pretrained "
                             "writes them)")
        for file in required.get(component, ()):
            if not (folder / file).is_file():
                raise InputError(f"{PRETRAINED_FLAG} {name!r}: {component}/ has no {file}")


def _load_component(name: str, component: str, load):
    try:
        return load()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise InputError(f"{PRETRAINED_FLAG} {name!r}: its {component} could not be loaded "
                         f"({type(error).__name__}: {one_line(error, 200)})") from None


# ------------------------------------------------------------------------------------------------------ export
def save_text_to_image_pipeline(output_dir: str | os.PathLike, components: TextToImageComponents) -> Path:
    """Write the components as a stock `StableDiffusionPipeline` folder: vae/, text_encoder/, tokenizer/, unet/
    (safetensors), scheduler/ (diffusers' DDPMScheduler, `pipeline_scheduler_config`) and model_index.json, with
    no safety checker or feature extractor (requires_safety_checker False). Each part is saved into a temporary
    folder and swapped in by renames (`ddpm_hub.export.save_pipeline_parts`); other files in output_dir are left
    alone. The folder names diffusers and transformers classes only, so
    `StableDiffusionPipeline.from_pretrained(output_dir, safety_checker=None)` loads it without ddpm_hub."""
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=DiffusersDDPMScheduler.from_config(pipeline_scheduler_config(components.scheduler.config)),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return save_pipeline_parts(pipeline, output_dir, PIPELINE_PARTS)


# --------------------------------------------------------------------------------------------------- sampling
def generate_from_prompts(pipeline_or_components, prompts: Sequence[str], guidance_scale: float = 5.0,
                          num_inference_steps: int = 25, seed: int = 0, sampler: str | None = "dpm",
                          batch_size: int = 64) -> torch.Tensor:
    """Images for `prompts` (image i from prompts[i]) with a stock StableDiffusionPipeline: classifier-free guidance
    at guidance_scale (> 1; 1 samples the conditional model alone), one generator seeded with `seed` for all
    batches of batch_size. Returns float [N x H x W x 3] in [0, 1] on the CPU.

    pipeline_or_components: `TextToImageComponents` (sampled as they are: pass EMA weights to see EMA samples) or a
        StableDiffusionPipeline. sampler: "ddpm", "ddim" or "dpm" (DPM-Solver++ 2M) built from the model's
        scheduler config; None keeps a given pipeline's own scheduler.
    """
    from diffusers import StableDiffusionPipeline

    if isinstance(pipeline_or_components, TextToImageComponents):
        pipeline = build_pipeline(pipeline_or_components, sampler or "ddpm")
    elif sampler is not None:
        parts = {**pipeline_or_components.components, "scheduler": sampler_scheduler(
            pipeline_scheduler_config(pipeline_or_components.scheduler.config), sampler)}
        pipeline = StableDiffusionPipeline(**{**parts, "requires_safety_checker": False})
        pipeline.set_progress_bar_config(disable=True)
    else:
        pipeline = pipeline_or_components
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InputError("prompts is empty: give at least one prompt")
    return generate(pipeline, len(prompts), num_inference_steps=num_inference_steps, batch_size=batch_size, seed=seed,
                    per_image={"prompt": prompts}, guidance_scale=guidance_scale)


def adherence_prompts(num_prompts: int) -> list[str]:
    """num_prompts shapes prompts ("a red circle", ...) cycling through every colour x shape pair in a fixed order,
    so each pair appears num_prompts / 18 times (+- 1)."""
    pairs = [(colour, shape) for shape in SHAPES for colour in COLOURS]
    return [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in (pairs[i % len(pairs)] for i in range(num_prompts))]


def prompt_adherence(pipeline_or_components, num_prompts: int = 180, guidance_scale: float = 5.0,
                     num_inference_steps: int = 25, seed: int = 0, sampler: str | None = "dpm",
                     batch_size: int = 64) -> AdherenceResult:
    """The share of images whose colour and shape are those their prompt names, for `adherence_prompts`
    (num_prompts of them) sampled by `generate_from_prompts` at guidance_scale and judged by the exact geometric
    rule of `ddpm_hub.data.shapes.score_prompt_adherence`. Meaningful for models trained on the built-in shapes."""
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
        raise InputError(f"num_prompts {num_prompts!r} must be a positive integer")
    prompts = adherence_prompts(num_prompts)
    images = generate_from_prompts(pipeline_or_components, prompts, guidance_scale, num_inference_steps, seed,
                                   sampler, batch_size)
    return score_prompt_adherence(images, prompts)
