"""`load_image_dataset`: the training images named by the command-line flags, decoded once into an `ImageDataset`.

Three sources:
  - "digits" (the default): the built-in digits' train split (`ddpm_hub.data.digits`);
  - a folder of images (`train_data_dir`), scanned recursively, with every unusable file skipped and reported;
  - a Hugging Face dataset (`dataset_name`): a Hub id, or a local directory written by `save_to_disk`.

The data path follows diffusers' examples/unconditional_image_generation/train_unconditional.py
(Resize(resolution, bilinear) -> CenterCrop or RandomCrop -> RandomHorizontalFlip -> ToTensor -> Normalize([0.5],
[0.5])), but without torchvision and without PIL in the training loop: the deterministic part (decode, mode
conversion, resize, center crop) runs once at load time into uint8 tensors (`ddpm_hub.data.decoding`); only the
random crop and flip run per access, drawn in torchvision's order from a generator seeded by (seed, epoch, image),
never from the global RNG (`ImageDataset`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import ImageDataset
from .decoding import (CORRUPT, IMAGE_HINT, IMAGE_SUFFIXES, METADATA_FILENAMES, NOT_AN_IMAGE, UNREADABLE, Skip,
                       check_resolution, count_reasons, prepare_image, to_tensors)
from .digits import DIGITS, load_digits
from .hub_datasets import find_image_column, open_dataset, row_image


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str | None = None,
    resolution: int = 16,
    center_crop: bool = False,
    random_flip: bool = False,
    num_channels: int | None = None,
    cache_dir: str | None = None,
    split: str = "train",
) -> ImageDataset:
    """Load the training images named by the CLI flags into an `ImageDataset`.

    dataset_name: "digits" (built-in; its "train" split, 1437 images, see `load_digits_split`), a Hugging Face
        Hub dataset id, or a local directory (one written by `save_to_disk`, else anything `load_dataset`
        reads, e.g. an imagefolder). "digits" means the built-in set even if a folder of that name exists;
        write "./digits" for the folder.
    train_data_dir: a folder of images, scanned recursively. Give dataset_name or train_data_dir, not both;
        with neither, "digits".
    image_column: the image column of a datasets Dataset; default "image", else the first Image column.
    resolution: the shorter side is resized to this (bilinear); images smaller than this are skipped.
    center_crop: crop the middle resolution x resolution once at load time; else a random crop per access.
    random_flip: flip horizontally with probability 0.5 per access.
    num_channels: 1 or 3; None follows the data (1 if every image is grayscale, else 3).
    cache_dir, split, dataset_config_name: passed to `datasets.load_dataset` (split also to a saved DatasetDict).
        For digits, split is "train" (1437 images), "test" (the 360 held-out ones the evaluation scores
        against, never trained on by default) or "all" (1797).
    """
    check_resolution(resolution)
    if num_channels not in (None, 1, 3):
        raise InputError(f"--num_channels {num_channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")
    if dataset_name is not None and train_data_dir is not None:
        raise InputError(
            f"--dataset_name {dataset_name!r} and --train_data_dir {train_data_dir!r} were both given: use one"
        )

    if train_data_dir is not None:
        return _load_folder(train_data_dir, resolution, center_crop, random_flip, num_channels)
    if dataset_name is None or dataset_name == DIGITS:
        return load_digits(resolution, random_flip, num_channels, split)
    return _load_hf_dataset(
        dataset_name, dataset_config_name, image_column, resolution, center_crop, random_flip, num_channels,
        cache_dir, split,
    )


def _load_folder(
    train_data_dir: str, resolution: int, center_crop: bool, random_flip: bool, num_channels: int | None
) -> ImageDataset:
    root = Path(train_data_dir)
    if not root.exists():
        raise InputError(f"--train_data_dir {train_data_dir!r} does not exist: give a folder of {IMAGE_HINT}")
    if not root.is_dir():
        raise InputError(f"--train_data_dir {train_data_dir!r} is not a directory: give a folder of {IMAGE_HINT}")

    paths, ignored = scan_folder(root)
    if not paths:
        what = "is empty" if not ignored else f"has no files besides {', '.join(sorted(ignored))}"
        raise InputError(f"--train_data_dir {train_data_dir!r} {what}: put {IMAGE_HINT} in it")

    kept, skipped, _ = decode_files(paths, resolution, center_crop)
    if not kept:
        raise InputError(
            f"--train_data_dir {train_data_dir!r}: none of the {len(paths)} files could be used "
            f"({count_reasons(skipped)}); expected {IMAGE_HINT} at least {resolution} pixels on the shorter side"
        )
    return ImageDataset(
        to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"folder {str(root)!r}",
        random_flip=random_flip,
        skipped=skipped,
    )


def scan_folder(root: Path) -> tuple[list[Path], set[str]]:
    """Every file under root, sorted; hidden files/folders and datasets' metadata files are left out (returned as
    the set of what was ignored)."""
    paths, ignored = [], set()
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]  # .git, .ipynb_checkpoints
        for filename in filenames:
            if filename.startswith(".") or filename in METADATA_FILENAMES:  # .DS_Store; captions for a later step
                ignored.add(filename if filename in METADATA_FILENAMES else "hidden files")
                continue
            paths.append(Path(directory) / filename)
    return sorted(paths), ignored


def decode_files(paths: list[Path], resolution: int, center_crop: bool
                 ) -> tuple[list[tuple[np.ndarray, bool]], list[tuple[str, str]], list[int]]:
    """Decode each file (`prepare_image`): (the decoded images, (path, reason) for each skipped file, the index in
    `paths` of each decoded image)."""
    kept, skipped, used = [], [], []
    for index, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as error:
            skipped.append((str(path), f"{UNREADABLE} ({type(error).__name__})"))
            continue
        try:
            kept.append(prepare_image(data, resolution, center_crop))
            used.append(index)
        except Skip as skip:
            # a file named like an image that PIL cannot even identify is a damaged image, not a stray file
            reason = CORRUPT if skip.reason == NOT_AN_IMAGE and path.suffix.lower() in IMAGE_SUFFIXES else skip.reason
            skipped.append((str(path), reason))
    return kept, skipped, used


def decode_rows(rows, column: str, resolution: int, center_crop: bool
                ) -> tuple[list[tuple[np.ndarray, bool]], list[tuple[str, str]], list[int]]:
    """Decode `column` of each row of a datasets Dataset (images undecoded, {"bytes", "path"}): (the decoded
    images, ("row i", reason) for each skipped row, the row index of each decoded image)."""
    kept, skipped, used = [], [], []
    for row_index, row in enumerate(rows):
        try:
            kept.append(prepare_image(row_image(row[column]), resolution, center_crop))
            used.append(row_index)
        except Skip as skip:
            skipped.append((f"row {row_index}", skip.reason))
    return kept, skipped, used


def undecoded_images(loaded, column: str):
    """The dataset with an Image `column` left as undecoded {"bytes", "path"} dicts, so a corrupt row is skipped
    by `decode_rows` rather than raising mid-iteration."""
    import datasets

    if isinstance(loaded.features[column], datasets.Image):
        return loaded.cast_column(column, datasets.Image(decode=False))
    return loaded


def _load_hf_dataset(
    dataset_name: str,
    dataset_config_name: str | None,
    image_column: str | None,
    resolution: int,
    center_crop: bool,
    random_flip: bool,
    num_channels: int | None,
    cache_dir: str | None,
    split: str,
) -> ImageDataset:
    flag = f"--dataset_name {dataset_name!r}"
    loaded, source = open_dataset(dataset_name, dataset_config_name, cache_dir, split)
    source += f" (split {split!r}, {len(loaded)} rows)"
    column = find_image_column(loaded, image_column, flag)
    loaded = undecoded_images(loaded, column)
    kept, skipped, _ = decode_rows(loaded.select_columns([column]), column, resolution, center_crop)
    if not kept:
        raise InputError(
            f"{flag}: none of the {len(loaded)} rows in column {column!r} could be used "
            f"({count_reasons(skipped) or 'the split is empty'}); "
            f"expected images at least {resolution} pixels on the shorter side"
        )
    return ImageDataset(
        to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"{source}, column {column!r}",
        random_flip=random_flip,
        skipped=skipped,
        unit="rows",
    )
