"""`--streaming`: a dataset too large for the disk read as a stream (datasets' `IterableDataset`), each row decoded as
it arrives, never stored.

The pixels are the store's and the in-memory path's (`decoding.prepare_image`, `decoding.with_image_channels`, the
crop and flip of `dataset.crop_and_flip`, seeded by (seed, epoch, position in the stream)). What a stream cannot
give: a length (train with --max_train_steps), a look at every image before training (channels: --num_channels, 3
when not given), a global shuffle (datasets shuffles the shard order and a buffer of `SHUFFLE_BUFFER` rows, reseeded
each epoch), and an exact resume: a resumed run restarts the stream at the beginning of its epoch, so the images
after the checkpoint are not those an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import InputError
from ..pixels import from_uint8
from .dataset import crop_and_flip
from .decoding import Skip, check_resolution, count_reasons, prepare_image, with_image_channels
from .hub_datasets import find_image_column, open_stream, row_image

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 1000  # rows; datasets' default for IterableDataset.shuffle
NOT_EXACT = ("--streaming: a resumed run restarts the stream at the beginning of its epoch, so resume is not exact "
             "(the images after the checkpoint differ from an uninterrupted run's)")
_LOGGED_SKIPS = 10  # skipped rows named one by one; after that, counted


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """Images of a datasets IterableDataset, decoded as they stream in; yields float32 [C x R x R] in [-1, 1].

    stream: rows whose `column` holds undecoded images ({"bytes", "path"}), raw bytes or paths. Unusable rows are
    skipped with `decoding`'s reasons, counted in `skipped` (named in the log up to a point) and in `summary()`.
    Iterate in one process (the DataLoader's, num_workers=0): accelerate's dispatcher hands each process its slice.
    """

    def __init__(self, stream: Any, column: str, *, resolution: int, center_crop: bool, random_flip: bool,
                 num_channels: int, source: str):
        self.stream = stream
        self.column = column
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.num_channels = num_channels
        self.source = source
        self.skipped: list[tuple[str, str]] = []
        self.seed, self.epoch = 0, 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """The epoch's shuffle of the stream and its augmentation draws (and, optionally, the run's seed)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def __iter__(self) -> Iterator[torch.Tensor]:
        stream = self.stream.shuffle(seed=self.seed, buffer_size=SHUFFLE_BUFFER)
        stream.set_epoch(self.epoch)
        yield from self._images(stream, self.epoch, augment=True)

    def first(self, count: int) -> torch.Tensor:
        """The first `count` usable images of the stream in its stored order (epoch 0's crops, no flips), float32
        [count x C x R x R] in [-1, 1] (fewer if the stream is shorter): what bits/dim is measured on."""
        images = []
        for image in self._images(self.stream, 0, augment=False):
            images.append(image)
            if len(images) == count:
                break
        return torch.stack(images)

    def _images(self, stream: Any, epoch: int, augment: bool) -> Iterator[torch.Tensor]:
        position = 0
        for row_number, row in enumerate(stream):
            try:
                pixels, grayscale = prepare_image(row_image(row[self.column]), self.resolution, self.center_crop)
            except Skip as skip:
                self._skip(f"stream position {row_number} of epoch {epoch}", skip.reason)
                continue
            image = torch.from_numpy(with_image_channels(pixels, grayscale, self.num_channels).copy())
            flip = self.random_flip and augment
            yield from_uint8(crop_and_flip(image, self.resolution, flip, self.seed, epoch, position))
            position += 1

    def _skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        if len(self.skipped) <= _LOGGED_SKIPS:
            logger.warning("--streaming: skipped %s: %s%s", name, reason,
                           " (further skips are counted in the summary)" if len(self.skipped) == _LOGGED_SKIPS else "")

    def summary(self) -> str:
        """One line: what is streamed, the image shape, what has been skipped so far, and that resume is not exact."""
        channels = "1 channel" if self.num_channels == 1 else f"{self.num_channels} channels"
        line = (f"streaming images ({channels}, {self.resolution}x{self.resolution}) from {self.source}, decoded as "
                f"they arrive")
        if self.skipped:
            line += f"; skipped {len(self.skipped)} rows so far: {count_reasons(self.skipped)}"
        return f"{line}; a resumed run is not exact (--streaming)"


def load_streaming_image_dataset(
    dataset_name: str,
    dataset_config_name: str | None = None,
    image_column: str | None = None,
    resolution: int = 16,
    center_crop: bool = False,
    random_flip: bool = False,
    num_channels: int | None = None,
    cache_dir: str | None = None,
    split: str = "train",
) -> StreamingImageDataset:
    """`dataset_name` (a Hub id, a local folder load_dataset reads, or a save_to_disk folder) as a
    `StreamingImageDataset`; the arguments are `load_image_dataset`'s. Logs that resume is not exact."""
    import datasets

    check_resolution(resolution)
    if num_channels not in (None, 1, 3):
        raise InputError(f"--num_channels {num_channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")
    flag = f"--dataset_name {dataset_name!r}"
    stream, source = open_stream(dataset_name, dataset_config_name, cache_dir, split)
    if stream.features is None:  # a streamed format whose columns are only known once read
        if image_column is None:
            raise InputError(f"{flag} streams rows whose columns are not known before they are read: name the image "
                             "column with --image_column")
        column = image_column
    else:
        column = find_image_column(stream, image_column, flag)
    if stream.features is not None and isinstance(stream.features[column], datasets.Image):
        # undecoded {"bytes", "path"} dicts, so that a corrupt row is skipped rather than raising mid-iteration
        stream = stream.cast_column(column, datasets.Image(decode=False))
    if num_channels is None:
        logger.info("--streaming: the channels cannot follow the data (a stream is not seen ahead): 3 channels "
                    "(pass --num_channels 1 for grayscale)")
    logger.warning(NOT_EXACT)
    return StreamingImageDataset(stream, column, resolution=resolution, center_crop=center_crop,
                                 random_flip=random_flip, num_channels=num_channels or 3,
                                 source=f"{source} (split {split!r}, streamed), column {column!r}")
