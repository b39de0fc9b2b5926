"""Image datasets for DDPM training: decoded once into uint8 tensors, augmented per access.

One entry point, `load_image_dataset`, for three sources:
  - "digits" (the default): scikit-learn's 1797 real 8x8 handwritten digits, shipped with scikit-learn (no
    download), upscaled to `resolution`, 1 channel, labels kept in `dataset.labels`; training uses the 1437 of
    the train split and leaves 360 held out for the evaluation (`load_digits_split`);
  - a folder of images (`train_data_dir`), scanned recursively, with every unusable file skipped and reported;
  - a Hugging Face dataset (`dataset_name`): a Hub id, or a local directory written by `save_to_disk`.

The data path follows diffusers' examples/unconditional_image_generation/train_unconditional.py
(Resize(resolution, bilinear) -> CenterCrop or RandomCrop -> RandomHorizontalFlip -> ToTensor -> Normalize([0.5],
[0.5])), but without torchvision and without PIL in the training loop: the deterministic part (decode, mode
conversion, resize, center crop) runs once at load time into uint8 tensors; only the random crop and flip run
per access, drawn from torch's global RNG exactly as torchvision draws them, so that accelerate's
save_state/load_state restores augmentation randomness (assumes DataLoader num_workers=0).

Pixel convention: stored uint8 in 0..255; `ImageDataset[i]` is float32 in [-1, 1] via x / 127.5 - 1, the
"integers in {0, ..., 255} scaled linearly to [-1, 1]" of Ho et al. 2020 (DDPM), section 3.3.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ddpm_hub.errors import InputError

DIGITS = "digits"
DIGITS_COUNT = 1797  # len(sklearn.datasets.load_digits().images)

# datasets' imagefolder reads captions/labels from these; they are data about the images, not skipped files.
METADATA_FILENAMES = frozenset({"metadata.jsonl", "metadata.csv", "metadata.parquet"})
IMAGE_HINT = "images (.png, .jpg, ...)"

# Skip reasons. A reason may carry a detail in parentheses; `summary()` groups by the part before " (".
NOT_AN_IMAGE = "not an image"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CORRUPT = "corrupt"
UNREADABLE = "unreadable"
UNSUPPORTED = "unsupported pixel format"

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class _Skip(Exception):
    """Internal: this file or row cannot be used; `reason` says why (one of the reasons above)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageDataset(torch.utils.data.Dataset):
    """Images held as uint8 tensors; item i is a float32 tensor [C x resolution x resolution] in [-1, 1].

    `images` is one uint8 tensor [N x C x resolution x resolution] when every image is already square at
    `resolution`, else a list of uint8 tensors [C x resolution x W] or [C x H x resolution] (shorter side at
    `resolution`) from which `__getitem__` takes a random resolution x resolution crop.

    Augmentation never touches the global RNG: item i of epoch e draws its crop and flip from a generator
    seeded by (seed, e, i), in torchvision's order (RandomCrop.get_params: top, then left;
    RandomHorizontalFlip: rand < 0.5). A DataLoader may prefetch, skip or reorder fetches (accelerate prefetches
    one batch ahead, and a resumed run skips batches), and the images and the training noise stay the same:
    exact resume depends on it. Call `set_epoch` once per epoch (`train_ddpm.py` does).
    """

    def __init__(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        *,
        resolution: int,
        source: str,
        random_flip: bool = False,
        skipped: Sequence[tuple[str, str]] = (),
        labels: torch.Tensor | None = None,
        unit: str = "files",
    ):
        assert len(images) > 0, "an ImageDataset needs at least one image"
        num_channels = images[0].shape[0]
        for image in images:
            C, H, W = image.shape
            assert image.dtype == torch.uint8, f"images must be uint8, got {image.dtype}"
            assert C == num_channels, f"every image needs {num_channels} channel(s), got {C}"
            assert min(H, W) == resolution, f"shorter side must be {resolution}, got {H}x{W}"
        square = all(image.shape[1:] == (resolution, resolution) for image in images)
        if square and not isinstance(images, torch.Tensor):
            images = torch.stack(list(images))
        if labels is not None:
            assert labels.shape == (len(images),), f"labels must be [{len(images)}], got {tuple(labels.shape)}"

        self.images = images if isinstance(images, torch.Tensor) else list(images)
        self.resolution = resolution
        self.num_channels = num_channels
        self.source = source
        self.random_flip = random_flip
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.labels = labels
        self.unit = unit  # what a skipped entry is called in `summary()`: "files" or "rows"
        self.seed, self.epoch = 0, 0

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Choose the augmentation draws of this epoch (and, optionally, the run's seed)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def _generator(self, index: int) -> torch.Generator:
        # distinct, reproducible stream per (seed, epoch, index)
        return torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFF_FFFF_FFFF_FFFF)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        """A whole batch at once [B x C x R x R] float32 in [-1, 1] (torch's DataLoader calls this when present)."""
        if isinstance(self.images, torch.Tensor) and not self.random_flip:
            return self.images[torch.as_tensor(indices)].to(torch.float32) / 127.5 - 1.0
        return torch.stack([self._augmented(i) for i in indices]).to(torch.float32) / 127.5 - 1.0

    def _augmented(self, index: int) -> torch.Tensor:
        image = self.images[index]  # [C x H x W] uint8, min(H, W) == resolution
        R = self.resolution
        _, H, W = image.shape
        generator = self._generator(index) if (H, W) != (R, R) or self.random_flip else None
        if (H, W) != (R, R):
            # torchvision.transforms.RandomCrop.get_params
            top = int(torch.randint(0, H - R + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, W - R + 1, size=(1,), generator=generator).item())
            image = image[:, top : top + R, left : left + R]
        if self.random_flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.flip(-1)
        return image

    def summary(self) -> str:
        """One line: how many images, their shape, where from, and what was skipped and why."""
        channels = "1 channel" if self.num_channels == 1 else f"{self.num_channels} channels"
        line = f"loaded {len(self)} images ({channels}, {self.resolution}x{self.resolution}) from {self.source}"
        if self.skipped:
            line += f"; skipped {len(self.skipped)} {self.unit}: {_count_reasons(self.skipped)}"
        return line


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
    _check_resolution(resolution)
    if num_channels not in (None, 1, 3):
        raise InputError(f"--num_channels {num_channels!r} is not supported: use 1 (grayscale) or 3 (RGB)")
    if dataset_name is not None and train_data_dir is not None:
        raise InputError(
            f"--dataset_name {dataset_name!r} and --train_data_dir {train_data_dir!r} were both given: use one"
        )

    if train_data_dir is not None:
        return _load_folder(train_data_dir, resolution, center_crop, random_flip, num_channels)
    if dataset_name is None or dataset_name == DIGITS:
        return _load_digits(resolution, random_flip, num_channels, split)
    return _load_hf_dataset(
        dataset_name, dataset_config_name, image_column, resolution, center_crop, random_flip, num_channels,
        cache_dir, split,
    )


