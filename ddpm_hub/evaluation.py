"""Sample quality and likelihood of a trained DDPM, offline: nothing here downloads weights.

Three measures (issue 4):
  - digits metrics for 1-channel 16x16 models: a small CNN the project trains itself on the digits train split
    (`load_digits_classifier`, cached as safetensors) gives a 64-d feature space and class predictions; generated
    images are scored by the Frechet distance to held-out real digits in that space (a "Frechet digits distance",
    the FID recipe of Heusel et al. 2017 with a domain classifier in place of Inception), next to the distance
    between two sets of real digits of the same size (the floor the metric cannot go below at that sample
    count), the classifier's confidence and the class coverage;
  - `inception_fid` for other data, only with a local Inception file the user gives;
  - `heldout_bits_per_dim`: the variational bound (`likelihood.bits_per_dim`) on held-out digits.

Pixel conventions, checked where images enter (never guessed from the values): float (N, C, H, W) in [-1, 1]
(the training convention, data.py), float (N, H, W, C) in [0, 1] (`DDPMPipeline(output_type="np")`), or uint8
0..255 in either layout.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

LOGGER = logging.getLogger(__name__)

NUM_CLASSES = 10
DIGITS_RESOLUTION = 16
CLASSIFIER_FILENAME = "digits_classifier-v1.safetensors"
CLASSIFIER_FORMAT = "ddpm_hub.DigitsClassifier/v1"  # bump with the architecture or the training recipe
CACHE_ENV = "DDPM_HUB_CACHE"
FID_NEEDS_WEIGHTS = ("FID needs Inception weights: pass --inception_weights PATH (a local pt_inception-2015-12-05 "
                     "file); nothing is downloaded")


# ------------------------------------------------------------------------------------- the digits classifier
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
    from .data import load_digits_split

    train, _ = load_digits_split(resolution=DIGITS_RESOLUTION)
    images = train.images.to(torch.float32) / 127.5 - 1.0  # N x 1 x 16 x 16 in [-1, 1]
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

    from .atomic import atomic_path

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
            LOGGER.warning("digits classifier cache %s is unusable (%s); retraining", path, _one_line(error))
    model = train_digits_classifier(seed=0)
    with atomic_path(path) as tmp:
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": CLASSIFIER_FORMAT, "seed": "0"})
    return model


def _cache_format(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("format")


# ------------------------------------------------------------------------------------------ Frechet distance
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


# --------------------------------------------------------------------------------------------- digits metrics
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
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise InputError(f"draws must be a positive integer, got {draws!r}")
    classifier = classifier if classifier is not None else load_digits_classifier()
    classifier.eval()
    train_features = None
    if reference is None:
        from .data import load_digits_split

        train, held_out = load_digits_split(resolution=DIGITS_RESOLUTION)
        reference = held_out.images.to(torch.float32) / 127.5 - 1.0
        train_features = _classify(classifier, train.images.to(torch.float32) / 127.5 - 1.0)[1]
    else:
        reference = to_digits_tensor(reference, "reference")
        if reference.shape[0] < 2:
            raise InputError(f"reference needs at least 2 images, got {reference.shape[0]}")

    N, M = x.shape[0], reference.shape[0]
    logits, features = _classify(classifier, x)
    reference_features = _classify(classifier, reference)[1]
    if 2 * N <= M:
        floor_reference = "held-out vs held-out (disjoint random subsets)"
    elif train_features is not None:
        floor_reference = "train vs held-out (N > half the held-out split)"
    else:
        floor_reference = f"none (reference has {M} images; a disjoint floor needs {2 * N})"
    generator = torch.Generator().manual_seed(seed)
    fds, floors = [], []
    for _ in range(draws):
        order = torch.randperm(M, generator=generator)
        r1 = reference_features[order[:min(N, M)]]
        fds.append(frechet_distance(features, r1))
        if 2 * N <= M:
            floors.append(frechet_distance(reference_features[order[N:2 * N]], r1))
        elif train_features is not None:
            pick = torch.randperm(len(train_features), generator=generator)[:N]
            floors.append(frechet_distance(train_features[pick], r1))

    probabilities = logits.softmax(dim=1)
    histogram = torch.bincount(probabilities.argmax(dim=1), minlength=NUM_CLASSES)
    fd, fd_floor = float(np.mean(fds)), float(np.mean(floors)) if floors else None
    return {
        "fd": fd,
        "fd_floor": fd_floor,
        "fd_ratio": fd / fd_floor if fd_floor else None,
        "fd_std": float(np.std(fds)),
        "fd_floor_std": float(np.std(floors)) if floors else None,
        "floor_reference": floor_reference,
        "confidence": float(probabilities.max(dim=1).values.mean()),
        "classes_covered": int((histogram > 0).sum()),
        "smallest_class_share": float(histogram.min()) / N,
        "class_histogram": [int(count) for count in histogram],
        "num_samples": N,
        "num_reference": min(N, M),
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
        x = x.to(torch.float32) / 127.5 - 1.0
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


# ------------------------------------------------------------------------------------ FID with Inception-v3
def inception_fid(images_a: np.ndarray | torch.Tensor, images_b: np.ndarray | torch.Tensor,
                  weights_path: str | os.PathLike | None = None, batch_size: int = 50) -> float:
    """FID (Heusel et al. 2017): `frechet_distance` between the 2048-d pool features of Inception-v3, using
    torch-fidelity's TF-compatible Inception (the network of the original FID code).

    images_a, images_b: any layout `to_nchw` accepts, 1 or 3 channels (grayscale is repeated to RGB), any size
        (resized to 299x299 inside the network); quantised to uint8 as the FID code expects; N >= 2 each.
    weights_path: a local Inception file, see `load_inception`. Required: nothing is downloaded.
    """
    extractor = load_inception(weights_path)
    a, b = to_nchw(images_a, "images_a"), to_nchw(images_b, "images_b")
    return frechet_distance(inception_features(extractor, a, batch_size), inception_features(extractor, b, batch_size))


def load_inception(weights_path: str | os.PathLike | None):
    """torch-fidelity's FeatureExtractorInceptionV3 (pip install torch-fidelity, which needs torchvision) with
    weights from a local file, read safely.

    weights_path: the FID Inception weights, pt_inception-2015-12-05-6726825d.pth of pytorch-fid (the same
        file as torch-fidelity's weights-inception-2015-12-05-6726825d.pth), or a .safetensors file with the same
        tensors. Read with safetensors or torch.load(weights_only=True), so the file cannot run code; torch-fidelity's
        constructor only reads files with a full unpickler (or downloads), so the checked tensors are re-saved to a
        private temporary file for it.
    """
    import tempfile

    if weights_path is None:
        raise InputError(FID_NEEDS_WEIGHTS)
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise InputError(f"--inception_weights {str(weights_path)!r} is not a file: {FID_NEEDS_WEIGHTS}")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except (ImportError, RuntimeError, OSError) as error:  # a torchvision built for another torch fails to load
        raise InputError("FID needs the torch-fidelity package (pip install torch-fidelity; it needs torchvision), "
                         f"which could not be imported: {_one_line(error)}") from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = _one_line(error)[:300]
        raise InputError(f"--inception_weights {str(path)!r} is not a readable weights file: {reason}") from None
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise InputError(f"--inception_weights {str(path)!r} does not hold a state dict of tensors")
    with tempfile.TemporaryDirectory() as folder:
        checked = Path(folder) / "inception.pt"
        torch.save(state_dict, checked)
        try:
            return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(checked))
        except RuntimeError as error:  # load_state_dict: missing or unexpected keys, wrong shapes
            raise InputError(f"--inception_weights {str(path)!r} is not the FID Inception-v3 "
                             f"(pt_inception-2015-12-05): {_one_line(error)[:300]}") from None


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """[N x C x H x W] in [-1, 1], C = 1 or 3 -> uint8 RGB -> Inception pool features [N x 2048]."""
    pixels = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if pixels.shape[1] == 1:
        pixels = pixels.repeat(1, 3, 1, 1)
    return torch.cat([extractor(pixels[i:i + batch_size])[0] for i in range(0, len(pixels), batch_size)])


# -------------------------------------------------------------------------------------------------- sampling
SAMPLERS = ("ddpm", "ddim", "dpm")
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++"}


def sampling_pipeline(unet, scheduler, kind: str = "ddpm"):
    """A DDPMPipeline with the sampler asked for, built from the model's own scheduler config: "ddpm" (the
    scheduler itself), "ddim" (diffusers' DDIMScheduler, eta 0) or "dpm" (DPMSolverMultistepScheduler, DPM-Solver++
    2M). DDIM and DPM-Solver++ are ODE samplers: they use only the mean, so for a learned-variance model the
    pipeline's UNet returns only its first C channels (diffusers' DPM-Solver slices [:, :3], right for RGB only)."""
    from diffusers import DDIMScheduler, DDPMPipeline, DPMSolverMultistepScheduler

    if kind not in SAMPLERS:
        raise InputError(f"sampler {kind!r} is not supported; choose one of {', '.join(SAMPLERS)}")
    if kind == "ddpm":
        return DDPMPipeline(unet=unet, scheduler=scheduler)
    sampler_class = DDIMScheduler if kind == "ddim" else DPMSolverMultistepScheduler
    # as a user's swap on a loaded folder sees it: a scheduler built in memory lists the keys it left at their
    # defaults, and from_config would give the new class its own defaults for those (timestep_spacing "linspace"
    # for DPM-Solver, where the saved config says "leading")
    config = {key: value for key, value in scheduler.config.items() if key != "_use_default_values"}
    learned = config.get("variance_type") in ("learned", "learned_range")
    if learned:
        config["variance_type"] = None
    try:
        sampler = sampler_class.from_config(config)
    except (NotImplementedError, ValueError) as error:
        raise InputError(f"sampler {kind!r} cannot use this model's scheduler config: {_one_line(error)}") from None
    return DDPMPipeline(unet=_MeanOnly(unet) if learned else unet, scheduler=sampler)


class _MeanOnly(nn.Module):
    """A learned-variance UNet2DModel seen through its first C output channels (the epsilon/x0/v prediction):
    [N x 2C x H x W] -> [N x C x H x W]. Keeps config, dtype and device, which DDPMPipeline reads."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, timestep, **kwargs):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        output = self.unet(sample, timestep, **kwargs).sample
        return UNet2DOutput(sample=output[:, :sample.shape[1]])


