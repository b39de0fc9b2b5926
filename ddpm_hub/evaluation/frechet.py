"""The Frechet distance between Gaussians fitted to two feature sets: the number FID and the digits metrics report."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import InputError


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor,
                     eps: float = 1e-6) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982; FID, Heusel et
    al. 2017, eq. 6): ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    features_a: [N_a x D], features_b: [N_b x D]; computed in float64 with unbiased covariances and
    scipy.linalg.sqrtm, keeping the real part of the square root (round-off leaves a tiny imaginary one). When
    S_a S_b is too close to singular for sqrtm to return finite values, eps is added to both diagonals, as
    pytorch-fid does. A covariance from N samples has rank at most N - 1, so it is singular whenever N <= D: the
    distance is still defined, but noisier and biased by the sample count; compare distances at equal N.
    """
    from scipy import linalg

    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature dimensions differ: features_a has D={a.shape[1]}, features_b has D={b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # a singular product is expected (N <= D, dead features); checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma_a.shape[0]) * eps
            covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    distance = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))
    return max(distance, 0.0)  # the true value is >= 0; round-off can leave -1e-12


def _as_features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if torch.is_tensor(features):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"{name} must be [N x D] (one row per sample), got shape {array.shape}")
    N, D = array.shape
    if N < 2:
        raise InputError(f"too few samples for a covariance: N={N} (need at least 2; use >= D={D} for a "
                         "full-rank estimate)")
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return array

