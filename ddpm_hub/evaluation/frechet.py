"""The Frechet distance between Gaussians fitted to two feature sets: the number FID and the digits metrics report;
and the same distance against a real reference next to the floor two real sets of the same size score."""

from __future__ import annotations

import warnings
from typing import Any

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



def distance_with_floor(features: torch.Tensor, reference: torch.Tensor, spare: torch.Tensor | None = None,
                        seed: int = 0, draws: int = 10) -> dict[str, Any]:
    """The Frechet distance of N generated feature vectors to a real reference, next to the floor: the distance
    between two real sets of the same size, which no generator can beat at that N (the distance's bias grows as N
    shrinks, so compare runs only at equal N, and each with its floor).

    features: [N x D] of the generated images; reference: [M x D] of real images the feature map never trained on;
    spare: [K x D] of other real images (e.g. the train split), the floor's second set when the reference is too
    small for two disjoint sets of N.
    draws: both distances are averaged over this many random reference draws (seeded by `seed`): one draw of a few
        hundred images moves the distance by tens of percent; averaging both over the same draws takes the
        reference's share of that noise out, leaving the generated set's own.

    Returns fd (to R1, N reference rows drawn at random, all M if N > M), fd_floor (R2 against R1: R2 another N
    reference rows disjoint from R1 when 2N <= M, else N spare rows; None without either), fd_ratio, fd_std and
    fd_floor_std (spread over the draws), floor_reference (which floor), num_reference (the size of R1), num_draws.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise InputError(f"draws must be a positive integer, got {draws!r}")
    N, M = features.shape[0], reference.shape[0]
    if 2 * N <= M:
        floor_reference = "held-out vs held-out (disjoint random subsets)"
    elif spare is not None:
        floor_reference = "train vs held-out (N > half the held-out split)"
    else:
        floor_reference = f"none (reference has {M} images; a disjoint floor needs {2 * N})"
    generator = torch.Generator().manual_seed(seed)
    fds, floors = [], []
    for _ in range(draws):
        order = torch.randperm(M, generator=generator)
        r1 = reference[order[:min(N, M)]]
        fds.append(frechet_distance(features, r1))
        if 2 * N <= M:
            floors.append(frechet_distance(reference[order[N:2 * N]], r1))
        elif spare is not None:
            pick = torch.randperm(len(spare), generator=generator)[:N]
            floors.append(frechet_distance(spare[pick], r1))
    fd, fd_floor = float(np.mean(fds)), float(np.mean(floors)) if floors else None
    return {"fd": fd, "fd_floor": fd_floor, "fd_ratio": fd / fd_floor if fd_floor else None,
            "fd_std": float(np.std(fds)), "fd_floor_std": float(np.std(floors)) if floors else None,
            "floor_reference": floor_reference, "num_reference": min(N, M), "num_draws": draws}
