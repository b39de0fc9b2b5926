"""The decoded store: a source's training images decoded once, at one resolution, into a file of uint8 pixels that
every process of this run and of later runs memory-maps read-only, so that N processes share one copy through the
page cache instead of each decoding and holding its own.

A store is the folder `<data_cache_dir>/<name>-<source12>/<key16>/`:
  - `pixels.u8`: every kept image, uint8 [C x H x W] C-contiguous, one after another in the source's order;
  - `index.npy`: int64 [N x 2], each image's H and W (offsets are the running sum of C * H * W);
  - `manifest.json`, written last: the format version, the full key, the counts, the channels, the byte size of
    pixels.u8, the sha256 of index.npy, the skipped entries with their reasons, the captions (captioned data).

`source12` names the source and the decode settings (a folder's path or a dataset's name, config, split and columns;
resolution, crop, channels), `key16` its current state (every file's relative path, size and mtime, or the Arrow
files and fingerprint of a datasets Dataset; our format version; Pillow's version, whose resize the pixels depend
on). A changed, added or removed file gives another key: the store is rebuilt, and the stores of earlier states of
the same source are deleted after it (another resolution or crop is another source and keeps its own).

Written once: the first process takes the source's file lock (`filelock`, released by the OS if the process dies),
decodes into `.tmp-<key16>-<random>/` and renames it to `<key16>/` after the manifest; the others wait on the lock
and then open what it wrote. Every open checks the manifest against the key, the index against its sha256 and the
size of pixels.u8 against the manifest; a store that fails (truncated, edited, another format) is deleted and
rebuilt with a warning, never read. The pixels' bytes are not re-hashed on open (that would read the whole store on
every run, the cost the store exists to remove); the temp-name-then-rename write is what keeps them whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_text, fsync_dir
from ..errors import InputError
from .dataset import PackedImages
from .decode_pool import Outcome

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PIXELS, INDEX, MANIFEST, LOCK = "pixels.u8", "index.npy", "manifest.json", ".lock"
TMP_PREFIX = ".tmp-"
_COMPACT_CHUNK = 64 << 20  # bytes read at a time when an all-gray store drops to one channel


def default_data_cache_dir() -> Path:
    """`<datasets' cache>/ddpm_hub-decoded`: datasets' cache folder (HF_DATASETS_CACHE, else HF_HOME/datasets, else
    ~/.cache/huggingface/datasets), where the Arrow files of the Hub datasets these stores are decoded from live too.
    Shared by every run of the user whatever its --output_dir."""
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "ddpm_hub-decoded"


def data_cache_location(data_cache_dir: str | None, no_data_cache: bool) -> Path | None:
    """The folder of the decoded stores, or None for the in-memory path; InputError when both flags are given."""
    if no_data_cache and data_cache_dir is not None:
        raise InputError(f"--no_data_cache and --data_cache_dir {data_cache_dir!r} contradict each other: keep the "
                         "decoded images in memory, or store them in that folder; give one")
    if no_data_cache:
        return None
    if data_cache_dir is None:
        return default_data_cache_dir()
    location = Path(data_cache_dir).expanduser()
    if location.exists() and not location.is_dir():
        raise InputError(f"--data_cache_dir {data_cache_dir!r} is a file: give a folder (created if missing)")
    return location


@dataclass(frozen=True)
class StoreKey:
    """What a store's bytes depend on. name: readable part of the folder name; source: the source and the decode
    settings (JSON values); content: the source's current state (JSON values). Stores of one source share a folder
    and one lock; a new content replaces the old."""

    name: str
    source: dict[str, Any]
    content: Any

    @property
    def source_digest(self) -> str:
        return _sha256_json(self.source)

    @property
    def digest(self) -> str:
        from PIL import __version__ as pillow

        return _sha256_json({"format": FORMAT_VERSION, "pillow": pillow, "source": self.source,
                             "content": self.content})

    def folder(self, cache_dir: str | os.PathLike) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("._")[:40] or "data"
        return Path(cache_dir).expanduser() / f"{slug}-{self.source_digest[:12]}" / self.digest[:16]


def folder_content(root: Path, paths: Sequence[Path]) -> list[list]:
    """A folder's state: [relative POSIX path, size, mtime in ns] of each file, in the given order. A file that
    cannot be stat'ed counts with size and mtime -1 (it is then skipped as unreadable)."""
    rows = []
    for path in paths:
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        rows.append([path.relative_to(root).as_posix(), size, mtime])
    return rows


