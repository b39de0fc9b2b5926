"""Turning one image file (or dataset row) into uint8 pixels at the training resolution, the way diffusers'
train_unconditional.py transforms it (Resize(resolution, bilinear) -> CenterCrop; the random crop and flip happen
per access in `ImageDataset`), and the reasons a file is skipped instead.

Every unusable file is skipped with a reason (`Skip`), never a crash: a bad file must not end a training run, and
`count_reasons` reports what was skipped and why.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# datasets' imagefolder reads captions/labels from these; they are data about the images, not skipped files.
METADATA_FILENAMES = frozenset({"metadata.jsonl", "metadata.csv", "metadata.parquet"})
IMAGE_HINT = "images (.png, .jpg, ...)"

# Skip reasons. A reason may carry a detail in parentheses; `summary()` groups by the part before " (".
NOT_AN_IMAGE = "not an image"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CORRUPT = "corrupt"
UNREADABLE = "unreadable"
UNSUPPORTED = "unsupported pixel format"

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class Skip(Exception):
    """This file or row cannot be used; `reason` says why (one of the reasons above, maybe with a detail in
    parentheses)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def prepare_image(data: bytes | Image.Image, resolution: int, center_crop: bool) -> tuple[np.ndarray, bool]:
    """Decode, check size, convert to L or RGB, resize the shorter side to resolution, maybe center crop.

    Returns (uint8 array [H x W] or [H x W x 3], is_grayscale); raises Skip with the reason.
    """
    image = decode_image(data)
    width, height = image.size
    if min(width, height) < resolution:
        raise Skip(f"smaller than --resolution {resolution} ({width}x{height})")
    pixels, grayscale = _to_l_or_rgb(image)
    return resize_and_crop(pixels, resolution, center_crop), grayscale


def decode_image(data: bytes | Image.Image) -> Image.Image:
    """Fully decoded first frame, EXIF orientation applied (as datasets' Image feature does)."""
    if isinstance(data, Image.Image):
        image = data
    else:
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Skip(NOT_AN_IMAGE) from None
        except Exception:  # PIL raises many types on a malformed header (SyntaxError, ValueError, struct.error...)
            raise Skip(CORRUPT) from None
    try:
        image.load()  # truncated/corrupt data raises here, not at open
        if image.getexif().get(ExifTags.Base.Orientation) is not None:
            image = ImageOps.exif_transpose(image)
    except Exception:  # as above: many types; one bad file must not end a training run, it is reported
        raise Skip(CORRUPT) from None
    return image


def _to_l_or_rgb(image: Image.Image) -> tuple[np.ndarray, bool]:
    """uint8 [H x W] for grayscale modes, [H x W x 3] otherwise; transparency composited over white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise Skip(f"{UNSUPPORTED} (mode {mode} with values outside 0..65535)")
        return np.rint(values / 257.0).astype(np.uint8), True  # 0..65535 -> 0..255 (65535 / 257 = 255)
    if mode == "F":
        raise Skip(f"{UNSUPPORTED} (mode F, floating point)")
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.uint8), True
    if mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"), dtype=np.uint8)
        return _over_white(la[..., 0], la[..., 1]), True
    if mode in ("RGBA", "RGBa", "P", "PA"):  # a palette may carry transparency; opaque pixels are unchanged
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        return _over_white(rgba[..., :3], rgba[..., 3:]), False
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8), False  # RGB, CMYK, YCbCr, LAB, HSV, ...
    except ValueError:
        raise Skip(f"{UNSUPPORTED} (mode {mode})") from None


def _over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha compositing over white: out = a * color + (1 - a) * 255, a = alpha / 255."""
    a = alpha.astype(np.float64) / 255.0
    return np.rint(a * color + (1.0 - a) * 255.0).astype(np.uint8)


def resize_and_crop(pixels: np.ndarray, resolution: int, center_crop: bool) -> np.ndarray:
    """torchvision Resize(resolution, bilinear) then, if center_crop, CenterCrop(resolution); numpy uint8."""
    height, width = pixels.shape[:2]
    # torchvision's _compute_resized_output_size: shorter side -> resolution, longer side truncated.
    if width <= height:
        new_width, new_height = resolution, int(resolution * height / width)
    else:
        new_width, new_height = int(resolution * width / height), resolution
    pixels = resize_exact(Image.fromarray(pixels), new_width, new_height, Image.Resampling.BILINEAR)
    if center_crop:
        # torchvision CenterCrop: offsets int(round((size - crop) / 2))
        top = int(round((new_height - resolution) / 2.0))
        left = int(round((new_width - resolution) / 2.0))
        pixels = pixels[top : top + resolution, left : left + resolution]
    return pixels


def decode_file(path: Path, resolution: int, center_crop: bool) -> tuple[np.ndarray, bool]:
    """One file of a folder -> `prepare_image`'s (pixels, is_grayscale); raises Skip with the reason: unreadable
    (the OSError's type), or prepare_image's, where a file named like an image that PIL cannot even identify is
    a damaged image (corrupt), not a stray file (not an image)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Skip(f"{UNREADABLE} ({type(error).__name__})") from None
    try:
        return prepare_image(data, resolution, center_crop)
    except Skip as skip:
        if skip.reason == NOT_AN_IMAGE and path.suffix.lower() in IMAGE_SUFFIXES:
            raise Skip(CORRUPT) from None
        raise


def to_tensors(kept: list[tuple[np.ndarray, bool]], num_channels: int | None) -> list[torch.Tensor]:
    """Decoded arrays -> uint8 tensors [C x H x W], C = num_channels or (1 if all grayscale else 3)."""
    if num_channels is None:
        num_channels = 1 if all(grayscale for _, grayscale in kept) else 3
    # copy: PIL's arrays are read-only
    return [torch.from_numpy(np.array(with_image_channels(pixels, grayscale, num_channels))) for pixels, grayscale in kept]


def with_image_channels(pixels: np.ndarray, grayscale: bool, num_channels: int) -> np.ndarray:
    """One decoded image (uint8 [H x W] gray or [H x W x 3]) -> uint8 [num_channels x H x W], C-contiguous:
    colour to gray by PIL's ITU-R 601-2 luma, gray to colour by repeating the channel."""
    if num_channels == 1 and not grayscale:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))  # ITU-R 601-2 luma, as PIL converts
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if num_channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def with_channels(images: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Grayscale uint8 [N x 1 x H x W] -> [N x num_channels x H x W] (repeated for 3)."""
    return images if num_channels == 1 else images.repeat(1, num_channels, 1, 1)


def resize_exact(image: Image.Image, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    if image.size != (width, height):
        image = image.resize((width, height), resample)
    return np.asarray(image, dtype=np.uint8)


def check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise InputError(f"--resolution {resolution!r} must be a positive integer (pixels, e.g. 16, 32, 64)")


def count_reasons(skipped: Sequence[tuple[str, str]]) -> str:
    """'3 corrupt, 2 not an image, 1 smaller than --resolution 16 (8x8)': counts per reason, most first."""
    counts: dict[str, int] = {}
    details: dict[str, list[str]] = {}
    for _, reason in skipped:
        kind, _, detail = reason.partition(" (")
        counts[kind] = counts.get(kind, 0) + 1
        detail = detail.rstrip(")")
        if detail and detail not in details.setdefault(kind, []):
            details[kind].append(detail)
    parts = []
    for kind, count in sorted(counts.items(), key=lambda item: -item[1]):  # stable: ties keep first-seen order
        shown = details.get(kind, [])
        suffix = f" ({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''})" if shown else ""
        parts.append(f"{count} {kind}{suffix}")
    return ", ".join(parts)

