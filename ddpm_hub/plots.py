"""Pictures a person looks at during training: sample grids and the loss curve (PNG, written atomically)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path


def image_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2,
               scale: int = 1) -> Image.Image:
    """Tile (N, H, W, C) images in [0, 1] into one PIL image (nrow per row, white padding, nearest upscaling).

    Why ours: diffusers.utils.make_image_grid takes PIL images and needs rows x cols == N exactly, with no padding
    between tiles and a bilinear resize; 16x16 digits need a last partial row, a gap and crisp nearest upscaling."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        grid[top:top + h, left:left + w] = image
    pixels = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def save_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    """Save a PIL image as PNG under a temporary name, then rename it into place."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def save_loss_plot(steps: list[int], losses: list[float], path: str | os.PathLike, title: str = "training loss") -> Path:
    """Plot per-step losses (faint) and their exponential moving average (bold) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot(steps, losses, alpha=0.25, linewidth=0.8, label="per step")
        ax.plot(steps, _ema(losses), linewidth=1.8, label="moving average")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _ema(values: list[float], weight: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard's smoothing)."""
    smoothed, last = [], 0.0
    for i, value in enumerate(values, start=1):
        last = weight * last + (1 - weight) * value
        smoothed.append(last / (1 - weight**i))
    return smoothed
