"""`load_image_dataset`: the training images named by the command-line flags, decoded once into an `ImageDataset`.

Three sources:
  - "digits" (the default): the built-in digits' train split (`ddpm_hub.data.digits`), held in memory (1437 images
    of 16x16: smaller than a store's bookkeeping, and upscaled in well under a second);
  - a folder of images (`train_data_dir`), scanned recursively, with every unusable file skipped and reported;
  - a Hugging Face dataset (`dataset_name`): a Hub id, or a local directory written by `save_to_disk`.

A folder or a dataset is decoded once into a decoded store (`ddpm_hub.data.store`) on every core and memory-mapped
by every process of this and later runs; `no_data_cache` decodes it in this process into its own memory instead,
as before the store existed; `streaming` reads a Hub dataset as a stream (`ddpm_hub.data.streaming`).

The data path follows diffusers' examples/unconditional_image_generation/train_unconditional.py
(Resize(resolution, bilinear) -> CenterCrop or RandomCrop -> RandomHorizontalFlip -> ToTensor -> Normalize([0.5],
[0.5])), but without torchvision and without PIL in the training loop: the deterministic part (decode, mode
conversion, resize, center crop) runs once at load time into uint8 tensors (`ddpm_hub.data.decoding`); only the
random crop and flip run per access, drawn in torchvision's order from a generator seeded by (seed, epoch, image),
never from the global RNG (`ImageDataset`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dataset import ImageDataset
from .decode_pool import DecodeSettings, available_cores, decode_files, decode_rows
from .decoding import (IMAGE_HINT, METADATA_FILENAMES, Skip, check_resolution, count_reasons, decode_file, prepare_image,
                       to_tensors)
from .digits import DIGITS, load_digits
from .hub_datasets import dataset_location, find_image_column, open_dataset, row_image
from .store import StoreKey, data_cache_location, dataset_content, folder_content, load_or_decode


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
    data_cache_dir: str | None = None,
    no_data_cache: bool = False,
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
    data_cache_dir: where the decoded stores live (None: `store.default_data_cache_dir()`).
    no_data_cache: decode into this process's memory, every run, in one thread (the images are the same bytes).
    """
    check_resolution(resolution)
    stores = data_cache_location(data_cache_dir, no_data_cache)
    if num_channels not in (None, 1, 3):
        raise InputError(f"--num_channels {num_channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")
    if dataset_name is not None and train_data_dir is not None:
        raise InputError(
            f"--dataset_name {dataset_name!r} and --train_data_dir {train_data_dir!r} were both given: use one"
        )

    if train_data_dir is not None:
        if stores is None:
            return _load_folder(train_data_dir, resolution, center_crop, random_flip, num_channels)
        return _store_folder(train_data_dir, resolution, center_crop, random_flip, num_channels, stores)
    if dataset_name is None or dataset_name == DIGITS:
        return load_digits(resolution, random_flip, num_channels, split)
    return _load_hf_dataset(
        dataset_name, dataset_config_name, image_column, resolution, center_crop, random_flip, num_channels,
        cache_dir, split, stores,
    )


def _folder_files(train_data_dir: str) -> tuple[Path, list[Path]]:
    """The folder and its files (sorted); InputError if it is missing, not a folder, or has no candidate files."""
    root = Path(train_data_dir)
    if not root.exists():
        raise InputError(f"--train_data_dir {train_data_dir!r} does not exist: give a folder of {IMAGE_HINT}")
    if not root.is_dir():
        raise InputError(f"--train_data_dir {train_data_dir!r} is not a directory: give a folder of {IMAGE_HINT}")
    paths, ignored = scan_folder(root)
    if not paths:
        what = "is empty" if not ignored else f"has no files besides {', '.join(sorted(ignored))}"
        raise InputError(f"--train_data_dir {train_data_dir!r} {what}: put {IMAGE_HINT} in it")
    return root, paths


def _none_usable(train_data_dir: str, count: int, skipped: list[tuple[str, str]], resolution: int) -> InputError:
    return InputError(
        f"--train_data_dir {train_data_dir!r}: none of the {count} files could be used "
        f"({count_reasons(skipped)}); expected {IMAGE_HINT} at least {resolution} pixels on the shorter side"
    )


def _load_folder(
    train_data_dir: str, resolution: int, center_crop: bool, random_flip: bool, num_channels: int | None
) -> ImageDataset:
    root, paths = _folder_files(train_data_dir)
    kept, skipped, _ = decode_listed_files(paths, resolution, center_crop)
    if not kept:
        raise _none_usable(train_data_dir, len(paths), skipped, resolution)
    return ImageDataset(
        to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"folder {str(root)!r}",
        random_flip=random_flip,
        skipped=skipped,
    )