def dataset_content(dataset: Any) -> dict[str, Any] | None:
    """A datasets Dataset's state: its Arrow files' paths, sizes and mtimes and its fingerprint (datasets' own cache
    key, `_fingerprint`: there is no public accessor). None for a dataset held in memory (no files to key it by)."""
    files = [entry["filename"] for entry in dataset.cache_files]
    if not files:
        return None
    stats = [os.stat(name) for name in files]
    return {"fingerprint": getattr(dataset, "_fingerprint", None),
            "files": [[name, stat.st_size, stat.st_mtime_ns] for name, stat in zip(files, stats)]}


@dataclass
class StoredImages:
    """An opened store. images: uint8 [N x C x R x R] when every image is square, else `PackedImages`; both are
    views of the memory-mapped pixels.u8. skipped: (name, reason) as the builder recorded them. captions: one per
    image (str, or tuple of str to draw from), or None."""

    folder: Path
    images: torch.Tensor | PackedImages
    num_channels: int
    skipped: list[tuple[str, str]]
    captions: list[str | tuple[str, ...]] | None
    built: bool


class StoreWriter:
    """Receives a source's images in order (`add`) and skipped entries (`skip`), appending the pixels to pixels.u8.

    num_channels: 1 or 3, or None for "follow the data": the images then arrive with 3 channels (a gray one repeated,
    as `decoding.to_tensors` does when the data has colour), and if every one was gray, `finish` keeps one channel.
    """

    def __init__(self, folder: Path, num_channels: int | None):
        self.folder = folder
        self.requested_channels = num_channels
        self.channels = num_channels or 3
        self.shapes: list[tuple[int, int]] = []
        self.skipped: list[tuple[str, str]] = []
        self.captions: list[Any] = []
        self.all_gray = True
        folder.mkdir(parents=True)
        self._file = open(folder / PIXELS, "xb")

    @property
    def count(self) -> int:
        return len(self.shapes)

    def add(self, pixels: np.ndarray, grayscale: bool, caption: Any = None) -> None:
        """One image, uint8 [channels x H x W]."""
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[0] == self.channels, pixels.shape
        self._file.write(np.ascontiguousarray(pixels).data)
        self.shapes.append((pixels.shape[1], pixels.shape[2]))
        self.all_gray = self.all_gray and grayscale
        self.captions.append(caption)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))

    def finish(self, key: StoreKey, resolution: int, seconds: float, captioned: bool) -> None:
        """Close pixels.u8 (dropping to one channel if every image was gray and the channels follow the data), write
        index.npy, fsync both, then the manifest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.requested_channels is None and self.all_gray and self.channels == 3:
            self._keep_first_channel()
        index = np.asarray(self.shapes, dtype=np.int64).reshape(-1, 2)
        np.save(self.folder / INDEX, index, allow_pickle=False)
        _fsync(self.folder / INDEX)
        pixel_bytes = self.channels * int((index[:, 0] * index[:, 1]).sum())
        assert (self.folder / PIXELS).stat().st_size == pixel_bytes
        captions = [list(c) if isinstance(c, tuple) else c for c in self.captions] if captioned else None
        manifest = {"format": FORMAT_VERSION, "key": key.digest, "source": key.source, "count": self.count,
                    "channels": self.channels, "resolution": resolution, "pixel_bytes": pixel_bytes,
                    "index_sha256": _sha256_file(self.folder / INDEX), "skipped": [list(s) for s in self.skipped],
                    "captions": captions, "decode_seconds": round(seconds, 3)}
        atomic_write_text(self.folder / MANIFEST, json.dumps(manifest) + "\n")
        fsync_dir(self.folder)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()

    def _keep_first_channel(self) -> None:
        """Every image was gray: rewrite [3 x H x W] (three equal planes) as [1 x H x W], a stream copy."""
        source = np.memmap(self.folder / PIXELS, dtype=np.uint8, mode="r")
        target = self.folder / f"{PIXELS}.gray"
        with open(target, "xb") as out:
            offset = 0
            for height, width in self.shapes:
                plane = height * width
                out.write(source[offset:offset + plane].data)
                offset += 3 * plane
            out.flush()
            os.fsync(out.fileno())
        del source
        os.replace(target, self.folder / PIXELS)
        self.channels = 1


def load_or_build(cache_dir: str | os.PathLike, key: StoreKey, build: Callable[[StoreWriter], None], *,
                  num_channels: int | None, resolution: int, captioned: bool = False) -> StoredImages:
    """Open the store of `key` under cache_dir, building it first if it is missing or damaged.

    build(writer) decodes the source into the writer (it may raise InputError, e.g. when no image is usable: then
    nothing is kept). Only one process builds (the source's file lock); the others wait, then open what it wrote.
    The builder shows the decode's progress bar and logs what it built.
    """
    folder = key.folder(cache_dir)
    store, problem = _open(folder, key)
    if store is not None:
        return store
    folder.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder.parent / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process to finish decoding into %s", folder)
        lock.acquire()
    try:
        store, problem = _open(folder, key)  # another process may have built it while this one waited
        if store is not None:
            return store
        if problem is not None:
            logger.warning("the decoded store %s is damaged (%s): deleting it and decoding again", folder, problem)
        _remove(folder)
        _clear_leftovers(folder.parent)
        _write(folder, key, build, num_channels, resolution, captioned)
        _remove_earlier_states(folder)
    finally:
        lock.release()
    store, problem = _open(folder, key)
    if store is None:
        raise RuntimeError(f"the decoded store {folder} just written does not open: {problem}")
    store.built = True
    return store


def load_or_decode(cache_dir: str | os.PathLike, key: StoreKey, names: Sequence[str],
                   decode: Callable[[list[int]], Iterator[Outcome]], *, resolution: int, num_channels: int | None,
                   on_empty: Callable[[list[tuple[str, str]]], Exception], pre_skips: Sequence[str | None] | None = None,
                   captions: Sequence[Any] | None = None, num_images: int | None = None,
                   check_captions: Callable[[list[Any]], None] | None = None) -> StoredImages:
    """`load_or_build` for a source of named entries (files or rows), decoded in order by `decode(positions)`
    (`decode_pool.decode_files` / `decode_rows` of those entries).

    pre_skips: per entry, a reason known without decoding (not listed in the metadata, a caption that is not text),
    which wins over the decode and spares it. captions: per entry, kept with each image. num_images: stop after this
    many usable images (the skips recorded are those met before). on_empty(skipped): the error to raise when no entry
    is usable; check_captions(the kept images' captions) may raise too: nothing is stored then.
    """

    def build(writer: StoreWriter) -> None:
        todo = [i for i in range(len(names)) if not (pre_skips and pre_skips[i])]
        with contextlib.closing(decode(todo)) as outcomes:
            for i, name in enumerate(names):
                if pre_skips and pre_skips[i]:
                    writer.skip(name, pre_skips[i])
                    continue
                outcome = next(outcomes)
                if isinstance(outcome, str):
                    writer.skip(name, outcome)
                    continue
                writer.add(*outcome, caption=captions[i] if captions is not None else None)
                if num_images is not None and writer.count == num_images:
                    break
        if writer.count == 0:
            raise on_empty(writer.skipped)
        if check_captions is not None:
            check_captions(writer.captions)

    return load_or_build(cache_dir, key, build, num_channels=num_channels, resolution=resolution,
                         captioned=captions is not None)


def _write(folder: Path, key: StoreKey, build: Callable[[StoreWriter], None], num_channels: int | None,
           resolution: int, captioned: bool) -> None:
    """Decode into a temp folder beside `folder`, then rename it: `folder` exists complete or not at all."""
    tmp = folder.with_name(f"{TMP_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    writer = StoreWriter(tmp, num_channels)
    try:
        build(writer)
        writer.finish(key, resolution, time.perf_counter() - started, captioned)
        os.rename(tmp, folder)
        fsync_dir(folder.parent)
    finally:
        writer.abort()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    size = (folder / PIXELS).stat().st_size
    logger.info("decoded %d images (%d skipped) in %.1f s into %s (%.1f MB)", writer.count, len(writer.skipped),
                time.perf_counter() - started, folder, size / 1e6)


def _open(folder: Path, key: StoreKey) -> tuple[StoredImages | None, str | None]:
    """(the opened store, None), or (None, None) when there is none, or (None, what is wrong with it)."""
    if not folder.is_dir():
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no {MANIFEST}"
    except (OSError, ValueError) as error:
        return None, f"{MANIFEST} unreadable ({type(error).__name__})"
    try:
        return _open_checked(folder, key, manifest), None
    except _Damaged as damage:
        return None, str(damage)
    except FileNotFoundError as error:
        if folder.is_dir():
            return None, f"{Path(error.filename or '?').name} is missing"
        return None, None  # deleted while opening (replaced by a newer state of the source): as if never there


class _Damaged(Exception):
    """A store that fails its checks (the message says which); it is rebuilt, never read."""


def _open_checked(folder: Path, key: StoreKey, manifest: dict) -> StoredImages:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key.digest:
        raise _Damaged(f"{MANIFEST} does not match: format or key differs from this source's")
    try:
        count, channels, pixel_bytes = (int(manifest[name]) for name in ("count", "channels", "pixel_bytes"))
        skipped = [(str(name), str(reason)) for name, reason in manifest["skipped"]]
        captions = manifest["captions"]
        index_sha256 = manifest["index_sha256"]
    except (KeyError, TypeError, ValueError) as error:
        raise _Damaged(f"{MANIFEST} lacks or garbles {error}") from None
    if _sha256_file(folder / INDEX) != index_sha256:
        raise _Damaged(f"{INDEX} does not match the sha256 in {MANIFEST}")
    index = np.load(folder / INDEX, allow_pickle=False)
    if index.shape != (count, 2) or channels not in (1, 3) or count < 1:
        raise _Damaged(f"{INDEX} holds {index.shape}, {MANIFEST} says {count} images of {channels} channels")
    if channels * int((index[:, 0] * index[:, 1]).sum()) != pixel_bytes:
        raise _Damaged(f"{INDEX} sizes do not add up to the {pixel_bytes} bytes {MANIFEST} gives")
    actual = (folder / PIXELS).stat().st_size
    if actual != pixel_bytes:
        raise _Damaged(f"{PIXELS} has {actual} bytes, {MANIFEST} says {pixel_bytes} (truncated or appended to)")
    if captions is not None and len(captions) != count:
        raise _Damaged(f"{MANIFEST} has {len(captions)} captions for {count} images")
    # MAP_PRIVATE: clean pages are the page cache's, shared by every process; a write would copy, never reach the file
    flat = torch.from_file(str(folder / PIXELS), shared=False, size=pixel_bytes, dtype=torch.uint8)
    heights, widths = index[:, 0], index[:, 1]
    side = int(heights[0])
    if (heights == side).all() and (widths == side).all():
        images: torch.Tensor | PackedImages = flat.view(count, channels, side, side)
    else:
        images = PackedImages(flat, channels, index)
    if captions is not None:
        captions = [tuple(c) if isinstance(c, list) else c for c in captions]
    return StoredImages(folder=folder, images=images, num_channels=channels, skipped=skipped, captions=captions,
                        built=False)


def _remove(folder: Path) -> None:
    """Delete a store folder by renaming it to a temp name first, so no half-deleted store ever looks complete."""
    if folder.exists():
        doomed = folder.with_name(f"{TMP_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}.deleting")
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _clear_leftovers(source_folder: Path) -> None:
    """Temp folders of builds that died (only the lock holder writes, and it holds the lock now)."""
    for child in source_folder.iterdir():
        if child.name.startswith(TMP_PREFIX) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _remove_earlier_states(folder: Path) -> None:
    """The stores of this source's earlier states (files changed since): a process still training on one keeps its
    mapping (POSIX frees the pages when the last one unmaps)."""
    for child in folder.parent.iterdir():
        if child.is_dir() and child != folder and not child.name.startswith(TMP_PREFIX):
            logger.info("deleting the decoded store of an earlier state of this source: %s", child)
            _remove(child)


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
