"""A second, independent view of sample quality on the digits: the Frechet distance in a PCA space of raw pixels.

The digits metrics (`ddpm_hub.evaluation.digits`) read images through a CNN the project trained; a default chosen by
one such number can fit that network's blind spots. This space has no learned network: the 32 leading principal
components of the train split's 16x16 pixels (an SVD in float64; the held-out digits are never used to fit it),
so it sees stroke thickness, blur, brightness and placement as they are. The distance is reported next to its
real-vs-real floor at the same N, as `distance_with_floor` computes it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .digits import DIGITS_RESOLUTION, to_digits_tensor
from .frechet import distance_with_floor

NUM_COMPONENTS = 32


@functools.lru_cache(maxsize=1)
def pixel_pca_basis() -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [256], components [32 x 256]) of the train split's pixels in [-1, 1], float64."""
    from ..data import load_digits_split
    from ..pixels import from_uint8

    pixels = from_uint8(load_digits_split(resolution=DIGITS_RESOLUTION)[0].images).double().flatten(1)  # 1437 x 256
    mean = pixels.mean(dim=0)
    _, _, right = torch.linalg.svd(pixels - mean, full_matrices=False)
    return mean, right[:NUM_COMPONENTS]


def pixel_features(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Digits in any layout `to_digits_tensor` reads -> their coordinates on the 32 components [N x 32], float64."""
    mean, components = pixel_pca_basis()
    return (to_digits_tensor(images, "images").double().flatten(1) - mean) @ components.T


def pixel_metrics(images: np.ndarray | torch.Tensor, seed: int = 0, draws: int = 10) -> dict[str, Any]:
    """Frechet distance of generated digits to the held-out digits in the pixel-PCA space, with its floor (the keys
    of `distance_with_floor`, plus num_samples)."""
    from ..data import load_digits_split
    from ..pixels import from_uint8

    train, held_out = load_digits_split(resolution=DIGITS_RESOLUTION)
    features = pixel_features(images)
    scores = distance_with_floor(features, pixel_features(from_uint8(held_out.images)),
                                 pixel_features(from_uint8(train.images)), seed, draws)
    return {**scores, "num_samples": features.shape[0]}