def _store_folder(train_data_dir: str, resolution: int, center_crop: bool, random_flip: bool,
                  num_channels: int | None, stores: Path) -> ImageDataset:
    """The folder through its decoded store: decoded on every core the first time, memory-mapped every time."""
    root, paths = _folder_files(train_data_dir)
    key = StoreKey(name=root.resolve().name, content=folder_content(root, paths),
                   source={"kind": "folder", "root": str(root.resolve()), "resolution": resolution,
                           "center_crop": center_crop, "num_channels": num_channels})
    settings = DecodeSettings(resolution, center_crop, num_channels or 3)
    stored = load_or_decode(
        stores, key, [path.relative_to(root).as_posix() for path in paths],
        lambda todo: decode_files([paths[i] for i in todo], settings, workers=available_cores(),
                                  desc=f"decoding {train_data_dir}"),
        resolution=resolution, num_channels=num_channels,
        on_empty=lambda skipped: _none_usable(train_data_dir, len(paths), skipped, resolution))
    return ImageDataset(stored.images, resolution=resolution, source=f"folder {str(root)!r}", random_flip=random_flip,
                        skipped=[(str(root / name), reason) for name, reason in stored.skipped], store=stored.folder)


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
    stores: Path | None,
) -> ImageDataset:
    flag = f"--dataset_name {dataset_name!r}"
    loaded, source = open_dataset(dataset_name, dataset_config_name, cache_dir, split)
    source += f" (split {split!r}, {len(loaded)} rows)"
    content = dataset_content(loaded) if stores is not None else None
    if stores is not None and content is None:
        logging.getLogger(__name__).info("%s is held in memory by datasets (no Arrow files to key a decoded store "
                                         "by): decoding it into this process's memory", flag)

    column = find_image_column(loaded, image_column, flag)
    loaded = undecoded_images(loaded, column)

    def none_usable(skipped: list[tuple[str, str]]) -> InputError:
        return InputError(
            f"{flag}: none of the {len(loaded)} rows in column {column!r} could be used "
            f"({count_reasons(skipped) or 'the split is empty'}); "
            f"expected images at least {resolution} pixels on the shorter side"
        )

    if content is not None:  # through the decoded store
        key = StoreKey(name=Path(dataset_name).name or dataset_name, content=content,
                       source={"kind": "dataset", "name": dataset_location(dataset_name),
                               "config": dataset_config_name, "split": split, "column": column,
                               "resolution": resolution, "center_crop": center_crop, "num_channels": num_channels})
        settings = DecodeSettings(resolution, center_crop, num_channels or 3)
        stored = load_or_decode(
            stores, key, [f"row {i}" for i in range(len(loaded))],
            lambda todo: decode_rows(loaded, column, todo, settings, workers=available_cores(),
                                     desc=f"decoding {dataset_name}"),
            resolution=resolution, num_channels=num_channels, on_empty=none_usable)
        return ImageDataset(stored.images, resolution=resolution, source=f"{source}, column {column!r}",
                            random_flip=random_flip, skipped=stored.skipped, unit="rows", store=stored.folder)

    kept, skipped, _ = decode_listed_rows(loaded.select_columns([column]), column, resolution, center_crop)
    if not kept:
        raise none_usable(skipped)
    return ImageDataset(
        to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"{source}, column {column!r}",
        random_flip=random_flip,
        skipped=skipped,
        unit="rows",
    )


# ------------------------------------------------------------------- in this process (no store), also for labelled
def decode_listed_files(paths: list[Path], resolution: int, center_crop: bool
                        ) -> tuple[list[tuple[np.ndarray, bool]], list[tuple[str, str]], list[int]]:
    """Decode each file in this process (`decoding.decode_file`): (the decoded images, (path, reason) for each
    skipped file, the index in `paths` of each decoded image)."""
    kept, skipped, used = [], [], []
    for index, path in enumerate(paths):
        try:
            kept.append(decode_file(path, resolution, center_crop))
            used.append(index)
        except Skip as skip:
            skipped.append((str(path), skip.reason))
    return kept, skipped, used


def decode_listed_rows(rows, column: str, resolution: int, center_crop: bool
                       ) -> tuple[list[tuple[np.ndarray, bool]], list[tuple[str, str]], list[int]]:
    """Decode `column` of each row of a datasets Dataset (images undecoded, {"bytes", "path"}) in this process:
    (the decoded images, ("row i", reason) for each skipped row, the row index of each decoded image)."""
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
    by the decoder rather than raising mid-iteration."""
    import datasets

    if isinstance(loaded.features[column], datasets.Image):
        return loaded.cast_column(column, datasets.Image(decode=False))
    return loaded
