"""Opening a Hugging Face dataset by name: a folder written by `save_to_disk`, a local folder `load_dataset` reads,
or a Hub id; with the offline, missing-dataset and unknown-split failures turned into one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError, one_line
from .decoding import NOT_AN_IMAGE, UNREADABLE, Skip


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


def open_stream(dataset_name: str, config_name: str | None, cache_dir: str | None, split: str) -> tuple[Any, str]:
    """(the `split` of a dataset as a datasets IterableDataset, where it came from): a folder written by
    `save_to_disk` as `to_iterable_dataset()`, else `load_dataset(..., streaming=True)` (Hub id or local folder),
    with `_fetch`'s one-line errors."""
    import datasets

    if os.path.isdir(dataset_name) and _is_saved_to_disk(dataset_name):
        loaded, source = open_dataset(dataset_name, config_name, cache_dir, split)
        return loaded.to_iterable_dataset(), source
    return _fetch(datasets, dataset_name, config_name, cache_dir, split, streaming=True), f"dataset {dataset_name!r}"


def dataset_location(dataset_name: str) -> str:
    """What names a dataset for a decoded store's key: a local folder's absolute path (the same folder however it
    is spelled), else the Hub id."""
    return os.path.abspath(dataset_name) if os.path.isdir(dataset_name) else dataset_name


def _is_saved_to_disk(directory: str) -> bool:
    """Whether `directory` was written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return any(os.path.isfile(os.path.join(directory, marker)) for marker in ("state.json", "dataset_dict.json"))


def _fetch(datasets: Any, dataset_name: str, config_name: str | None, cache_dir: str | None, split: str,
           streaming: bool = False) -> Any:
    """datasets.load_dataset, with offline, missing-dataset and unknown-split failures turned into InputError."""
    flag = f"--dataset_name {dataset_name!r}"
    hint = "Use a local folder with --train_data_dir or a dataset saved with save_to_disk."
    try:
        return datasets.load_dataset(dataset_name, config_name, cache_dir=cache_dir, split=split, streaming=streaming)
    except ValueError as error:
        if "Unknown split" in str(error):
            raise InputError(f"{flag} has no split {split!r}: {one_line(error)}") from None
        raise
    except (OSError, *_connection_errors()) as error:
        # OSError covers the builtin ConnectionError that datasets raises ("Couldn't reach ... on the Hub"),
        # huggingface_hub's OfflineModeIsEnabled / LocalEntryNotFoundError / HfHubHTTPError, and datasets'
        # DatasetNotFoundError and "is not cached" (both FileNotFoundError).
        from huggingface_hub.errors import HfHubHTTPError

        cause = f"{type(error).__name__}: {one_line(error)}"
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


def find_image_column(dataset: Any, image_column: str | None, flag: str) -> str:
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


def row_image(value: Any) -> bytes | Image.Image:
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
            raise Skip(f"{UNREADABLE} ({type(error).__name__})") from None
    raise Skip(NOT_AN_IMAGE)

