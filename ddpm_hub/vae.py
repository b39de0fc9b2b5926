"""The latent autoencoder of Stable Diffusion: diffusers' `AutoencoderKL`, trained with note 003's VAE objective.

Note 003 (2.VAE生成模型) derives the objective. The evidence log p(x) is bounded below by the ELBO (2.4), which
splits into a reconstruction term and a prior-matching term (2.5):

    ELBO = E_{q_phi(z|x)}[log p_theta(x|z)] - KL(q_phi(z|x) || p(z)).

With the Gaussian choices of (2.6), p(z) = N(0, I), p_theta(x|z) = N(f_theta(z), c I) and
q_phi(z|x) = N(mu_phi(x), diag sigma_phi^2(x)), maximising the ELBO is minimising (2.7)

    E_q ||x - f_theta(z)||^2 / (2c) + KL(q_phi(z|x) || p(z)),

estimated with one reparameterized sample z = mu_phi(x) + sigma_phi(x) * eps, eps ~ N(0, I) (2.8, L = 1), and the
KL in closed form, 1/2 (-log sigma^2 + mu^2 + sigma^2 - 1) per latent dimension (end of section 2).
Notation: (2.6) writes the encoder as N(mu_phi(x), sigma_phi(x)); its covariance is diag(sigma_phi(x)^2), as the
KL derivation below it uses.

How diffusers' `AutoencoderKL` maps onto it (diffusers 0.42.1, models/autoencoders/autoencoder_kl.py and vae.py):
`vae.encode(x).latent_dist` is q_phi(z|x), a `DiagonalGaussianDistribution` holding `mean` = mu_phi(x) and
`logvar` = log sigma_phi^2(x) (clamped to [-30, 20]); its `sample(generator)` is the reparameterization
mean + std * eps; `vae.decode(z).sample` is f_theta(z). Multiplying (2.7) by 2c gives the loss trained here,

    ||x - f_theta(z)||^2 + beta * KL,  beta = 2c,

so beta is twice the decoder's pixel variance: a small beta says "reconstruct to within a few grey levels", which
is what a latent autoencoder for diffusion needs (see `vae_loss`).

Pixel convention: training images are uint8 [N x C x H x W] in 0..255 (as `ddpm_hub.data` stores them), mapped to
[-1, 1] once per batch (`ddpm_hub.pixels.from_uint8`); the VAE sees and returns [-1, 1].
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, one_line
from .hub import is_repo_id
from .pixels import from_uint8
from .plots import image_grid, save_png
from .training.checkpointing import find_latest_checkpoint, new_checkpoint_folder, publish_checkpoint

logger = logging.getLogger(__name__)

# beta = 2c, c the decoder's pixel variance in [-1, 1] units (module docstring): 1e-4 is c = 5e-5, a decoder std of
# 0.0071, 0.9 of one 8-bit grey level (2/255 = 0.0078).
DEFAULT_BETA = 1e-4
CHECKPOINT_PREFIX = "vae-checkpoint-"
TRAINING_STATE_NAME = "training_state.pt"
RECONSTRUCTION_GRID_NAME = "vae_reconstructions.png"
PRETRAINED_FLAG = "--pretrained_vae_name_or_path"

_GRID_IMAGES = 8


# ------------------------------------------------------------------------------------------------ the model
def default_vae_config(resolution: int = 32, channels: int = 3, latent_channels: int = 4) -> dict[str, Any]:
    """A small `AutoencoderKL` config that trains in minutes on a 2-core CPU.

    Three encoder/decoder levels, block_out_channels (32, 64, 64): diffusers down-samples after every level but the
    last, so 2 ** (3 - 1) = 4x, and a [channels x R x R] image has a [latent_channels x R/4 x R/4] latent
    (32x32 -> 8x8, as Stable Diffusion's KL-f8 maps 512x512 -> 64x64 with four levels). 954,567 parameters with
    channels=3, latent_channels=4; one AdamW step on 16 RGB 32x32 images takes about 0.4 s on one core.
    scaling_factor starts at 1.0: `train_vae` replaces it with `latent_scaling_factor`.
    """
    block_out_channels = (32, 64, 64)
    return {
        "sample_size": resolution,
        "in_channels": channels,
        "out_channels": channels,
        "latent_channels": latent_channels,
        "block_out_channels": block_out_channels,
        "down_block_types": ("DownEncoderBlock2D",) * len(block_out_channels),
        "up_block_types": ("UpDecoderBlock2D",) * len(block_out_channels),
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "scaling_factor": 1.0,
    }


def vae_downsampling_factor(config: Mapping[str, Any]) -> int:
    """Pixels per latent side: 2 ** (levels - 1), as StableDiffusionPipeline's vae_scale_factor."""
    return 2 ** (len(config.get("block_out_channels", (64,))) - 1)


def build_vae(config: Mapping[str, Any], seed: int = 0):
    """A freshly initialised `AutoencoderKL` from a config, its weights drawn from `seed` (the global RNG is
    restored afterwards). Raises InputError for a sample_size the VAE cannot halve evenly or an invalid config."""
    from diffusers import AutoencoderKL

    factor = vae_downsampling_factor(config)
    sample_size = config.get("sample_size", 32)
    if isinstance(sample_size, int) and (sample_size < 1 or sample_size % factor):
        raise InputError(f"--resolution {sample_size} is not usable by this VAE: it must be a positive multiple of "
                         f"{factor} (the VAE down-samples by {factor})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return AutoencoderKL.from_config(dict(config))
        except (TypeError, ValueError) as error:
            raise InputError(f"the VAE config is not a valid AutoencoderKL config: {one_line(error)}") from None


# ------------------------------------------------------------------------------------------------- the loss
def gaussian_kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (-log sigma^2 + mu^2 + sigma^2 - 1) per latent dimension, summed per image.

    Note 003, end of section 2 (the prior-matching term of (2.5) under the Gaussian choices of (2.6)).
    mean, logvar: [N x ...] (e.g. [N x 4 x h x w]), logvar = log sigma^2. Returns [N], in nats, in the inputs' dtype.
    """
    per_dimension = 0.5 * (-logvar + mean.pow(2) + logvar.exp() - 1.0)
    return per_dimension.flatten(1).sum(dim=1)


@dataclass
class VAELossOutput:
    """`vae_loss`'s result; every field is a scalar tensor, the mean over the batch of a per-image quantity.

    loss: reconstruction + beta * kl (what to back-propagate).
    reconstruction: ||x - f_theta(z)||^2, summed over the C x H x W pixels of an image ([-1, 1] units).
    kl: KL(q_phi(z|x) || N(0, I)) in nats, summed over the latent dimensions of an image.
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def vae_loss(vae, images: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> VAELossOutput:
    """One Monte Carlo estimate (L = 1) of note 003's loss (2.7)-(2.8), times 2c: ||x - f_theta(z)||^2 + beta * KL.

    images: float [N x C x H x W] in [-1, 1]. generator: draws eps of the reparameterization (None: the global RNG).
    Steps:
      1. q_phi(z|x) = N(mu, diag sigma^2): `vae.encode(images).latent_dist`;
      2. z = mu + sigma * eps, the reparameterization trick (2.8): the posterior's own `sample(generator)`;
      3. f_theta(z) = `vae.decode(z).sample`; reconstruction = sum of squared errors per image, which is
         -log p_theta(x|z) of the Gaussian decoder N(f_theta(z), c I) times 2c, up to a constant;
      4. KL(q_phi(z|x) || N(0, I)) in closed form (`gaussian_kl_standard_normal`).

    Both terms are sums per image, so beta = 2c is the decoder's variance doubled and does not change meaning with
    the resolution. `DEFAULT_BETA` = 1e-4 puts the decoder std at 0.9 of a grey level, so reconstruction dominates
    and the KL only bounds the latents' scale (a plain autoencoder's latents drift to any scale).
    That is the regime of Stable Diffusion's KL-f8 autoencoder (latent-diffusion's LPIPSWithDiscriminator: per-image
    sums of L1 + LPIPS plus kl_weight 1e-6 times the per-image KL); on a per-pixel-mean reconstruction the same
    balance is beta / (C*H*W) (3e-8 for 32x32 RGB). Large beta (toward 1, c = 0.5) gives blurry reconstructions.
    """
    _check_float_images(images, vae)
    posterior = vae.encode(images).latent_dist  # 1. q_phi(z|x)
    latents = posterior.sample(generator=generator)  # 2. z = mu + sigma * eps
    decoded = vae.decode(latents).sample  # 3. f_theta(z)
    reconstruction = (decoded.float() - images.float()).pow(2).flatten(1).sum(dim=1)
    kl = gaussian_kl_standard_normal(posterior.mean.float(), posterior.logvar.float())  # 4.
    loss = reconstruction + beta * kl
    return VAELossOutput(loss=loss.mean(), reconstruction=reconstruction.mean(), kl=kl.mean())


# ----------------------------------------------------------------------------------------- scaling factor
@torch.no_grad()
def latent_scaling_factor(vae, images, batch_size: int, generator: torch.Generator | None = None) -> float:
    """1 / std of the posterior samples z ~ q_phi(z|x) over `images`, the factor diffusion multiplies latents by.

    images: uint8 [N x C x H x W] in 0..255 (or an object with `.images`). Samples, not modes: the latent-diffusion
    code computed Stable Diffusion's 0.18215 as 1 / z.flatten().std() of `encoder_posterior.sample()` on its first
    batch (here: every image), and diffusers'
    train_text_to_image.py trains the U-Net on `latent_dist.sample() * scaling_factor`; so the U-Net's inputs have
    unit std. One std over all elements (every channel and position), with the mean removed, as torch.std.
    Accumulated in float64; generator: the eps draws (None: one seeded with 0). Returns a Python float.
    """
    images = _uint8_images(images, "images")
    _check_positive_int(batch_size, "batch_size")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    total, total_squares, count = 0.0, 0.0, 0
    for chunk in images.split(batch_size):
        latents = vae.encode(from_uint8(chunk)).latent_dist.sample(generator=generator).double()
        total += latents.sum().item()
        total_squares += latents.pow(2).sum().item()
        count += latents.numel()
    variance = (total_squares - total * total / count) / max(count - 1, 1)  # unbiased, as torch.std
    if not variance > 0 or not math.isfinite(variance):
        raise ValueError(f"the VAE's latents have variance {variance}: no scaling factor makes them unit-std")
    return 1.0 / math.sqrt(variance)


# ------------------------------------------------------------------------------------------------ training
@dataclass
class VAETrainingResult:
    """What `train_vae` returns.

    vae: the trained AutoencoderKL (eval mode), its config's scaling_factor set.
    scaling_factor: `latent_scaling_factor` of the training images.
    steps, reconstruction, kl: per optimizer step (1-based), the batch's `vae_loss` terms (also for steps run
        before a resume: the checkpoint carries them).
    resumed_from: the step of the checkpoint training resumed from, None for a fresh start.
    checkpoint: the last checkpoint folder written or resumed from (None without checkpoints).
    reconstruction_grid: the PNG of originals (top row) above their reconstructions (None without output_dir).
    """

    vae: Any
    scaling_factor: float
    steps: list[int] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    checkpoint: Path | None = None
    reconstruction_grid: Path | None = None


def train_vae(
    vae,
    dataset_images,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    beta: float,
    seed: int,
    output_dir: str | os.PathLike | None = None,
    checkpointing_steps: int | None = None,
    resume: bool = True,
    progress: bool = True,
) -> VAETrainingResult:
    """Train `vae` in place with AdamW on `vae_loss` for num_steps steps; set its scaling_factor; return the run.

    dataset_images: uint8 [N x C x H x W] in 0..255, or an object with such an `.images` (an ImageDataset).
    Batches: epochs of a permutation seeded by (seed, epoch), batch_size images a step (the last partial batch of an
    epoch is dropped). The eps draws come from the run's own torch.Generator(seed): the global RNG is never used.
    Checkpoints: every checkpointing_steps steps, output_dir/vae-checkpoint-STEP (vae/ via save_pretrained as
    safetensors, training_state.pt with the optimizer, generator state, step and loss history, manifest.json last),
    written as .tmp-vae-checkpoint-STEP and renamed; older ones are deleted. With resume, training continues from
    the newest checkpoint that verifies and ends with exactly the weights of an uninterrupted run.
    At the end: scaling_factor = `latent_scaling_factor` (registered in vae.config, so save_pretrained and
    StableDiffusionPipeline use it) and, with output_dir, output_dir/vae_reconstructions.png.
    """
    from tqdm.auto import tqdm

    images = _uint8_images(dataset_images, "dataset_images")
    _check_training_args(images, vae, num_steps, batch_size, learning_rate, beta, output_dir, checkpointing_steps)
    output_dir = Path(output_dir) if output_dir is not None else None
    run = {"seed": int(seed), "batch_size": int(batch_size), "learning_rate": float(learning_rate),
           "beta": float(beta), "data_sha256": _fingerprint(images)}

    # 1. the run's state: model, optimizer, eps generator, history
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(int(seed))
    history: dict[str, list[float]] = {"reconstruction": [], "kl": []}
    start, checkpoint = 0, None
    if output_dir is not None and resume:
        checkpoint = find_latest_vae_checkpoint(output_dir)
        if checkpoint is not None:
            start, history = _load_checkpoint(checkpoint, vae, optimizer, generator, run, num_steps)
            logger.info("resumed VAE training from %s (step %d)", checkpoint, start)
    resumed_from = start if checkpoint is not None else None

    # 2. the loop
    bar = tqdm(total=num_steps, initial=start, desc="vae", unit="step", disable=not progress)
    with torch.inference_mode(False), torch.enable_grad():  # gradients whatever the caller's grad mode
        for step in range(start, num_steps):
            batch = from_uint8(images[_batch_indices(step, len(images), batch_size, seed)])
            out = vae_loss(vae, batch, beta, generator=generator)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"the VAE loss is {out.loss.item()} at step {step + 1}: lower "
                                         f"learning_rate ({learning_rate}) or beta ({beta})")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            history["reconstruction"].append(out.reconstruction.item())
            history["kl"].append(out.kl.item())
            bar.update(1)
            bar.set_postfix(rec=f"{history['reconstruction'][-1]:.4g}", kl=f"{history['kl'][-1]:.4g}")
            if checkpointing_steps and (step + 1) % checkpointing_steps == 0:
                checkpoint = save_vae_checkpoint(output_dir, step + 1, vae, optimizer, generator, history, run)
    bar.close()

    # 3. the latent scale, then the picture
    vae.eval()
    scaling_factor = latent_scaling_factor(vae, images, batch_size, torch.Generator().manual_seed(int(seed)))
    vae.register_to_config(scaling_factor=scaling_factor)
    grid = save_reconstruction_grid(vae, images, output_dir / RECONSTRUCTION_GRID_NAME) if output_dir else None
    return VAETrainingResult(vae=vae, scaling_factor=scaling_factor, steps=list(range(1, num_steps + 1)),
                             reconstruction=history["reconstruction"], kl=history["kl"], resumed_from=resumed_from,
                             checkpoint=checkpoint, reconstruction_grid=grid)


def _batch_indices(step: int, num_images: int, batch_size: int, seed: int) -> torch.Tensor:
    """The images of 0-based `step`: slice step % per_epoch of epoch step // per_epoch's permutation, which is
    seeded by (seed, epoch), so any step's batch is known without replaying the run (exact resume)."""
    per_epoch = num_images // batch_size
    epoch, index = divmod(step, per_epoch)
    permutation = torch.randperm(num_images, generator=torch.Generator().manual_seed(
        hash((int(seed), epoch)) & 0x7FFF_FFFF_FFFF_FFFF))
    return permutation[index * batch_size:(index + 1) * batch_size]


@torch.no_grad()
def save_reconstruction_grid(vae, images, path: str | os.PathLike, num_images: int = _GRID_IMAGES) -> Path:
    """PNG of the first num_images images (top row) above their reconstructions f_theta(mu_phi(x)) (bottom row).

    images: uint8 [N x C x H x W] (or an object with `.images`). Uses the posterior mode: no randomness.
    """
    originals = from_uint8(_uint8_images(images, "images")[:num_images])
    decoded = vae.decode(vae.encode(originals).latent_dist.mode()).sample.clamp(-1, 1)
    both = torch.cat([originals, decoded.float()])  # [2k x C x H x W] in [-1, 1]
    pictures = ((both + 1) / 2).permute(0, 2, 3, 1).cpu()  # [2k x H x W x C] in [0, 1]
    return save_png(image_grid(pictures, nrow=len(originals), scale=max(1, 64 // both.shape[2])), path)


# ---------------------------------------------------------------------------------------------- checkpoints
def save_vae_checkpoint(output_dir: str | os.PathLike, step: int, vae, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator, history: dict[str, list[float]], run: dict[str, Any]) -> Path:
    """Write output_dir/vae-checkpoint-{step} crash-safely (`ddpm_hub.training.checkpointing`: a temp folder,
    manifest.json last, an atomic rename) and delete every other VAE checkpoint. It holds vae/ (save_pretrained,
    safetensors) and training_state.pt (optimizer state, generator state, step, history, run settings; read back
    with weights_only=True)."""
    tmp = new_checkpoint_folder(output_dir, CHECKPOINT_PREFIX, step)
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    state = {"step": int(step), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
             "reconstruction": list(history["reconstruction"]), "kl": list(history["kl"]), "run": dict(run)}
    torch.save(state, tmp / TRAINING_STATE_NAME)
    return publish_checkpoint(tmp, CHECKPOINT_PREFIX, step, total_limit=1)


def find_latest_vae_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest output_dir/vae-checkpoint-N (by N) whose manifest verifies, or None; temp folders never count,
    and a damaged newer checkpoint is skipped with a warning."""
    latest, skipped = find_latest_checkpoint(output_dir, CHECKPOINT_PREFIX)
    for path, reason in skipped:
        logger.warning("skipping damaged VAE checkpoint %s: %s", path, reason)
    return latest


def _load_checkpoint(path: Path, vae, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                     run: dict[str, Any], num_steps: int) -> tuple[int, dict[str, list[float]]]:
    """Restore weights, optimizer and generator from a checkpoint in place; returns (step, history)."""
    from safetensors.torch import load_file

    state = torch.load(path / TRAINING_STATE_NAME, map_location="cpu", weights_only=True)
    for key, value in run.items():
        if state["run"].get(key) != value:
            raise InputError(f"checkpoint {path} was trained with {key} {state['run'].get(key)!r}, not {value!r}: "
                             "pass the same settings to resume, or resume=False to start over")
    if state["step"] > num_steps:
        raise InputError(f"checkpoint {path} is at step {state['step']}, past num_steps {num_steps}: raise "
                         "num_steps, or resume=False to start over")
    try:
        vae.load_state_dict(load_file(path / "vae" / "diffusion_pytorch_model.safetensors"), strict=True)
    except RuntimeError as error:
        raise InputError(f"checkpoint {path} holds a VAE of another architecture than this one "
                         f"({one_line(error, 200)})") from None
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"]), {"reconstruction": list(state["reconstruction"]), "kl": list(state["kl"])}


# ---------------------------------------------------------------------------------------- pretrained VAEs
def load_pretrained_vae(path_or_id: str | os.PathLike, subfolder: str | None = None):
    """A frozen (requires_grad False, eval) `AutoencoderKL` for --pretrained_vae_name_or_path.

    path_or_id: a local folder with config.json and weights, a pipeline folder holding vae/ (found without
    subfolder), or a Hub model id (subfolder e.g. "vae" for a pipeline repository). Raises InputError for a missing
    folder, a folder without config.json, a config of another class, or a model that does not load.
    """
    from diffusers import AutoencoderKL

    name = str(path_or_id)
    local = Path(name).expanduser()
    if local.is_dir():
        if subfolder is None and not (local / "config.json").is_file() and (local / "vae" / "config.json").is_file():
            subfolder = "vae"
        folder = local / subfolder if subfolder else local
        if not (folder / "config.json").is_file():
            raise InputError(f"{PRETRAINED_FLAG} {name!r}: no config.json in {folder} (give an AutoencoderKL folder, "
                             "a pipeline folder with vae/, or a Hub model id)")
        name = str(local)
    elif not is_repo_id(name):
        raise InputError(f"{PRETRAINED_FLAG} {name!r}: no such folder (give an AutoencoderKL folder, a pipeline "
                         "folder with vae/, or a Hub model id such as 'stabilityai/sd-vae-ft-mse')")
    try:
        config = AutoencoderKL.load_config(name, subfolder=subfolder)
    except (OSError, ValueError) as error:
        what = "could not be read" if local.is_dir() else "is not a local folder, and the Hub could not provide it"
        raise InputError(f"{PRETRAINED_FLAG} {name!r} {what}: {one_line(error)}") from None
    class_name = config.get("_class_name", "AutoencoderKL")
    if class_name != "AutoencoderKL":
        raise InputError(f"{PRETRAINED_FLAG} {name!r} holds a {class_name} config, not an AutoencoderKL")
    try:
        vae = AutoencoderKL.from_pretrained(name, subfolder=subfolder)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{PRETRAINED_FLAG} {name!r} could not be loaded: {one_line(error)}") from None
    return vae.requires_grad_(False).eval()


def check_latent_channels(vae, unet_config: Mapping[str, Any] | Any) -> None:
    """Raise InputError unless the U-Net denoises this VAE's latents: its in_channels must equal the VAE's
    latent_channels, and its out_channels too (or twice it, for a learned variance).

    unet_config: a UNet2DConditionModel config dict, or a model (its `.config` is read).
    """
    config = unet_config if isinstance(unet_config, Mapping) else unet_config.config
    latent_channels = int(vae.config.latent_channels)
    in_channels, out_channels = int(config["in_channels"]), int(config.get("out_channels", config["in_channels"]))
    if in_channels != latent_channels:
        raise InputError(f"the VAE's latent_channels ({latent_channels}) do not match the U-Net's in_channels "
                         f"({in_channels}): the U-Net denoises VAE latents, so set its in_channels to "
                         f"{latent_channels} or use a VAE with {in_channels} latent channels")
    if out_channels not in (latent_channels, 2 * latent_channels):
        raise InputError(f"the VAE's latent_channels ({latent_channels}) do not match the U-Net's out_channels "
                         f"({out_channels}): use {latent_channels} (or {2 * latent_channels} for a learned variance)")


# ----------------------------------------------------------------------------------------------- checks
def _uint8_images(images, name: str) -> torch.Tensor:
    """The uint8 [N x C x H x W] tensor of `images` or of `images.images`; InputError otherwise."""
    images = getattr(images, "images", images)
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a uint8 tensor [N x C x H x W] (or hold one in .images), got "
                         f"{type(images).__name__}; images of different sizes must be cropped to one resolution")
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise InputError(f"{name} must be a non-empty uint8 tensor [N x C x H x W] in 0..255, got "
                         f"{images.dtype} {list(images.shape)}")
    return images


def _check_float_images(images: torch.Tensor, vae) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise InputError("images must be a float tensor [N x C x H x W] in [-1, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {list(getattr(images, 'shape', []))}")
    if images.shape[1] != vae.config.in_channels:
        raise InputError(f"images have {images.shape[1]} channels but the VAE takes in_channels "
                         f"{vae.config.in_channels}")


def _check_training_args(images: torch.Tensor, vae, num_steps: int, batch_size: int, learning_rate: float,
                         beta: float, output_dir, checkpointing_steps: int | None) -> None:
    _check_positive_int(num_steps, "num_steps")
    _check_positive_int(batch_size, "batch_size")
    if batch_size > len(images):
        raise InputError(f"batch_size {batch_size} is larger than the {len(images)} training images")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise InputError(f"learning_rate {learning_rate!r} must be a positive number (e.g. 1e-3)")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise InputError(f"beta {beta!r} must be a number >= 0 (the KL weight; default {DEFAULT_BETA})")
    if checkpointing_steps is not None:
        _check_positive_int(checkpointing_steps, "checkpointing_steps")
        if output_dir is None:
            raise InputError("checkpointing_steps needs an output_dir to write vae-checkpoint-N folders into")
    if images.shape[1] != vae.config.in_channels:
        raise InputError(f"dataset_images have {images.shape[1]} channels but the VAE takes in_channels "
                         f"{vae.config.in_channels}")
    factor = vae_downsampling_factor(vae.config)
    if images.shape[2] % factor or images.shape[3] % factor:
        raise InputError(f"dataset_images are {images.shape[2]}x{images.shape[3]}: this VAE needs sides that are "
                         f"multiples of {factor}")


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} {value!r} must be a positive integer")


def _fingerprint(images: torch.Tensor) -> str:
    """sha256 of the training images' bytes and shape: a resume must see the same data."""
    digest = hashlib.sha256(str(list(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()
