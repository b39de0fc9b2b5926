"""The digits metrics: a small CNN the project trains itself gives a feature space and class predictions for
1-channel 16x16 digits, and generated images are scored against held-out real digits in it.

`DigitsClassifier` is trained on the digits train split only (`load_digits_classifier`, cached as safetensors);
`digits_metrics` scores generated images by the Frechet distance to held-out real digits in its 64-d feature
space (a "Frechet digits distance": the FID recipe of Heusel et al. 2017 with a domain classifier in place of
Inception), next to the distance between two sets of real digits of the same size (the floor the metric cannot go
below at that sample count), the classifier's confidence and the class coverage.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, one_line
from ..pixels import from_uint8, to_nchw
from .frechet import distance_with_floor

LOGGER = logging.getLogger(__name__)

NUM_CLASSES = 10
DIGITS_RESOLUTION = 16
CLASSIFIER_FILENAME = "digits_classifier-v1.safetensors"
CLASSIFIER_FORMAT = "ddpm_hub.DigitsClassifier/v1"  # bump with the architecture or the training recipe
CACHE_ENV = "DDPM_HUB_CACHE"


class DigitsClassifier(nn.Module):
    """A small CNN for 16x16 digits: [N x 1 x 16 x 16] in [-1, 1] -> logits [N x 10].

    conv 3x3 (16) -> ReLU -> maxpool 2 -> conv 3x3 (32) -> ReLU -> maxpool 2 -> linear 512 -> 64 -> ReLU (the
    features) -> linear 64 -> 10. About 38k parameters; trains in 2-5 seconds on a CPU.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations the last layer reads: [N x 1 x 16 x 16] -> [N x 64]."""
        N = x.shape[0]
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # N x 16 x 8 x 8
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # N x 32 x 4 x 4
        return F.relu(self.fc1(x.reshape(N, -1)))  # N x 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def train_digits_classifier(seed: int = 0, epochs: int = 12, batch_size: int = 64,
                            learning_rate: float = 3e-3) -> DigitsClassifier:
    """Train `DigitsClassifier` on the digits train split only (`load_digits_split`, seed 0), deterministically
    for a given seed and thread count; the held-out split is never seen. Augmentation: random shifts of up to
    one pixel, so that slightly off-centre samples are still read. Leaves torch's global RNG as it was.

    Trains with gradients whatever the caller's grad mode (no_grad, inference_mode): `digits_metrics`, a no_grad
    function, trains the classifier on first use, when the cache is empty."""
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_digits_classifier(seed, epochs, batch_size, learning_rate)


def _fit_digits_classifier(seed: int, epochs: int, batch_size: int, learning_rate: float) -> DigitsClassifier:
    from ..data import load_digits_split

    train, _ = load_digits_split(resolution=DIGITS_RESOLUTION)
    images = from_uint8(train.images)  # N x 1 x 16 x 16 in [-1, 1]
    labels = train.labels
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            batch = _random_shift(images[index], generator)
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


def _random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image [N x C x H x W] by up to max_shift pixels in x and y, filling with background (-1)."""
    N, _, H, W = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (N, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(offsets.tolist())])