@torch.no_grad()
def generate_images(pipeline, num_samples: int, num_inference_steps: int, batch_size: int = 64, seed: int = 0,
                    progress: bool = True) -> torch.Tensor:
    """num_samples images from one seeded generator, in batches of batch_size (each with its tqdm bar unless
    progress=False). Returns [N x C x H x W] in [-1, 1], quantised to 8 bits as a saved PNG would be (real
    images are 8-bit too)."""
    config = pipeline.scheduler.config
    if (type(pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler" and config.timestep_spacing == "leading"
            and num_inference_steps >= config.num_train_timesteps):
        raise InputError(f"DPM-Solver++ cannot take all {config.num_train_timesteps} steps with 'leading' timestep "
                         f"spacing (diffusers indexes past its sigmas); use at most {config.num_train_timesteps - 1}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batches = range(0, num_samples, batch_size)
    chunks = []
    for index, start in enumerate(batches):
        pipeline.set_progress_bar_config(desc=f"sampling {index + 1}/{len(batches)}", unit="step",
                                         disable=not progress)
        out = pipeline(batch_size=min(batch_size, num_samples - start), generator=generator,
                       num_inference_steps=num_inference_steps, output_type="np")
        chunks.append(torch.from_numpy(out.images))
    images = torch.cat(chunks).permute(0, 3, 1, 2)  # N x C x H x W in [0, 1]
    return (images * 255).round() / 127.5 - 1.0


def evaluate_model(unet, scheduler, *, num_samples: int = 256, sampler: str = "dpm", num_inference_steps: int = 25,
                   bpd_timesteps: int | None = 50, bpd_images: torch.Tensor | None = None, bpd_num_images: int = 64,
                   digits: bool = True,
                   seed: int = 0, batch_size: int = 128, classifier: DigitsClassifier | None = None) -> dict[str, float]:
    """The evaluation run during training (train_ddpm.py --eval_epochs): flat float metrics for tensorboard and
    the model card.

    unet, scheduler: the model (its EMA weights if any) and its DDPMScheduler.
    digits: score num_samples images drawn with `sampler` in num_inference_steps (`digits_metrics`); only for
        1-channel 16x16 models of the built-in digits.
    bpd_images: real images [M x C x H x W] in [-1, 1] for bits/dim, all of them in one batch (None: the first
        bpd_num_images held-out digits), with bpd_timesteps terms (None: the full bound).
    Returns fd, fd_floor, fd_ratio, confidence, classes_covered, smallest_class_share, sampling_seconds (digits
    only), bits_per_dim and bits_per_dim_se.
    """
    import time

    metrics: dict[str, float] = {}
    was_training = unet.training
    unet.eval()
    if digits:
        started = time.perf_counter()
        images = generate_images(sampling_pipeline(unet, scheduler, sampler), num_samples, num_inference_steps,
                                 batch_size, seed, progress=False)
        metrics["sampling_seconds"] = time.perf_counter() - started
        scores = digits_metrics(images, classifier=classifier, seed=seed)
        for key in ("fd", "fd_floor", "fd_ratio", "confidence", "classes_covered", "smallest_class_share"):
            metrics[key] = scores[key]
    count = bpd_num_images if bpd_images is None else len(bpd_images)
    bound = heldout_bits_per_dim((unet, scheduler), num_images=count, num_timesteps=bpd_timesteps, seed=seed,
                                 images=bpd_images)
    metrics["bits_per_dim"], metrics["bits_per_dim_se"] = bound["mean"], bound["standard_error"]
    unet.train(was_training)
    return metrics


# ---------------------------------------------------------------------------------------------- bits per dim
def load_pipeline_parts(model_dir: str | os.PathLike):
    """(unet, scheduler) of a DDPMPipeline folder: diffusers' UNet2DModel from `unet/` and our DDPMScheduler from
    `scheduler/` (the model's own config, never re-typed). One-line InputError for a missing folder or one that
    is not a pipeline folder."""
    from diffusers import UNet2DModel

    from .scheduling_ddpm import DDPMScheduler

    folder = Path(model_dir)
    if not folder.exists():
        raise InputError(f"--model {str(model_dir)!r} does not exist: give a DDPMPipeline folder (what "
                         "train_ddpm.py writes)")
    if not folder.is_dir():
        raise InputError(f"--model {str(model_dir)!r} is not a folder: give a DDPMPipeline folder")
    missing = [name for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
               if not (folder / name).is_file()]
    if missing:
        raise InputError(f"--model {str(model_dir)!r} is not a DDPMPipeline folder: it lacks {', '.join(missing)}")
    try:
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"--model {str(model_dir)!r} could not be loaded: {_one_line(error)[:300]}") from None
    return unet.eval(), scheduler


@torch.no_grad()
def heldout_bits_per_dim(pipeline_or_dir, num_images: int = 64, num_timesteps: int | None = None, seed: int = 0,
                         images: torch.Tensor | None = None, progress: bool = False) -> dict[str, Any]:
    """The variational bound (`likelihood.bits_per_dim`) on held-out digits, in bits/dim.

    pipeline_or_dir: a DDPMPipeline folder (unet/ and scheduler/ loaded as `load_pipeline_parts` does), an
        object with `.unet` and `.scheduler` (a DDPMPipeline), or a (unet, scheduler) pair. A scheduler of another
        class has its config read into our DDPMScheduler, which evaluates the bound on the model's T-step chain.
    num_images: the first this many images of the held-out split (ordered as `load_digits_split` gives them),
        or of `images`; evaluated as one batch.
    num_timesteps: None for the full bound over all T timesteps, or K (2 <= K < T) for the unbiased K-term
        estimate of `bits_per_dim`.
    seed: draws the timesteps and the noise.
    images: real images [M x C x H x W] in [-1, 1] to use instead of the held-out digits.

    Returns mean (bits/dim over the images), standard_error (of the mean: the image-to-image spread and, for K
    terms, the timestep sampling, added in quadrature), standard_error_images, standard_error_timesteps, prior
    (mean L_prior), decoder (mean L_0), num_images, num_timesteps (K, or T for the full bound) and
    num_train_timesteps (T).
    """
    from .likelihood import bits_per_dim
    from .scheduling_ddpm import DDPMScheduler

    if isinstance(pipeline_or_dir, (str, os.PathLike)):
        unet, scheduler = load_pipeline_parts(pipeline_or_dir)
    elif isinstance(pipeline_or_dir, tuple):
        unet, scheduler = pipeline_or_dir
    else:
        unet, scheduler = pipeline_or_dir.unet, pipeline_or_dir.scheduler
    if not isinstance(scheduler, DDPMScheduler):
        scheduler = DDPMScheduler.from_config(scheduler.config)
    if images is None:
        from .data import load_digits_split

        images = load_digits_split(resolution=DIGITS_RESOLUTION)[1].images.to(torch.float32) / 127.5 - 1.0
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 2 <= num_images <= len(images):
        raise InputError(f"num_images must be an integer between 2 and {len(images)}, got {num_images!r}")
    expected = (unet.config.in_channels, *_sample_size(unet.config))
    if tuple(images.shape[1:]) != expected:
        raise InputError(f"the model takes {expected[0]}-channel {expected[1]}x{expected[2]} images; the bits/dim "
                         f"images are {tuple(images.shape[1:])}")
    T = scheduler.config.num_train_timesteps
    if num_timesteps is not None and num_timesteps != T and not 2 <= num_timesteps < T:
        raise InputError(f"bits/dim timesteps must be 'full' ({T}) or between 2 and {T - 1}, got {num_timesteps}")

    x = images[:num_images].to(device=unet.device, dtype=unet.dtype)
    unet.eval()
    generator = torch.Generator().manual_seed(seed)
    result = bits_per_dim(unet, scheduler, x, num_timesteps=num_timesteps, generator=generator, progress=progress)
    total = result.total.double()
    se_images = float(total.std() / math.sqrt(len(total)))
    return {
        "mean": result.mean(),
        "standard_error": math.hypot(se_images, result.mean_standard_error),
        "standard_error_images": se_images,
        "standard_error_timesteps": result.mean_standard_error,
        "prior": float(result.prior.mean()),
        "decoder": float(result.decoder.mean()),
        "num_images": num_images,
        "num_timesteps": result.num_timesteps,
        "num_train_timesteps": T,
    }


def _sample_size(config) -> tuple[int, int]:
    size = config.sample_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
