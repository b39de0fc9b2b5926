"""Decoding a whole source on every core: files (or dataset rows) in chunks to a process pool, results back in the
source's order, with a progress bar showing files/s and what was skipped so far.

Each worker decodes exactly as the one-process path does (`decoding.decode_file` for a folder's files,
`decoding.prepare_image` of `hub_datasets.row_image` for a dataset's rows, then `decoding.with_image_channels`), so a
store built here holds the bytes the in-memory path would hold.

Why processes and not threads: PIL releases the GIL while it decodes and resizes, but the Python around it (PNG
chunk parsing, EXIF, numpy conversions) does not; on 2 cores, 200 photo-sized PNG/JPEG files decoded 1.74x faster
with 2 threads and 1.98x faster with 2 processes than with one. On Linux the pool forks (workers start at once,
with the parent's imports); elsewhere it spawns.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .decoding import Skip, count_reasons, decode_file, prepare_image, with_image_channels
from .hub_datasets import row_image

CHUNK = 16  # items per task: large enough to amortise the pickling, small enough for an even split and a live bar

# A decoded item: (uint8 [C x H x W], was it grayscale); a skipped one: the reason.
Outcome = tuple[np.ndarray, bool] | str


@dataclass(frozen=True)
class DecodeSettings:
    """How each item is decoded. channels: 1 or 3 (None is not allowed here: a store decodes to 3 channels and keeps
    the gray flags, then keeps one channel if every image was gray)."""

    resolution: int
    center_crop: bool
    channels: int


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a cluster job's share), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_files(paths: Sequence[Path], settings: DecodeSettings, *, workers: int, desc: str) -> Iterator[Outcome]:
    """Every file, in order: decoded, or the reason it is skipped (`decoding.decode_file`'s reasons)."""
    chunks = [list(paths[i:i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    return _run(_decode_paths, chunks, len(paths), settings, None, workers=workers, desc=desc, unit="file")


def decode_rows(dataset: Any, column: str, rows: Sequence[int], settings: DecodeSettings, *, workers: int,
                desc: str) -> Iterator[Outcome]:
    """The given rows of a datasets Dataset whose `column` holds undecoded images ({"bytes", "path"}), in order."""
    chunks = [list(rows[i:i + CHUNK]) for i in range(0, len(rows), CHUNK)]
    return _run(_decode_row_list, chunks, len(rows), settings, (dataset, column), workers=workers, desc=desc,
                unit="row")


def _run(work, chunks: list, total: int, settings: DecodeSettings, source: Any, *, workers: int, desc: str,
         unit: str) -> Iterator[Outcome]:
    """Outcomes of `work(chunk)` for every chunk, flattened, in order; a tqdm bar counts items, rate and skips.
    A consumer that stops early (enough images) ends the pool."""
    from tqdm.auto import tqdm

    workers = max(1, min(workers, len(chunks)))
    skipped: list[tuple[str, str]] = []
    pool = bar = None
    try:
        if workers == 1:  # no pool for one worker: nothing to start, nothing to pickle
            _init(settings, source)
            results = map(work, chunks)
        else:  # started before the bar, whose monitor thread a fork need not copy
            pool = _context().Pool(workers, initializer=_init, initargs=(settings, source))
            results = pool.imap(work, chunks)
        # leave=False: the bar clears itself; the store logs what was decoded and the dataset's summary the skips
        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5, leave=False)
        for outcomes in results:  # a chunk counts when it arrives (a consumer may stop pulling after its last item)
            reasons = [("", outcome) for outcome in outcomes if isinstance(outcome, str)]
            if reasons:
                skipped += reasons
                bar.set_postfix_str(f"skipped {len(skipped)}: {count_reasons(skipped)}")
            bar.update(len(outcomes))
            yield from outcomes
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        _init(None, None)


def _context():
    """fork on Linux (workers inherit the imports and the dataset; nothing is re-imported), spawn elsewhere (macOS
    and Windows, where fork is unsafe or missing)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


# ------------------------------------------------------------------------------------------------ in the workers
_SETTINGS: DecodeSettings | None = None
_SOURCE: Any = None


def _init(settings: DecodeSettings | None, source: Any) -> None:
    global _SETTINGS, _SOURCE
    _SETTINGS, _SOURCE = settings, source


def _finish(decoded: tuple[np.ndarray, bool]) -> tuple[np.ndarray, bool]:
    pixels, grayscale = decoded
    return with_image_channels(pixels, grayscale, _SETTINGS.channels), grayscale


def _decode_paths(paths: list[Path]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for path in paths:
        try:
            outcomes.append(_finish(decode_file(path, _SETTINGS.resolution, _SETTINGS.center_crop)))
        except Skip as skip:
            outcomes.append(skip.reason)
    return outcomes


def _decode_row_list(rows: list[int]) -> list[Outcome]:
    dataset, column = _SOURCE
    outcomes: list[Outcome] = []
    contiguous = rows == list(range(rows[0], rows[-1] + 1))
    for value in dataset[rows[0]:rows[-1] + 1][column] if contiguous else dataset[rows][column]:
        try:
            outcomes.append(_finish(prepare_image(row_image(value), _SETTINGS.resolution, _SETTINGS.center_crop)))
        except Skip as skip:
            outcomes.append(skip.reason)
    return outcomes