def classifier_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the classifier is cached: cache_dir, else $DDPM_HUB_CACHE, else ~/.cache/ddpm_hub."""
    folder = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or "~/.cache/ddpm_hub"
    return Path(folder).expanduser() / CLASSIFIER_FILENAME


def load_digits_classifier(cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> DigitsClassifier:
    """The digits classifier (seed 0), from the safetensors cache; trained and cached (atomically) when the file
    is missing, damaged or from another version, or when retrain=True. Never unpickles anything."""
    from safetensors.torch import load_file, save_file

    from ..atomic import atomic_path

    path = classifier_cache_path(cache_dir)
    if path.exists() and not retrain:
        try:
            model = DigitsClassifier()
            found = _cache_format(path)
            if found != CLASSIFIER_FORMAT:
                raise ValueError(f"format {found!r}, expected {CLASSIFIER_FORMAT!r}")
            model.load_state_dict(load_file(path))
            return model.eval().requires_grad_(False)
        except Exception as error:  # any damage (truncated, garbage, wrong tensors): retrain, never crash
            LOGGER.warning("digits classifier cache %s is unusable (%s); retraining", path, one_line(error))
    model = train_digits_classifier(seed=0)
    with atomic_path(path) as tmp:
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": CLASSIFIER_FORMAT, "seed": "0"})
    return model


def _cache_format(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("format")



@torch.no_grad()
def digits_metrics(images: np.ndarray | torch.Tensor, classifier: DigitsClassifier | None = None,
                   reference: torch.Tensor | None = None, seed: int = 0, draws: int = 10) -> dict[str, Any]:
    """Score N generated 16x16 digits with the digits classifier; returns a JSON-serialisable dict.

    images: float [N x 1 x 16 x 16] in [-1, 1], float [N x 16 x 16 x 1] in [0, 1] (DDPMPipeline's "np"
        output), or uint8 0..255 in either layout; N >= 2.
    classifier: default `load_digits_classifier()` (cached).
    reference: real digits [M x 1 x 16 x 16] in [-1, 1] that the classifier never trained on; default the
        held-out split of `load_digits_split` (360 images).
    seed: draws the reference subsets.
    draws: how many reference draws the two distances are averaged over. One draw of a few hundred images moves
        the distance by tens of percent (real digits against real digits at N = 256 range over 0.5x-1.6x of one
        floor draw); averaging both distances over the same draws takes the reference's share of that noise out,
        leaving the generated set's own.

    Keys:
        fd: Frechet distance in the classifier's 64-d feature space between the N images and R1, N reference
            images drawn at random (all M if N > M), averaged over the draws.
        fd_floor: the same distance between two real sets of those sizes, averaged over the same draws: R2 against
            R1, where R2 is another N reference images disjoint from R1 when 2N <= M ("held-out vs held-out"),
            else (default reference only) N digits from the train split ("train vs held-out"; the classifier has
            seen these, so this floor is a little optimistic). None when a custom reference is too small for a
            disjoint pair. A generator as good as the data scores fd close to fd_floor; the distance's bias grows
            as N shrinks, so compare fd with fd_floor, and runs with each other only at equal N. fd punishes a
            collapse onto few modes hardly less than garbage: 100 copies of one real digit score further than 100
            images of uniform noise (about 610 vs 410 at N = 100, floor 24); confidence and coverage tell those
            two apart.
        fd_ratio: fd / fd_floor (None without a floor).
        fd_std, fd_floor_std: the spread of the two over the draws.
        floor_reference: which of the two floors was computed.
        confidence: mean over images of the largest softmax probability (real digits: about 0.97 held-out).
        classes_covered: how many of the 10 classes the images are predicted as.
        smallest_class_share: the smallest fraction of images predicted as any one class (0 if one is missing;
            0.1 for a perfectly balanced set).
        class_histogram: images predicted as each class 0..9.
        num_samples, num_reference, num_draws: N, the size of R1, and the draws.
    """
    x = to_digits_tensor(images, "images")
    if x.shape[0] < 2:
        raise InputError(f"digits_metrics needs at least 2 images, got {x.shape[0]}")
    classifier = classifier if classifier is not None else load_digits_classifier()
    classifier.eval()
    train_features = None
    if reference is None:
        from ..data import load_digits_split

        train, held_out = load_digits_split(resolution=DIGITS_RESOLUTION)
        reference = from_uint8(held_out.images)
        train_features = _classify(classifier, from_uint8(train.images))[1]
    else:
        reference = to_digits_tensor(reference, "reference")
        if reference.shape[0] < 2:
            raise InputError(f"reference needs at least 2 images, got {reference.shape[0]}")

    logits, features = _classify(classifier, x)
    distances = distance_with_floor(features, _classify(classifier, reference)[1], train_features, seed, draws)
    probabilities = logits.softmax(dim=1)
    histogram = torch.bincount(probabilities.argmax(dim=1), minlength=NUM_CLASSES)
    return {
        **{key: distances[key] for key in ("fd", "fd_floor", "fd_ratio", "fd_std", "fd_floor_std", "floor_reference")},
        "confidence": float(probabilities.max(dim=1).values.mean()),
        "classes_covered": int((histogram > 0).sum()),
        "smallest_class_share": float(histogram.min()) / x.shape[0],
        "class_histogram": [int(count) for count in histogram],
        "num_samples": x.shape[0],
        "num_reference": distances["num_reference"],
        "num_draws": draws,
    }


def _classify(classifier: DigitsClassifier, x: torch.Tensor, batch_size: int = 512):
    """(logits [N x 10], features [N x 64]) in batches."""
    logits, features = [], []
    for start in range(0, x.shape[0], batch_size):
        f = classifier.features(x[start:start + batch_size])
        features.append(f)
        logits.append(classifier.fc2(f))
    return torch.cat(logits), torch.cat(features)


def to_digits_tensor(images: np.ndarray | torch.Tensor, name: str = "images") -> torch.Tensor:
    """Any accepted layout (see the module docstring) -> float32 [N x 1 x 16 x 16] in [-1, 1]."""
    x = to_nchw(images, name)
    if tuple(x.shape[1:]) != (1, DIGITS_RESOLUTION, DIGITS_RESOLUTION):
        raise InputError(f"{name} must be 1-channel 16x16 digits ([N x 1 x 16 x 16] or [N x 16 x 16 x 1]), got "
                         f"shape {tuple(x.shape)}")
    return x




def held_out_digits() -> torch.Tensor:
    """The 360 held-out digits (`load_digits_split`'s second part) as float32 [360 x 1 x 16 x 16] in [-1, 1]: the
    reference the metrics and the bits/dim evaluation score against, never trained on."""
    from ..data import load_digits_split

    return from_uint8(load_digits_split(resolution=DIGITS_RESOLUTION)[1].images)
