"""FID (Heusel et al. 2017) in Inception-v3's feature space, for data other than the digits: only with a local
weights file the user gives, read safely; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, one_line
from ..pixels import to_nchw, to_uint8
from .frechet import frechet_distance

FID_NEEDS_WEIGHTS = ("FID needs Inception weights: pass --inception_weights PATH (a local pt_inception-2015-12-05 "
                     "file); nothing is downloaded")



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
                         f"which could not be imported: {one_line(error)}") from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = one_line(error, 300)
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
                             f"(pt_inception-2015-12-05): {one_line(error, 300)}") from None


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """[N x C x H x W] in [-1, 1], C = 1 or 3 -> uint8 RGB -> Inception pool features [N x 2048]."""
    pixels = to_uint8(images)
    if pixels.shape[1] == 1:
        pixels = pixels.repeat(1, 3, 1, 1)
    return torch.cat([extractor(pixels[i:i + batch_size])[0] for i in range(0, len(pixels), batch_size)])

