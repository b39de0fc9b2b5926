"""`ImageDataset`: decoded images held as uint8 tensors, augmented per access without touching the global RNG.

Pixel convention: stored uint8 in 0..255; `ImageDataset[i]` is float32 in [-1, 1] (`ddpm_hub.pixels.from_uint8`,
the "integers in {0, ..., 255} scaled linearly to [-1, 1]" of Ho et al. 2020, section 3.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..pixels import from_uint8
from .decoding import count_reasons


class PackedImages(Sequence):
    """Images of different shapes packed one after another in one flat uint8 tensor (a decoded store's memory-mapped
    pixels): item i is a view uint8 [C x H_i x W_i] of it, nothing is copied.

    flat: uint8 [sum of C * H_i * W_i]; channels: C; shapes: int [N x 2], each image's (H, W).
    """

    def __init__(self, flat: torch.Tensor, channels: int, shapes: np.ndarray):
        assert flat.dtype == torch.uint8 and flat.ndim == 1, (flat.dtype, flat.shape)
        self.flat = flat
        self.channels = channels
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        sizes = channels * self.shapes[:, 0] * self.shapes[:, 1]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        assert self.offsets[-1] == flat.numel(), (int(self.offsets[-1]), flat.numel())

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        index %= len(self)
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        height, width = (int(v) for v in self.shapes[index])
        return self.flat[start:stop].view(self.channels, height, width)


class ImageDataset(torch.utils.data.Dataset):
    """Images held as uint8 tensors; item i is a float32 tensor [C x resolution x resolution] in [-1, 1].

    `images` is one uint8 tensor [N x C x resolution x resolution] when every image is already square at
    `resolution`, else a list of uint8 tensors [C x resolution x W] or [C x H x resolution] (shorter side at
    `resolution`), or `PackedImages` of such, from which `__getitem__` takes a random resolution x resolution crop.
    The tensor may be a memory-mapped decoded store's (`ddpm_hub.data.store`): nothing here writes to `images`.

    Augmentation never touches the global RNG: item i of epoch e draws its crop and flip from a generator
    seeded by (seed, e, i), in torchvision's order (RandomCrop.get_params: top, then left;
    RandomHorizontalFlip: rand < 0.5). A DataLoader may prefetch, skip or reorder fetches (accelerate prefetches
    one batch ahead, and a resumed run skips batches), and the images and the training noise stay the same:
    exact resume depends on it. Call `set_epoch` once per epoch (`train_ddpm.py` does).
    """

    def __init__(
        self,
        images: torch.Tensor | PackedImages | Sequence[torch.Tensor],
        *,
        resolution: int,
        source: str,
        random_flip: bool = False,
        skipped: Sequence[tuple[str, str]] = (),
        labels: torch.Tensor | None = None,
        unit: str = "files",
        store: Path | None = None,
    ):
        assert len(images) > 0, "an ImageDataset needs at least one image"
        num_channels = _check_images(images, resolution)
        if isinstance(images, PackedImages):
            self.images: torch.Tensor | PackedImages | list[torch.Tensor] = images
        elif isinstance(images, torch.Tensor):
            self.images = images
        elif all(image.shape[1:] == (resolution, resolution) for image in images):
            self.images = torch.stack(list(images))
        else:
            self.images = list(images)
        if labels is not None:
            assert labels.shape == (len(images),), f"labels must be [{len(images)}], got {tuple(labels.shape)}"

        self.resolution = resolution
        self.num_channels = num_channels
        self.source = source
        self.random_flip = random_flip
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.labels = labels
        self.unit = unit  # what a skipped entry is called in `summary()`: "files" or "rows"
        self.store = store  # the decoded store the images are memory-mapped from, if any
        self.seed, self.epoch = 0, 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Choose the augmentation draws of this epoch (and, optionally, the run's seed)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)


    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        """A whole batch at once [B x C x R x R] float32 in [-1, 1] (torch's DataLoader calls this when present)."""
        if isinstance(self.images, torch.Tensor) and not self.random_flip:
            return from_uint8(self.images[torch.as_tensor(indices)])
        return from_uint8(torch.stack([self._augmented(i) for i in indices]))

    def _augmented(self, index: int) -> torch.Tensor:
        return crop_and_flip(self.images[index], self.resolution, self.random_flip, self.seed, self.epoch, index)

    def first(self, count: int) -> torch.Tensor:
        """The first `count` images (all if fewer) as this epoch's batch, float32 [count x C x R x R] in [-1, 1]."""
        return self.__getitems__(list(range(min(count, len(self)))))

    def summary(self) -> str:
        """One line: `contents()`, then the decoded store the images are memory-mapped from, if any."""
        store = f"; memory-mapped from the decoded store {self.store}" if self.store is not None else ""
        return self.contents() + store

    def contents(self) -> str:
        """What the dataset holds: how many images, their shape, where from, what was skipped and why (the same
        line whether the images are memory-mapped from a store or held in memory)."""
        channels = "1 channel" if self.num_channels == 1 else f"{self.num_channels} channels"
        line = f"loaded {len(self)} images ({channels}, {self.resolution}x{self.resolution}) from {self.source}"
        if self.skipped:
            line += f"; skipped {len(self.skipped)} {self.unit}: {count_reasons(self.skipped)}"
        return line



def crop_and_flip(image: torch.Tensor, resolution: int, random_flip: bool, seed: int, epoch: int,
                  index: int) -> torch.Tensor:
    """uint8 [C x H x W] (min(H, W) == resolution) -> a random resolution x resolution crop, flipped horizontally
    with probability 1/2 if random_flip, uint8 [C x R x R]; a view when nothing is flipped.

    The draws come from a generator seeded by (seed, epoch, index), in torchvision's order (RandomCrop.get_params:
    top, then left; RandomHorizontalFlip: rand < 0.5); a square image draws no crop.
    """
    R = resolution
    _, H, W = image.shape
    if (H, W) == (R, R) and not random_flip:
        return image
    generator = augmentation_generator(seed, epoch, index)
    if (H, W) != (R, R):
        top = int(torch.randint(0, H - R + 1, size=(1,), generator=generator).item())
        left = int(torch.randint(0, W - R + 1, size=(1,), generator=generator).item())
        image = image[:, top : top + R, left : left + R]
    if random_flip and torch.rand(1, generator=generator).item() < 0.5:
        image = image.flip(-1)
    return image


def augmentation_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator image `index` of `epoch` draws its crop and flip from: a distinct, reproducible stream per
    (seed, epoch, index), independent of the global RNG and of what was fetched before."""
    return torch.Generator().manual_seed(hash((int(seed), int(epoch), int(index))) & 0x7FFF_FFFF_FFFF_FFFF)


def _check_images(images: torch.Tensor | PackedImages | Sequence[torch.Tensor], resolution: int) -> int:
    """uint8, one channel count, shorter side `resolution` (square for a tensor); returns the channel count. A tensor
    or PackedImages is checked from its shapes alone, without reading its pixels (a memory-mapped store stays on
    disk until a batch asks for it)."""
    if isinstance(images, torch.Tensor):
        assert images.dtype == torch.uint8, f"images must be uint8, got {images.dtype}"
        assert images.ndim == 4 and images.shape[2:] == (resolution, resolution), \
            f"a tensor of images must be [N x C x {resolution} x {resolution}], got {tuple(images.shape)}"
        return images.shape[1]
    if isinstance(images, PackedImages):
        shorter = images.shapes.min(axis=1)
        assert (shorter == resolution).all(), f"shorter side must be {resolution}, got {int(shorter.min())}.."
        return images.channels
    num_channels = images[0].shape[0]
    for image in images:
        C, H, W = image.shape
        assert image.dtype == torch.uint8, f"images must be uint8, got {image.dtype}"
        assert C == num_channels, f"every image needs {num_channels} channel(s), got {C}"
        assert min(H, W) == resolution, f"shorter side must be {resolution}, got {H}x{W}"
    return num_channels
