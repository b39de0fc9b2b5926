"""Images with class labels, for class-conditional training: `LabelledImageDataset` and `load_labelled_dataset`.

Three sources, each giving every image a class id 0..K-1 and the K class names (id2label):
  - the built-in digits: their true labels, named "0".."9";
  - a folder (`train_data_dir`) in datasets' imagefolder layout: one subfolder per class, named after it
    (`root/cat/1.png`, `root/dog/2.png`; ids follow the sorted folder names, as datasets' imagefolder numbers its
    ClassLabel), images found recursively inside each;
  - a Hugging Face dataset (Hub id, a folder `load_dataset` reads, or one written by `save_to_disk`) whose
    `label_column` is a `ClassLabel` (its ids and names), integers (ids as they are, named "0", "1", ...) or strings
    (ids by sorted name, as datasets' `class_encode_column` numbers them).

Everything about the pixels is `ddpm_hub.data`'s: the same decoding, resize, crops, skip reasons and per-(seed,
epoch, index) augmentation (`ImageDataset`); this module adds the labels. A batch is a dict: {"pixel_values": float
[B x C x H x W] in [-1, 1], "class_labels": long [B]}.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .dataset import ImageDataset
from .decoding import IMAGE_HINT, METADATA_FILENAMES, check_resolution, count_reasons, to_tensors
from .digits import DIGITS
from .hub_datasets import find_image_column, open_dataset
from .images import decode_listed_files, decode_listed_rows, load_image_dataset, scan_folder, undecoded_images

NO_LABEL = "no label"  # a skip reason: a row whose label is missing (None, or datasets' -1)
MAX_CLASSES = 100_000  # more distinct integer ids than this is not a class column (one embedding row per id)
INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
STRING_DTYPES = ("string", "large_string")


class LabelledImageDataset(ImageDataset):
    """An `ImageDataset` whose images carry class ids; a batch is {"pixel_values": [B x C x R x R] in [-1, 1],
    "class_labels": long [B]}.

    labels: long [N], each in 0..len(label_names)-1; label_names: the class names by id (id2label as a list);
    label_source: where the labels came from, for `summary()`. Augmentation is ImageDataset's (never the global
    RNG); the labels are not augmented. `__getitems__` returns the batch dict itself, so give a DataLoader
    `collate_fn=lambda batch: batch` (as train_ddpm.py does).
    """

    def __init__(self, images: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor,
                 label_names: Sequence[str], *, label_source: str, **image_dataset_kwargs: Any):
        super().__init__(images, labels=labels, **image_dataset_kwargs)
        assert labels.dtype == torch.long, f"labels must be int64, got {labels.dtype}"
        assert len(label_names) >= 1 and len(set(label_names)) == len(label_names), "label names must be distinct"
        assert 0 <= int(labels.min()) and int(labels.max()) < len(label_names), "a label outside 0..K-1"
        self.label_names = [str(name) for name in label_names]
        self.label_source = label_source

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.__getitems__([index])
        return {"pixel_values": batch["pixel_values"][0], "class_label": batch["class_labels"][0]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch: {"pixel_values": float32 [B x C x R x R] in [-1, 1], "class_labels": long [B]}."""
        return {"pixel_values": super().__getitems__(indices), "class_labels": self.labels[torch.as_tensor(indices)]}

    def summary(self) -> str:
        """ImageDataset's line, then the classes: how many, from where, and the rarest."""
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        rarest = int(counts.argmin())
        return (f"{super().summary()}; {self.num_classes} classes from {self.label_source} (rarest "
                f"{self.label_names[rarest]!r}: {int(counts[rarest])} images)")


def load_labelled_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    resolution: int = 16,
    center_crop: bool = False,
    random_flip: bool = False,
    num_channels: int | None = None,
    cache_dir: str | None = None,
    split: str = "train",
) -> LabelledImageDataset:
    """The training images named by the CLI flags with their class labels (module docstring), as a
    `LabelledImageDataset`. Arguments as `load_image_dataset`'s, plus label_column, the class column of a datasets
    dataset. One-line InputError for a folder without class subfolders (or with images outside them, or a class
    without a usable image) and a label column that is missing or holds neither integers nor strings."""
    check_resolution(resolution)
    if dataset_name is not None and train_data_dir is not None:
        raise InputError(
            f"--dataset_name {dataset_name!r} and --train_data_dir {train_data_dir!r} were both given: use one"
        )
    if train_data_dir is not None:
        return _load_class_folders(train_data_dir, resolution, center_crop, random_flip, num_channels)
    if dataset_name is None or dataset_name == DIGITS:
        digits = load_image_dataset(DIGITS, resolution=resolution, random_flip=random_flip, num_channels=num_channels,
                                    split=split)
        return LabelledImageDataset(digits.images, digits.labels, [str(i) for i in range(10)],
                                    label_source="the digits' true labels", resolution=resolution,
                                    source=digits.source, random_flip=random_flip)
    return _load_labelled_hub_dataset(dataset_name, dataset_config_name, image_column, label_column, resolution,
                                      center_crop, random_flip, num_channels, cache_dir, split)