def load_digits_split(
    resolution: int = 16, held_out_fraction: float = 0.2, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Split the 1797 digits into (train, held_out), stratified by label, the same split for the same seed.

    Uses sklearn.model_selection.train_test_split(stratify=labels, random_state=seed); with the defaults,
    1437 train and 360 held-out images, each class in both in proportion. Both datasets carry `labels`.
    """
    from sklearn.model_selection import train_test_split

    _check_resolution(resolution)
    if not 0.0 < held_out_fraction < 1.0:
        raise InputError(f"held_out_fraction {held_out_fraction!r} must be strictly between 0 and 1")
    images, labels = _digits_tensors(resolution)
    try:
        train_index, held_out_index = train_test_split(
            np.arange(len(labels)), test_size=held_out_fraction, stratify=labels.numpy(), random_state=seed
        )
    except ValueError as error:  # too few images on one side to hold every one of the 10 classes
        raise InputError(f"held_out_fraction {held_out_fraction!r} is unusable: {_one_line(error)}") from None

    def subset(index: np.ndarray, name: str) -> ImageDataset:
        index = torch.from_numpy(np.sort(index))
        source = f"digits (scikit-learn, {name} split: {len(index)} of {len(labels)} images, seed {seed})"
        return ImageDataset(images[index], resolution=resolution, source=source, labels=labels[index])

    return subset(train_index, "train"), subset(held_out_index, "held-out")


# ---------------------------------------------------------------------------------------------------------
# digits
DIGITS_SPLITS = ("train", "test", "all")


def _load_digits(resolution: int, random_flip: bool, num_channels: int | None, split: str) -> ImageDataset:
    """The built-in digits: the train or test split of `load_digits_split`, or all 1797."""
    if split not in DIGITS_SPLITS:
        raise InputError(f"digits split {split!r} does not exist; choose one of {', '.join(DIGITS_SPLITS)}")
    if split == "all":
        images, labels = _digits_tensors(resolution)
        source = f"digits (scikit-learn, all {len(images)} images)"
    else:
        part = load_digits_split(resolution)[0 if split == "train" else 1]
        images, labels, source = part.images, part.labels, part.source
    return ImageDataset(_with_channels(images, num_channels or 1), resolution=resolution, source=source,
                        random_flip=random_flip, labels=labels)


@functools.lru_cache(maxsize=1)
def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 [1797 x 8 x 8] in 0..255 (v * 255 / 16, rounded) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert digits.images.shape == (DIGITS_COUNT, 8, 8), digits.images.shape
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    pixels.setflags(write=False)
    labels = digits.target.astype(np.int64)
    labels.setflags(write=False)
    return pixels, labels


def _digits_tensors(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits upscaled to resolution (PIL bicubic): uint8 [1797 x 1 x R x R] and labels [1797]."""
    pixels, labels = _digits_uint8()
    # Bicubic keeps strokes crisper than bilinear when 8x8 is upscaled (compared on grids of both); PIL clips
    # its overshoot to 0..255, so the range stays exact.
    bicubic = Image.Resampling.BICUBIC
    resized = np.stack([_resize_exact(Image.fromarray(p), resolution, resolution, bicubic) for p in pixels])
    return torch.from_numpy(resized).unsqueeze(1), torch.from_numpy(labels.copy())


def _resize_exact(image: Image.Image, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    if image.size != (width, height):
        image = image.resize((width, height), resample)
    return np.asarray(image, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------
# folder of images


def _load_folder(
    train_data_dir: str, resolution: int, center_crop: bool, random_flip: bool, num_channels: int | None
) -> ImageDataset:
    root = Path(train_data_dir)
    if not root.exists():
        raise InputError(f"--train_data_dir {train_data_dir!r} does not exist: give a folder of {IMAGE_HINT}")
    if not root.is_dir():
        raise InputError(f"--train_data_dir {train_data_dir!r} is not a directory: give a folder of {IMAGE_HINT}")

    paths, ignored = _scan(root)
    if not paths:
        what = "is empty" if not ignored else f"has no files besides {', '.join(sorted(ignored))}"
        raise InputError(f"--train_data_dir {train_data_dir!r} {what}: put {IMAGE_HINT} in it")

    kept, skipped = [], []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            skipped.append((str(path), f"{UNREADABLE} ({type(error).__name__})"))
            continue
        try:
            kept.append(_prepare(data, resolution, center_crop))
        except _Skip as skip:
            # a file named like an image that PIL cannot even identify is a damaged image, not a stray file
            reason = CORRUPT if skip.reason == NOT_AN_IMAGE and path.suffix.lower() in IMAGE_SUFFIXES else skip.reason
            skipped.append((str(path), reason))
    if not kept:
        raise InputError(
            f"--train_data_dir {train_data_dir!r}: none of the {len(paths)} files could be used "
            f"({_count_reasons(skipped)}); expected {IMAGE_HINT} at least {resolution} pixels on the shorter side"
        )
    return ImageDataset(
        _to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"folder {str(root)!r}",
        random_flip=random_flip,
        skipped=skipped,
    )


def _scan(root: Path) -> tuple[list[Path], set[str]]:
    """Every file under root, sorted; hidden files/folders and datasets' metadata files are left out."""
    paths, ignored = [], set()
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]  # .git, .ipynb_checkpoints
        for filename in filenames:
            if filename.startswith(".") or filename in METADATA_FILENAMES:  # .DS_Store; captions for a later step
                ignored.add(filename if filename in METADATA_FILENAMES else "hidden files")
                continue
            paths.append(Path(directory) / filename)
    return sorted(paths), ignored


# ---------------------------------------------------------------------------------------------------------
# Hugging Face datasets


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
    import datasets

    flag = f"--dataset_name {dataset_name!r}"
    loaded, source = open_dataset(dataset_name, dataset_config_name, cache_dir, split)
    source += f" (split {split!r}, {len(loaded)} rows)"

    column = _image_column(loaded, image_column, flag)
    if isinstance(loaded.features[column], datasets.Image):
        # Undecoded {"bytes", "path"} dicts, so a corrupt row is skipped here rather than raising mid-iteration.
        loaded = loaded.cast_column(column, datasets.Image(decode=False))

    kept, skipped = [], []
    for row_index, row in enumerate(loaded.select_columns([column])):
        name = f"row {row_index}"
        try:
            kept.append(_prepare(_row_image(row[column]), resolution, center_crop))
        except _Skip as skip:
            skipped.append((name, skip.reason))
    if not kept:
        raise InputError(
            f"{flag}: none of the {len(loaded)} rows in column {column!r} could be used "
            f"({_count_reasons(skipped) or 'the split is empty'}); "
            f"expected images at least {resolution} pixels on the shorter side"
        )
    return ImageDataset(
        _to_tensors(kept, num_channels),
        resolution=resolution,
        source=f"{source}, column {column!r}",
        random_flip=random_flip,
        skipped=skipped,
        unit="rows",
    )


def open_dataset(dataset_name: str, config_name: str | None, cache_dir: str | None, split: str) -> tuple[Any, str]:
    """(the `split` of a datasets Dataset, a description of where it came from): a folder written by
    `save_to_disk` (a Dataset, or a DatasetDict holding `split`), else `load_dataset` (Hub id or local folder)
    with the offline and not-found messages of `_fetch`."""
    import datasets

    if os.path.isdir(dataset_name) and _is_saved_to_disk(dataset_name):
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InputError(f"--dataset_name {dataset_name!r} has no split {split!r}; available splits: "
                                 f"{', '.join(loaded)}")
            loaded = loaded[split]
        return loaded, f"dataset saved at {dataset_name!r}"
    return _fetch(datasets, dataset_name, config_name, cache_dir, split), f"dataset {dataset_name!r}"


def _is_saved_to_disk(directory: str) -> bool:
    """Whether `directory` was written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return any(os.path.isfile(os.path.join(directory, marker)) for marker in ("state.json", "dataset_dict.json"))


def _fetch(datasets: Any, dataset_name: str, config_name: str | None, cache_dir: str | None, split: str) -> Any:
    """datasets.load_dataset, with offline, missing-dataset and unknown-split failures turned into InputError."""
    flag = f"--dataset_name {dataset_name!r}"
    hint = "Use a local folder with --train_data_dir or a dataset saved with save_to_disk."
    try:
        return datasets.load_dataset(dataset_name, config_name, cache_dir=cache_dir, split=split)
    except ValueError as error:
        if "Unknown split" in str(error):
            raise InputError(f"{flag} has no split {split!r}: {_one_line(error)}") from None
        raise
    except (OSError, *_connection_errors()) as error:
        # OSError covers the builtin ConnectionError that datasets raises ("Couldn't reach ... on the Hub"),
        # huggingface_hub's OfflineModeIsEnabled / LocalEntryNotFoundError / HfHubHTTPError, and datasets'
        # DatasetNotFoundError and "is not cached" (both FileNotFoundError).
        from huggingface_hub.errors import HfHubHTTPError

        cause = f"{type(error).__name__}: {_one_line(error)}"
        offline = _offline_mode()
        unreachable = isinstance(error, (ConnectionError, *_connection_errors()))
        if unreachable or (offline and isinstance(error, FileNotFoundError)):
            why = f"HF_HUB_OFFLINE is set; {cause}" if offline else cause
            raise InputError(
                f"{flag} could not be fetched from the Hugging Face Hub: you appear to be offline ({why}). {hint}"
            ) from None
        if isinstance(error, (FileNotFoundError, HfHubHTTPError)):
            raise InputError(
                f"{flag} could not be loaded: it is not a local directory, and the Hugging Face Hub has no such "
                f"dataset or it is private/gated (log in with `hf auth login`) ({cause}). {hint}"
            ) from None
        raise


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Connection errors that are not builtin ConnectionError: requests', httpx's / httpx2's (huggingface_hub)."""
    errors: list[type[BaseException]] = []
    candidates = (("requests", "ConnectionError"), ("httpx", "TransportError"), ("httpx2", "TransportError"))
    for module_name, attribute in candidates:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.append(getattr(module, attribute))
    return tuple(errors)


def _offline_mode() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE in the environment, or already read by huggingface_hub / datasets."""
    truthy = {"1", "ON", "YES", "TRUE"}
    if any(os.environ.get(name, "").upper() in truthy for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    import datasets.config
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def _image_column(dataset: Any, image_column: str | None, flag: str) -> str:
    import datasets

    columns = list(dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise InputError(
                f"--image_column {image_column!r} is not a column of {flag}; available columns: {', '.join(columns)}"
            )
        return image_column
    if "image" in columns:
        return "image"
    for column in columns:
        if isinstance(dataset.features[column], datasets.Image):
            return column
    raise InputError(
        f"{flag} has no 'image' column and no column of type datasets.Image: pass --image_column; "
        f"available columns: {', '.join(columns)}"
    )


def _row_image(value: Any) -> bytes | Image.Image:
    """A datasets Image value ({"bytes", "path"} dict or PIL image), raw bytes, or a file path -> bytes/PIL."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path") is not None:
            value = value["path"]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return Path(value).read_bytes()
        except OSError as error:
            raise _Skip(f"{UNREADABLE} ({type(error).__name__})") from None
    raise _Skip(NOT_AN_IMAGE)


# ---------------------------------------------------------------------------------------------------------
# decoding, shared by folders and datasets


def _prepare(data: bytes | Image.Image, resolution: int, center_crop: bool) -> tuple[np.ndarray, bool]:
    """Decode, check size, convert to L or RGB, resize the shorter side to resolution, maybe center crop.

    Returns (uint8 array [H x W] or [H x W x 3], is_grayscale); raises _Skip with the reason.
    """
    image = _decode(data)
    width, height = image.size
    if min(width, height) < resolution:
        raise _Skip(f"smaller than --resolution {resolution} ({width}x{height})")
    pixels, grayscale = _to_l_or_rgb(image)
    return _resize_and_crop(pixels, resolution, center_crop), grayscale


def _decode(data: bytes | Image.Image) -> Image.Image:
    """Fully decoded first frame, EXIF orientation applied (as datasets' Image feature does)."""
    if isinstance(data, Image.Image):
        image = data
    else:
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise _Skip(NOT_AN_IMAGE) from None
        except Exception:  # PIL raises many types on a malformed header (SyntaxError, ValueError, struct.error...)
            raise _Skip(CORRUPT) from None
    try:
        image.load()  # truncated/corrupt data raises here, not at open
        if image.getexif().get(ExifTags.Base.Orientation) is not None:
            image = ImageOps.exif_transpose(image)
    except Exception:  # as above: many types; one bad file must not end a training run, it is reported
        raise _Skip(CORRUPT) from None
    return image


def _to_l_or_rgb(image: Image.Image) -> tuple[np.ndarray, bool]:
    """uint8 [H x W] for grayscale modes, [H x W x 3] otherwise; transparency composited over white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise _Skip(f"{UNSUPPORTED} (mode {mode} with values outside 0..65535)")
        return np.rint(values / 257.0).astype(np.uint8), True  # 0..65535 -> 0..255 (65535 / 257 = 255)
    if mode == "F":
        raise _Skip(f"{UNSUPPORTED} (mode F, floating point)")
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.uint8), True
    if mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"), dtype=np.uint8)
        return _over_white(la[..., 0], la[..., 1]), True
    if mode in ("RGBA", "RGBa", "P", "PA"):  # a palette may carry transparency; opaque pixels are unchanged
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        return _over_white(rgba[..., :3], rgba[..., 3:]), False
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8), False  # RGB, CMYK, YCbCr, LAB, HSV, ...
    except ValueError:
        raise _Skip(f"{UNSUPPORTED} (mode {mode})") from None


def _over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha compositing over white: out = a * color + (1 - a) * 255, a = alpha / 255."""
    a = alpha.astype(np.float64) / 255.0
    return np.rint(a * color + (1.0 - a) * 255.0).astype(np.uint8)


def _resize_and_crop(pixels: np.ndarray, resolution: int, center_crop: bool) -> np.ndarray:
    """torchvision Resize(resolution, bilinear) then, if center_crop, CenterCrop(resolution); numpy uint8."""
    height, width = pixels.shape[:2]
    # torchvision's _compute_resized_output_size: shorter side -> resolution, longer side truncated.
    if width <= height:
        new_width, new_height = resolution, int(resolution * height / width)
    else:
        new_width, new_height = int(resolution * width / height), resolution
    pixels = _resize_exact(Image.fromarray(pixels), new_width, new_height, Image.Resampling.BILINEAR)
    if center_crop:
        # torchvision CenterCrop: offsets int(round((size - crop) / 2))
        top = int(round((new_height - resolution) / 2.0))
        left = int(round((new_width - resolution) / 2.0))
        pixels = pixels[top : top + resolution, left : left + resolution]
    return pixels


def _to_tensors(kept: list[tuple[np.ndarray, bool]], num_channels: int | None) -> list[torch.Tensor]:
    """Decoded arrays -> uint8 tensors [C x H x W], C = num_channels or (1 if all grayscale else 3)."""
    if num_channels is None:
        num_channels = 1 if all(grayscale for _, grayscale in kept) else 3
    tensors = []
    for pixels, grayscale in kept:
        if num_channels == 1 and not grayscale:
            pixels = np.asarray(Image.fromarray(pixels).convert("L"))  # ITU-R 601-2 luma, as PIL converts
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if num_channels == 3 and pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        tensors.append(torch.from_numpy(np.array(pixels)).permute(2, 0, 1).contiguous())  # copy: PIL's are read-only
    return tensors


def _with_channels(images: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Grayscale uint8 [N x 1 x H x W] -> [N x num_channels x H x W] (repeated for 3)."""
    return images if num_channels == 1 else images.repeat(1, num_channels, 1, 1)


# ---------------------------------------------------------------------------------------------------------
# messages


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise InputError(f"--resolution {resolution!r} must be a positive integer (pixels, e.g. 16, 32, 64)")


def _count_reasons(skipped: Sequence[tuple[str, str]]) -> str:
    """'3 corrupt, 2 not an image, 1 smaller than --resolution 16 (8x8)': counts per reason, most first."""
    counts: dict[str, int] = {}
    details: dict[str, list[str]] = {}
    for _, reason in skipped:
        kind, _, detail = reason.partition(" (")
        counts[kind] = counts.get(kind, 0) + 1
        detail = detail.rstrip(")")
        if detail and detail not in details.setdefault(kind, []):
            details[kind].append(detail)
    parts = []
    for kind, count in sorted(counts.items(), key=lambda item: -item[1]):  # stable: ties keep first-seen order
        shown = details.get(kind, [])
        suffix = f" ({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''})" if shown else ""
        parts.append(f"{count} {kind}{suffix}")
    return ", ".join(parts)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
