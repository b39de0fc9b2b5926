"""The pixel conventions, and the one place that converts between them.

Models see float [N x C x H x W] in [-1, 1]: 8-bit integers in {0, ..., 255} scaled linearly, x / 127.5 - 1
(Ho et al. 2020, DDPM, section 3.3). Data is stored as uint8 0..255 (`ddpm_hub.data`). Pipelines return
`output_type="np"` images as float [N x H x W x C] in [0, 1]. `to_nchw` reads any of these, deciding by the
layout and dtype it is given, never by guessing from the values.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import InputError


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]: x / 127.5 - 1 (DDPM section 3.3). Any shape."""
    return images.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 0..255, rounded to the nearest level and clipped. Any shape."""
    return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_nchw(images: np.ndarray | torch.Tensor, name: str = "images") -> torch.Tensor:
    """float [N x C x H x W] in [-1, 1], float [N x H x W x C] in [0, 1], or uint8 0..255 in either layout ->
    float32 [N x C x H x W] in [-1, 1]. The layout is the one whose channel axis has 1 or 3 entries (channels
    first when both do); values outside the layout's range are an error, never rescaled."""
    x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images.detach().cpu()
    if x.ndim != 4:
        raise InputError(f"{name} must be a batch [N x C x H x W] or [N x H x W x C], got shape {tuple(x.shape)}")
    channels_first = x.shape[1] in (1, 3)
    if not channels_first and x.shape[3] not in (1, 3):
        raise InputError(f"{name} has shape {tuple(x.shape)}: no channel axis of 1 or 3 in position 1 or 3")
    if x.dtype == torch.uint8:
        x = from_uint8(x)
    elif x.is_floating_point():
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise InputError(f"{name} holds NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        expected = (-1.0, 1.0) if channels_first else (0.0, 1.0)
        if low < expected[0] - 1e-4 or high > expected[1] + 1e-4:
            layout = "[N x C x H x W] must be in [-1, 1]" if channels_first else "[N x H x W x C] must be in [0, 1]"
            raise InputError(f"{name}: float {layout} (pass uint8 for 0..255), got values in [{low:.3g}, {high:.3g}]")
        if channels_first and low >= 0.0:
            warnings.warn(f"{name}: every value is >= 0, as in [0, 1] data (DDPMPipeline output_type='pt'); "
                          "[N x C x H x W] floats are read as [-1, 1]: pass x * 2 - 1", stacklevel=4)
        if not channels_first:
            x = x * 2.0 - 1.0
    else:
        raise InputError(f"{name} must be float or uint8, got {x.dtype}")
    return x if channels_first else x.permute(0, 3, 1, 2).contiguous()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> the nearest of the 256 8-bit levels, still in [-1, 1]: what a saved PNG holds, so
    generated images are scored as real (8-bit) images are."""
    return from_uint8(to_uint8(images))
