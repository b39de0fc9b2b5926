"""What the editing pipelines take and give: an image and a mask as PIL images, numpy arrays or tensors, checked
against the model and turned into tensors; the result turned into PIL images, numpy arrays or tensors.

Conventions (diffusers' RePaintPipeline's, so its users change one import):
  image: PIL image(s) (mode "L" for a 1-channel model, "RGB" for a 3-channel one), or what `ddpm_hub.pixels.to_nchw`
      reads: float [N x C x H x W] in [-1, 1] (diffusers' tensor convention), float [N x H x W x C] in [0, 1], or uint8
      0..255 in either layout.
  mask_image: 1 keeps a pixel, 0 marks it to be filled in. PIL image(s) (any mode, read as "L" as diffusers reads
      them: each pixel 0 or 255), or a bool/float array or tensor of 0s and 1s, or uint8 0/255, shaped [H x W],
      [N x H x W] or [N x 1-or-C x H x W]; a batch of 1 applies to every image.

Why ours: diffusers' `_preprocess_image` / `_preprocess_mask` (deprecated with RePaint) resize PIL images silently
(images to a multiple of 8, masks to a multiple of 32: a 16x16 mask becomes 0x0), fail on 1-channel PIL images,
threshold a grey mask at 0.5 and broadcast an [N x H x W] mask against the channels when N > 1. Here a size, channel
or value that does not fit is a one-line `InputError` instead of a silent change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch

from ..errors import InputError
from ..pixels import to_nchw

OUTPUT_TYPES = ("pil", "np", "pt")
PIL_CHANNELS = {"L": 1, "1": 1, "RGB": 3}

ImageInput = PIL.Image.Image | Sequence[PIL.Image.Image] | np.ndarray | torch.Tensor


def model_image_shape(unet) -> tuple[int, int, int]:
    """(C, H, W) of the images `unet` (a UNet2DModel) was built for: in_channels and sample_size."""
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(unet.config.in_channels), int(height), int(width)


def prepare_image(image: ImageInput, shape: tuple[int, int, int], name: str = "image") -> torch.Tensor:
    """The image(s) as float32 [N x C x H x W] in [-1, 1], checked against the model's (C, H, W) `shape`."""
    if isinstance(image, PIL.Image.Image) or _is_pil_list(image):
        x = to_nchw(np.stack([_pil_pixels(picture, shape[0], name) for picture in _as_list(image)]), name)
    else:
        x = to_nchw(image, name)
    channels, height, width = shape
    if x.shape[1] != channels:
        raise InputError(f"{name} has {x.shape[1]} channels but the model takes {channels} "
                         f"({'grey, PIL mode L' if channels == 1 else 'RGB'})")
    if tuple(x.shape[2:]) != (height, width):
        raise InputError(f"{name} is {x.shape[3]}x{x.shape[2]} (width x height) but the model makes {width}x{height} "
                         "images: resize it first")
    return x


def prepare_mask(mask: ImageInput, image: torch.Tensor, name: str = "mask_image") -> torch.Tensor:
    """The mask as a bool tensor [N-or-1 x C-or-1 x H x W] (True keeps the pixel), checked against `image`
    [N x C x H x W]: values 0 and 1 only (0 and 255 for uint8 and PIL), a size equal to the image's."""
    if isinstance(mask, PIL.Image.Image) or _is_pil_list(mask):
        m = torch.from_numpy(np.stack([np.asarray(picture.convert("L")) for picture in _as_list(mask)]))
    elif torch.is_tensor(mask) or isinstance(mask, np.ndarray):
        m = torch.as_tensor(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask.detach().cpu()
    else:
        raise InputError(f"{name} must be a PIL image, a list of them, a numpy array or a torch tensor, "
                         f"got {type(mask).__name__}")
    m = _binary(m, name)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4:
        raise InputError(f"{name} must be [H x W], [N x H x W] or [N x C x H x W], got shape {tuple(m.shape)}")
    N, C, H, W = image.shape
    if tuple(m.shape[2:]) != (H, W):
        raise InputError(f"{name} is {m.shape[3]}x{m.shape[2]} (width x height) but image is {W}x{H}: give a mask "
                         "of the image's size")
    if m.shape[0] not in (1, N) or m.shape[1] not in (1, C):
        raise InputError(f"{name} has shape {tuple(m.shape)}, which does not fit image {tuple(image.shape)}: give "
                         f"one mask per image or one for all (batch {N} or 1), with 1 or {C} channels")
    return m


def to_output(images: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray | list[PIL.Image.Image]:
    """float [N x C x H x W] in [-1, 1] -> DDPMPipeline's outputs: x / 2 + 0.5 clamped to [0, 1], as a
    [N x C x H x W] tensor ("pt"), a [N x H x W x C] numpy array ("np") or a list of PIL images ("pil")."""
    from diffusers.utils import numpy_to_pil

    check_output_type(output_type)
    images = (images / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return numpy_to_pil(array) if output_type == "pil" else array


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type {output_type!r} is not supported; choose one of {', '.join(OUTPUT_TYPES)}")


def _is_pil_list(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, PIL.Image.Image) for v in value)


def _as_list(value) -> list[PIL.Image.Image]:
    pictures = [value] if isinstance(value, PIL.Image.Image) else list(value)
    if len({picture.size for picture in pictures}) > 1:
        raise InputError(f"the images have different sizes {sorted({p.size for p in pictures})}: give one size")
    return pictures


def _pil_pixels(picture: PIL.Image.Image, channels: int, name: str) -> np.ndarray:
    """uint8 [H x W x C] of a PIL image whose mode has the model's channel count (mode "1" is read as "L")."""
    found = PIL_CHANNELS.get(picture.mode)
    if found is None:
        raise InputError(f"{name} has PIL mode {picture.mode!r}; give mode L (grey) or RGB, e.g. "
                         f"image.convert({'L' if channels == 1 else 'RGB'!r})")
    if found != channels:
        raise InputError(f"{name} has {found} channels (PIL mode {picture.mode}) but the model takes {channels}: "
                         f"convert it with image.convert({'L' if channels == 1 else 'RGB'!r})")
    pixels = np.asarray(picture.convert("L") if picture.mode == "1" else picture, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _binary(m: torch.Tensor, name: str) -> torch.Tensor:
    """bool mask from 0/1 values (0/255 for uint8); anything else is an InputError, never thresholded."""
    if m.dtype == torch.bool:
        return m
    if m.dtype == torch.uint8:
        values, scale = m.unique(), 255
    elif not m.is_complex():
        values, scale = m.double().unique(), 1
    else:
        raise InputError(f"{name} must hold real numbers, got {m.dtype}")
    bad = [v for v in values.tolist() if v not in (0, scale)]
    if bad:
        allowed = "0 and 255 (uint8 and PIL masks are pixel values)" if scale == 255 else "0 and 1"
        raise InputError(f"{name} must be binary: 1 keeps a pixel, 0 fills it in; it holds {_listing(bad)}, "
                         f"allowed: {allowed}")
    return m == scale


def _listing(values: list[float], limit: int = 4) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
