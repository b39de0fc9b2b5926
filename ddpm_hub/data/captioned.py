"""Captioned image datasets for text-to-image training: images decoded once into uint8 tensors, with their captions.

One entry point, `load_captioned_dataset`, for four sources:
  - "shapes" (the default): the built-in generated shapes (`ddpm_hub.shapes.generate_shapes`), captioned
    "a red circle", 5000 images unless `num_images` says otherwise;
  - a folder (`train_data_dir`) in datasets' imagefolder layout: images plus a `metadata.jsonl` (or
    `metadata.csv`) whose rows give each image's `file_name` (relative to the metadata file's folder) and caption;
  - a local directory written by `save_to_disk`;
  - a Hugging Face dataset id (or a local folder that `datasets.load_dataset` reads).

Everything about the pixels is `ddpm_hub.data`'s: the same decoding, resize, crops, skip reasons and per-(seed,
epoch, index) augmentation (`ImageDataset`); this module adds the caption column. A batch is a dict, as
diffusers' train_text_to_image.py hands its text encoder and U-Net: {"pixel_values": float [B x C x H x W] in
[-1, 1], "captions": list of B strings}. An empty caption "" is kept: it is the unconditional prompt that
classifier-free guidance trains on.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .dataset import ImageDataset
from .decode_pool import DecodeSettings, available_cores, decode_files, decode_rows
from .decoding import (CORRUPT, IMAGE_SUFFIXES, NOT_AN_IMAGE, UNREADABLE, Skip, check_resolution, count_reasons,
                       prepare_image, to_tensors)
from .hub_datasets import dataset_location, find_image_column, open_dataset, row_image
from .store import StoreKey, data_cache_location, dataset_content, folder_content, load_or_decode
from .shapes import MIN_RESOLUTION, generate_shapes

SHAPES = "shapes"
SHAPES_DEFAULT_COUNT = 5000
DEFAULT_CAPTION_COLUMN = "text"  # datasets' imagefolder and diffusers' train_text_to_image.py use "text"
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_NAME = "file_name"  # the imagefolder column that names the image

# Skip reasons added to data.py's (summary() groups by the part before " (").
NOT_LISTED = "not listed in metadata"
MISSING_FILE = "missing file"
CAPTION_NOT_TEXT = "caption not text"

# A caption as stored: one string, or several to choose from (a list in the data, e.g. COCO's five per image).
Caption = str | tuple[str, ...]
_CAPTION_STREAM = 1  # tells the caption draws' generator seed apart from the augmentation's


class CaptionedImageDataset(ImageDataset):
    """An `ImageDataset` whose images carry captions; item i is {"pixel_values": [C x R x R] in [-1, 1],
    "caption": str} and a batch {"pixel_values": [B x C x R x R] in [-1, 1], "captions": list[str]}.

    captions: one per image, a string ("" = unconditional) or a tuple of strings to choose from. For a tuple,
    each access draws one uniformly (as train_text_to_image.py's random.choice) from a generator seeded by
    (seed, epoch, index) on a stream of its own, so the crop and flip are exactly ImageDataset's and the
    global RNG is never touched; `set_epoch` changes the draw.

    `__getitems__` returns the batch dict itself, so give a DataLoader `collate_fn=lambda batch: batch` (as
    train_ddpm.py does); torch's default collate expects a list of items.
    """

    def __init__(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        captions: Sequence[Caption],
        *,
        resolution: int,
        source: str,
        random_flip: bool = False,
        skipped: Sequence[tuple[str, str]] = (),
        labels: torch.Tensor | None = None,
        unit: str = "files",
        caption_source: str = "captions",
        store: Path | None = None,
    ):
        super().__init__(images, resolution=resolution, source=source, random_flip=random_flip, skipped=skipped,
                         labels=labels, unit=unit, store=store)
        assert len(captions) == len(self.images), f"{len(captions)} captions for {len(self.images)} images"
        for caption in captions:
            options = (caption,) if isinstance(caption, str) else caption
            assert isinstance(options, tuple) and options and all(isinstance(c, str) for c in options), caption
        self.captions: list[Caption] = list(captions)
        self.caption_source = caption_source

    def caption(self, index: int) -> str:
        """The caption of image `index` for this (seed, epoch): the string, or one drawn from its tuple."""
        caption = self.captions[index]
        if isinstance(caption, str):
            return caption
        seed = hash((self.seed, self.epoch, int(index), _CAPTION_STREAM)) & 0x7FFF_FFFF_FFFF_FFFF
        choice = torch.randint(len(caption), (1,), generator=torch.Generator().manual_seed(seed))
        return caption[int(choice.item())]

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {"pixel_values": batch["pixel_values"][0], "caption": batch["captions"][0]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch: {"pixel_values": float32 [B x C x R x R] in [-1, 1], "captions": B strings}."""
        return {"pixel_values": super().__getitems__(indices), "captions": [self.caption(i) for i in indices]}

    def contents(self) -> str:
        """One line: ImageDataset's (how many, shape, source, skips), then where the captions came from and
        how many are distinct, empty, or several to choose from."""
        options = [(c,) if isinstance(c, str) else c for c in self.captions]
        distinct = len({text for texts in options for text in texts})
        parts = [f"{distinct} distinct"]
        empty = sum(all(not text.strip() for text in texts) for texts in options)
        if empty:
            parts.append(f"{empty} empty (unconditional)")
        several = sum(len(texts) > 1 for texts in options)
        if several:
            parts.append(f"{several} with several to draw from")
        return f"{super().contents()}; captions from {self.caption_source} ({', '.join(parts)})"


def load_captioned_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = DEFAULT_CAPTION_COLUMN,
    resolution: int = 32,
    center_crop: bool = False,
    random_flip: bool = False,
    num_channels: int | None = None,
    cache_dir: str | None = None,
    num_images: int | None = None,
    seed: int = 0,
    split: str = "train",
    data_cache_dir: str | None = None,
    no_data_cache: bool = False,
) -> CaptionedImageDataset:
    """Load the captioned training images named by the CLI flags into a `CaptionedImageDataset`.

    dataset_name: "shapes" (built-in, the default), a directory written by `save_to_disk`, or a Hugging Face
        Hub dataset id (a local folder that is not a saved dataset goes to `datasets.load_dataset` too).
        "shapes" means the built-in set even if a folder of that name exists; write "./shapes" for the folder.
    train_data_dir: a folder in imagefolder layout: images (searched recursively) and a metadata.jsonl (or
        metadata.csv, in that folder or any subfolder) with `file_name` and the caption column; file names are
        relative to the metadata file's folder. Images no metadata row lists, and rows whose file is missing,
        are skipped and reported. Give dataset_name or train_data_dir, not both.
    image_column: the image column of a datasets Dataset; default "image", else the first Image column.
    caption_column: the caption column (default "text"). A caption may be a string, missing/None (read as "",
        the unconditional prompt, and kept), or a list of strings, from which each epoch draws one (see
        `CaptionedImageDataset`); a row holding anything else is skipped and reported. Captions that are empty
        in every row are an error.
    resolution, center_crop, random_flip: as `ddpm_hub.data.load_image_dataset` (shapes are drawn at resolution,
        at least 16).
    num_channels: 1 or 3; None follows the data. Shapes are always 3 (their captions name colours).
    num_images: shapes: how many to generate (default 5000); other sources: keep the first num_images usable
        images (default all).
    seed: the shapes' generation seed; also the dataset's initial augmentation seed (`set_epoch` may change it).
    cache_dir, split, dataset_config_name: passed to `datasets.load_dataset` (split also to a saved DatasetDict).
    data_cache_dir, no_data_cache: as `load_image_dataset`: a folder or a dataset is decoded once into a decoded
        store (images and captions) that every process memory-maps, or with no_data_cache into this process's
        memory. The built-in shapes are generated in memory (drawn from the seed in about a second).
    """
    check_resolution(resolution)
    stores = data_cache_location(data_cache_dir, no_data_cache)
    if num_channels not in (None, 1, 3):
        raise InputError(f"--num_channels {num_channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")
    if num_images is not None and (isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1):
        raise InputError(f"--num_images {num_images!r} must be a positive integer (or left out)")
    if dataset_name is not None and train_data_dir is not None:
        raise InputError(
            f"--dataset_name {dataset_name!r} and --train_data_dir {train_data_dir!r} were both given: use one"
        )
    caption_column = DEFAULT_CAPTION_COLUMN if caption_column is None else caption_column

    settings = {"resolution": resolution, "center_crop": center_crop, "num_channels": num_channels,
                "caption_column": caption_column, "num_images": num_images}
    if train_data_dir is not None:
        rows, source, columns = _folder_rows(train_data_dir, caption_column)
        store = _folder_store(train_data_dir, rows, settings) if stores is not None else None
    elif dataset_name is None or dataset_name == SHAPES:
        dataset = _load_shapes(resolution, random_flip, num_channels, num_images, seed)
        dataset.set_epoch(0, seed=seed)
        return dataset
    else:
        rows, source, columns, store = _dataset_rows(dataset_name, dataset_config_name, image_column, caption_column,
                                                     cache_dir, split, settings if stores is not None else None)
    flag = f"--dataset_name {dataset_name!r}" if train_data_dir is None else f"--train_data_dir {train_data_dir!r}"
    unit = "rows" if train_data_dir is None else "files"
    if store is not None:
        dataset = _stored_rows(rows, source, flag, columns, caption_column, resolution, center_crop, random_flip,
                               num_channels, num_images, unit, stores, store)
    else:
        dataset = _decode_rows(rows, source, flag, columns, caption_column, resolution, center_crop, random_flip,
                               num_channels, num_images, unit=unit)
    dataset.set_epoch(0, seed=seed)
    return dataset