def _load_class_folders(train_data_dir: str, resolution: int, center_crop: bool, random_flip: bool,
                        num_channels: int | None) -> LabelledImageDataset:
    """datasets' imagefolder layout: one subfolder per class, named after it; ids follow the sorted names."""
    flag = f"--train_data_dir {train_data_dir!r}"
    root = Path(train_data_dir)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise InputError(f"{flag} {what}: give a folder with one subfolder of {IMAGE_HINT} per class")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir()]
    loose = [p.name for p in entries if p.is_file() and p.name not in METADATA_FILENAMES]
    layout = f"{root.name}/cat/1.png, {root.name}/dog/2.png"
    if not classes:
        raise InputError(f"{flag} has no class subfolders: class-conditional training reads one subfolder per class, "
                         f"named after it (datasets' imagefolder layout: {layout})")
    if loose:
        raise InputError(f"{flag} has files outside its class subfolders ({', '.join(loose[:3])}"
                         f"{', ...' if len(loose) > 3 else ''}): move each into the subfolder of its class")
    paths, labels = [], []
    for class_id, name in enumerate(classes):
        files, _ = scan_folder(root / name)
        paths += files
        labels += [class_id] * len(files)
    kept, skipped, used = decode_listed_files(paths, resolution, center_crop)
    if not kept:
        raise InputError(f"{flag}: none of the {len(paths)} files in its class subfolders could be used"
                         f"{f' ({count_reasons(skipped)})' if skipped else ''}; expected {IMAGE_HINT} at least "
                         f"{resolution} pixels on the shorter side")
    kept_labels = torch.tensor([labels[i] for i in used], dtype=torch.long)
    empty = [name for class_id, name in enumerate(classes) if not (kept_labels == class_id).any()]
    if empty:
        raise InputError(f"{flag}: class folder {empty[0]!r} has no usable image ({len(empty)} such folder(s)); "
                         f"put images in it or remove it")
    return LabelledImageDataset(to_tensors(kept, num_channels), kept_labels, classes,
                                label_source="the class subfolders' names", resolution=resolution,
                                source=f"folder {str(root)!r}", random_flip=random_flip, skipped=skipped)


def _load_labelled_hub_dataset(dataset_name: str, dataset_config_name: str | None, image_column: str | None,
                               label_column: str, resolution: int, center_crop: bool, random_flip: bool,
                               num_channels: int | None, cache_dir: str | None, split: str) -> LabelledImageDataset:
    flag = f"--dataset_name {dataset_name!r}"
    loaded, source = open_dataset(dataset_name, dataset_config_name, cache_dir, split)
    source += f" (split {split!r}, {len(loaded)} rows)"
    column = find_image_column(loaded, image_column, flag)
    row_ids, names = read_label_column(loaded, label_column, flag)  # cheap checks before decoding any image
    loaded = undecoded_images(loaded, column)
    decoded, skipped, used = decode_listed_rows(loaded.select_columns([column]), column, resolution, center_crop)
    kept, labels = [], []
    for image, row in zip(decoded, used):
        if row_ids[row] < 0:
            skipped.append((f"row {row}", NO_LABEL))
        else:
            kept.append(image)
            labels.append(int(row_ids[row]))
    if not kept:
        raise InputError(f"{flag}: none of the {len(loaded)} rows could be used "
                         f"({count_reasons(skipped) or 'the split is empty'}); expected images at least "
                         f"{resolution} pixels on the shorter side, each with a label in {label_column!r}")
    return LabelledImageDataset(to_tensors(kept, num_channels), torch.tensor(labels, dtype=torch.long), names,
                                label_source=f"column {label_column!r}", resolution=resolution,
                                source=f"{source}, column {column!r}", random_flip=random_flip, skipped=skipped,
                                unit="rows")


def read_label_column(dataset: Any, label_column: str, flag: str) -> tuple[np.ndarray, list[str]]:
    """(the class id of every row, int64 [N], -1 where the row has no label; the class names by id) of a datasets
    Dataset's `label_column`: a ClassLabel keeps its ids and names; integers are the ids themselves (names "0",
    "1", ... up to the largest); strings are numbered by sorted name. InputError for a missing column, any other
    type, or no labelled row."""
    import datasets

    columns = list(dataset.column_names)
    if label_column not in columns:
        raise InputError(f"--label_column {label_column!r} is not a column of {flag}; available columns: "
                         f"{', '.join(columns)}")
    feature = dataset.features[label_column]
    values = dataset[label_column]
    what = f"--label_column {label_column!r} of {flag}"
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        ids = np.array([-1 if value is None else value for value in values], dtype=np.int64)
    elif isinstance(feature, datasets.Value) and feature.dtype in INTEGER_DTYPES:
        ids = np.array([-1 if value is None else value for value in values], dtype=np.int64)
        ids[ids < 0] = -1
        largest = int(ids.max()) if len(ids) else -1
        if largest >= MAX_CLASSES:
            raise InputError(f"{what} holds integers up to {largest}: class ids run 0..K-1 with K at most "
                             f"{MAX_CLASSES} (is this a class column?)")
        names = [str(i) for i in range(largest + 1)]
    elif isinstance(feature, datasets.Value) and feature.dtype in STRING_DTYPES:
        names = sorted({value for value in values if value})
        index = {name: i for i, name in enumerate(names)}
        ids = np.array([index[value] if value else -1 for value in values], dtype=np.int64)
    else:
        kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
        raise InputError(f"{what} holds {kind} values; class labels must be integers, strings or a ClassLabel")
    if not (ids >= 0).any():
        raise InputError(f"{what} has no labelled row (every value is missing)")
    return ids, names
