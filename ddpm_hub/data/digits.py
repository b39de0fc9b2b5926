"""The built-in digits: scikit-learn's 1797 real 8x8 handwritten digits (shipped with scikit-learn, no download),
upscaled to the training resolution, 1 channel, labels kept; split once into the 1437 images training uses and the
360 held out for the evaluation."""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, one_line
from .dataset import ImageDataset
from .decoding import check_resolution, resize_exact, with_channels

DIGITS = "digits"
DIGITS_COUNT = 1797  # len(sklearn.datasets.load_digits().images)
DIGITS_SPLITS = ("train", "test", "all")


def load_digits_split(
    resolution: int = 16, held_out_fraction: float = 0.2, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Split the 1797 digits into (train, held_out), stratified by label, the same split for the same seed.

    Uses sklearn.model_selection.train_test_split(stratify=labels, random_state=seed); with the defaults,
    1437 train and 360 held-out images, each class in both in proportion. Both datasets carry `labels`.
    """
    from sklearn.model_selection import train_test_split

    check_resolution(resolution)
    if not 0.0 < held_out_fraction < 1.0:
        raise InputError(f"held_out_fraction {held_out_fraction!r} must be strictly between 0 and 1")
    images, labels = _digits_tensors(resolution)
    try:
        train_index, held_out_index = train_test_split(
            np.arange(len(labels)), test_size=held_out_fraction, stratify=labels.numpy(), random_state=seed
        )
    except ValueError as error:  # too few images on one side to hold every one of the 10 classes
        raise InputError(f"held_out_fraction {held_out_fraction!r} is unusable: {one_line(error)}") from None

    def subset(index: np.ndarray, name: str) -> ImageDataset:
        index = torch.from_numpy(np.sort(index))
        source = f"digits (scikit-learn, {name} split: {len(index)} of {len(labels)} images, seed {seed})"
        return ImageDataset(images[index], resolution=resolution, source=source, labels=labels[index])

    return subset(train_index, "train"), subset(held_out_index, "held-out")



def load_digits(resolution: int, random_flip: bool, num_channels: int | None, split: str) -> ImageDataset:
    """The built-in digits: the train or test split of `load_digits_split`, or all 1797."""
    if split not in DIGITS_SPLITS:
        raise InputError(f"digits split {split!r} does not exist; choose one of {', '.join(DIGITS_SPLITS)}")
    if split == "all":
        images, labels = _digits_tensors(resolution)
        source = f"digits (scikit-learn, all {len(images)} images)"
    else:
        part = load_digits_split(resolution)[0 if split == "train" else 1]
        images, labels, source = part.images, part.labels, part.source
    return ImageDataset(with_channels(images, num_channels or 1), resolution=resolution, source=source,
                        random_flip=random_flip, labels=labels)


@functools.lru_cache(maxsize=1)
def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 [1797 x 8 x 8] in 0..255 (v * 255 / 16, rounded) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert digits.images.shape == (DIGITS_COUNT, 8, 8), digits.images.shape
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    pixels.setflags(write=False)
    labels = digits.target.astype(np.int64)
    labels.setflags(write=False)
    return pixels, labels


def _digits_tensors(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits upscaled to resolution (PIL bicubic): uint8 [1797 x 1 x R x R] and labels [1797]."""
    pixels, labels = _digits_uint8()
    # Bicubic keeps strokes crisper than bilinear when 8x8 is upscaled (compared on grids of both); PIL clips
    # its overshoot to 0..255, so the range stays exact.
    bicubic = Image.Resampling.BICUBIC
    resized = np.stack([resize_exact(Image.fromarray(p), resolution, resolution, bicubic) for p in pixels])
    return torch.from_numpy(resized).unsqueeze(1), torch.from_numpy(labels.copy())