# ---------------------------------------------------------------------------------------------------------
# shapes


def _load_shapes(resolution: int, random_flip: bool, num_channels: int | None, num_images: int | None,
                 seed: int) -> CaptionedImageDataset:
    if num_channels == 1:
        raise InputError("--num_channels 1 is not supported for the shapes dataset: its captions name colours; "
                         "use 3 (or leave it out)")
    if resolution < MIN_RESOLUTION:
        raise InputError(f"--resolution {resolution} is too small for the shapes dataset: use at least "
                         f"{MIN_RESOLUTION} pixels")
    count = SHAPES_DEFAULT_COUNT if num_images is None else num_images
    data = generate_shapes(count, resolution, seed)
    return CaptionedImageDataset(
        data.images,
        data.captions,
        resolution=resolution,
        source=f"shapes (built-in, {count} images, seed {seed})",
        random_flip=random_flip,
        caption_source="the generator",
    )


# ---------------------------------------------------------------------------------------------------------
# rows: (name, image bytes/PIL/loader, raw caption) from a folder or a datasets Dataset


def _folder_rows(train_data_dir: str, caption_column: str) -> tuple[Any, str, list[str]]:
    """An imagefolder with metadata: rows for every image file and every listed file, sorted by path."""
    root = Path(train_data_dir)
    hint = f"give a folder of images with a metadata.jsonl ({{\"{FILE_NAME}\": ..., \"{caption_column}\": ...}})"
    if not root.exists():
        raise InputError(f"--train_data_dir {train_data_dir!r} does not exist: {hint}")
    if not root.is_dir():
        raise InputError(f"--train_data_dir {train_data_dir!r} is not a directory: {hint}")
    listed, columns = _read_metadata(root, train_data_dir)
    if not listed:
        raise InputError(f"--train_data_dir {train_data_dir!r} has no metadata.jsonl or metadata.csv: {hint}, "
                         f"one line per image")
    if caption_column not in columns:
        raise InputError(
            f"--caption_column {caption_column!r} is not a column of the metadata in --train_data_dir "
            f"{train_data_dir!r}; available columns: {', '.join(columns)}"
        )
    files = _image_files(root)
    rows = []
    for path in sorted(set(files) | set(listed)):
        row = listed.get(path)
        if row is None:
            rows.append((str(path), Skip(NOT_LISTED), None))
        elif not path.is_file():
            rows.append((str(path), Skip(MISSING_FILE), None))
        else:
            rows.append((str(path), path, row.get(caption_column)))
    return rows, f"folder {str(root)!r}", columns


def _read_metadata(root: Path, train_data_dir: str) -> tuple[dict[Path, dict[str, Any]], list[str]]:
    """Every metadata.jsonl / metadata.csv under root: {image path: row}, and the columns in first-seen order."""
    listed: dict[Path, dict[str, Any]] = {}
    columns: dict[str, None] = {}
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for filename in sorted(set(filenames) & set(METADATA_FILES)):
            metadata = Path(directory) / filename
            for line, row in _metadata_rows(metadata):
                name = row.get(FILE_NAME)
                if not isinstance(name, str) or not name:
                    raise InputError(f"--train_data_dir {train_data_dir!r}: {metadata} line {line} has no "
                                     f"{FILE_NAME!r} (the image's path relative to {directory})")
                path = Path(os.path.normpath(Path(directory) / name))
                if path in listed:
                    raise InputError(f"--train_data_dir {train_data_dir!r}: {path} is listed twice in the metadata")
                listed[path] = row
                columns.update(dict.fromkeys(row))
    return listed, list(columns)


def _metadata_rows(metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each row of one metadata.jsonl (JSON objects) or metadata.csv (header + rows)."""
    try:
        text = metadata.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"metadata file {str(metadata)!r} cannot be read: {type(error).__name__}") from None
    if metadata.suffix == ".csv":
        return [(number + 2, dict(row)) for number, row in enumerate(csv.DictReader(text.splitlines()))]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"metadata file {str(metadata)!r} line {number} is not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"metadata file {str(metadata)!r} line {number} is not a JSON object: {line[:60]}")
        rows.append((number, row))
    return rows


def _image_files(root: Path) -> list[Path]:
    """Files under root that could be images: not hidden, not metadata (others are not ours to report)."""
    paths = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        paths += [Path(os.path.normpath(Path(directory) / f)) for f in filenames
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return paths


def _dataset_rows(dataset_name: str, config_name: str | None, image_column: str | None, caption_column: str,
                  cache_dir: str | None, split: str,
                  settings: dict[str, Any] | None) -> tuple[Any, str, list[str], StorePlan | None]:
    """A saved or Hub datasets Dataset: rows ("row i", image value, caption value), lazily, and with `settings`
    (the decode settings, when the data goes through a decoded store) the plan of its store: None for a dataset
    datasets holds in memory (no Arrow files to key it by)."""
    import datasets

    flag = f"--dataset_name {dataset_name!r}"
    loaded, source = open_dataset(dataset_name, config_name, cache_dir, split)
    content = dataset_content(loaded) if settings is not None else None
    columns = list(loaded.column_names)
    image = find_image_column(loaded, image_column, flag)
    _check_caption_column(loaded, caption_column, flag)
    if isinstance(loaded.features[image], datasets.Image):
        # undecoded {"bytes", "path"} dicts, so that a corrupt row is skipped rather than raising mid-iteration
        loaded = loaded.cast_column(image, datasets.Image(decode=False))
    table = loaded.select_columns(list(dict.fromkeys([image, caption_column])))
    source += f" (split {split!r}, {len(loaded)} rows), column {image!r}"
    if content is None:
        return ((f"row {i}", row[image], row[caption_column]) for i, row in enumerate(table)), source, columns, None
    # the store decodes the images in its workers: here only the names and captions (None stands for the image)
    rows = [(f"row {i}", None, caption) for i, caption in enumerate(loaded[caption_column])]
    key = StoreKey(name=Path(dataset_name).name or dataset_name, content=content,
                   source={"kind": "captioned dataset", "name": dataset_location(dataset_name), "config": config_name,
                           "split": split, "column": image, **settings})
    plan = StorePlan(key, lambda todo, decode: decode_rows(loaded, image, todo, decode, workers=available_cores(),
                                                           desc=f"decoding {dataset_name}"))
    return rows, source, columns, plan


def _check_caption_column(dataset: Any, caption_column: str, flag: str) -> None:
    """The column exists and holds strings or lists of strings."""
    import datasets

    columns = list(dataset.column_names)
    if caption_column not in columns:
        raise InputError(f"--caption_column {caption_column!r} is not a column of {flag}; "
                         f"available columns: {', '.join(columns)}")
    feature = dataset.features[caption_column]
    inner = getattr(feature, "feature", None)  # List / Sequence / LargeList of ...
    if not any(isinstance(f, datasets.Value) and f.dtype in ("string", "large_string") for f in (feature, inner)):
        raise InputError(f"--caption_column {caption_column!r} of {flag} holds {feature}, not text: name the "
                         f"column of captions; available columns: {', '.join(columns)}")


# ---------------------------------------------------------------------------------------------------------
# through the decoded store


@dataclass(frozen=True)
class StorePlan:
    """How a source goes into its decoded store: its key, decode(positions, settings) -> the images of those rows
    in order (`decode_pool`), stored(name) -> an entry's name as the store keeps it, shown(stored name) -> as the
    one-process path names it."""

    key: StoreKey
    decode: Callable[[list[int], DecodeSettings], Iterator[Any]]
    stored: Callable[[str], str] = str
    shown: Callable[[str], str] = str


def _folder_store(train_data_dir: str, rows: list[tuple[str, Any, Any]], settings: dict[str, Any]) -> StorePlan:
    """A captioned folder's store: keyed by its image and metadata files (path, size, mtime) and the settings;
    entries are named relative to the folder, shown joined to it as given."""
    root = Path(train_data_dir)
    files = sorted(set(_image_files(root)) | set(_metadata_files(root)))
    key = StoreKey(name=root.resolve().name, content=folder_content(root, files),
                   source={"kind": "captioned folder", "root": str(root.resolve()), **settings})
    paths = [Path(name) for name, _, _ in rows]
    return StorePlan(
        key,
        lambda todo, decode: decode_files([paths[i] for i in todo], decode, workers=available_cores(),
                                          desc=f"decoding {train_data_dir}"),
        stored=lambda name: Path(os.path.relpath(name, root)).as_posix(),
        shown=lambda name: os.path.normpath(root / name))


def _metadata_files(root: Path) -> list[Path]:
    """Every metadata.jsonl / metadata.csv under root (not in hidden folders), as `_read_metadata` reads them."""
    found = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        found += [Path(directory) / name for name in filenames if name in METADATA_FILES]
    return found


def _stored_rows(rows: Any, source: str, flag: str, columns: list[str], caption_column: str, resolution: int,
                 center_crop: bool, random_flip: bool, num_channels: int | None, num_images: int | None, unit: str,
                 stores: Path, plan: StorePlan) -> CaptionedImageDataset:
    """As `_decode_rows`, through the decoded store: the captions and the skips known without decoding (not listed,
    missing file, caption not text) are read here, the images decoded on every core the first time."""
    names, pre_skips, captions = [], [], []
    for name, image, raw_caption in rows:
        names.append(plan.stored(name))
        try:
            if isinstance(image, Skip):
                raise image
            captions.append(_caption(raw_caption))
            pre_skips.append(None)
        except Skip as skip:
            captions.append(None)
            pre_skips.append(skip.reason)

    def none_usable(skipped: list[tuple[str, str]]) -> InputError:
        return InputError(
            f"{flag}: none of the {len(names)} {unit} could be used ({count_reasons(skipped) or 'there are none'}); "
            f"expected images at least {resolution} pixels on the shorter side, each with a caption"
        )

    stored = load_or_decode(stores, plan.key, names,
                            lambda todo: plan.decode(todo, DecodeSettings(resolution, center_crop, num_channels or 3)),
                            resolution=resolution, num_channels=num_channels, on_empty=none_usable,
                            pre_skips=pre_skips, captions=captions, num_images=num_images,
                            check_captions=lambda kept: _check_some_caption(kept, caption_column, flag, unit, columns))
    if num_images is not None and len(stored.captions) == num_images:
        source += f", first {num_images} usable"
    return CaptionedImageDataset(stored.images, stored.captions, resolution=resolution, source=source,
                                 random_flip=random_flip, skipped=[(plan.shown(n), r) for n, r in stored.skipped],
                                 unit=unit, caption_source=f"column {caption_column!r}", store=stored.folder)


def _check_some_caption(captions: Sequence[Caption], caption_column: str, flag: str, unit: str,
                        columns: list[str]) -> None:
    if all(not text.strip() for c in captions for text in ((c,) if isinstance(c, str) else c)):
        raise InputError(f"--caption_column {caption_column!r} is empty in every one of the {len(captions)} "
                         f"usable {unit} of {flag}: name the column of captions; "
                         f"available columns: {', '.join(columns)}")


# ---------------------------------------------------------------------------------------------------------
# decoding, shared by folders and datasets


def _decode_rows(rows: Any, source: str, flag: str, columns: list[str], caption_column: str, resolution: int,
                 center_crop: bool, random_flip: bool, num_channels: int | None, num_images: int | None,
                 unit: str) -> CaptionedImageDataset:
    """Decode each row's image with data.py's `prepare_image` and keep its caption; skip and report the rest."""
    kept, captions, skipped, seen = [], [], [], 0
    for name, image, raw_caption in rows:
        seen += 1
        try:
            if isinstance(image, Skip):
                raise image
            caption = _caption(raw_caption)
            kept.append(prepare_image(_read(image), resolution, center_crop))
        except Skip as skip:
            skipped.append((name, _reason(name, skip)))
            continue
        captions.append(caption)
        if num_images is not None and len(kept) == num_images:
            source += f", first {num_images} usable"
            break
    if not kept:
        raise InputError(
            f"{flag}: none of the {seen} {unit} could be used ({count_reasons(skipped) or 'there are none'}); "
            f"expected images at least {resolution} pixels on the shorter side, each with a caption"
        )
    _check_some_caption(captions, caption_column, flag, unit, columns)
    return CaptionedImageDataset(
        to_tensors(kept, num_channels),
        captions,
        resolution=resolution,
        source=source,
        random_flip=random_flip,
        skipped=skipped,
        unit=unit,
        caption_source=f"column {caption_column!r}",
    )


def _reason(name: str, skip: Skip) -> str:
    """As data.py's folders: a file named like an image that PIL cannot identify is damaged, not a stray file."""
    return CORRUPT if skip.reason == NOT_AN_IMAGE and Path(name).suffix.lower() in IMAGE_SUFFIXES else skip.reason


def _read(image: Any) -> Any:
    """A folder's Path -> bytes; a datasets value -> bytes or PIL (data.py's `row_image`)."""
    if isinstance(image, Path):
        try:
            return image.read_bytes()
        except OSError as error:
            raise Skip(f"{UNREADABLE} ({type(error).__name__})") from None
    return row_image(image)


def _caption(value: Any) -> Caption:
    """A raw caption -> str or tuple of strings; None and [] are "" (unconditional); other types are skipped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "" if not value else value[0] if len(value) == 1 else tuple(value)
    raise Skip(f"{CAPTION_NOT_TEXT} ({type(value).__name__})")
