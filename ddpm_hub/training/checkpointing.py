"""Crash-safe training checkpoints: the U-Net run's (around accelerate's `save_state` / `load_state`) and the VAE
stage's, with one mechanism.

A checkpoint is the folder `output_dir/{prefix}{N}` (N = the step; prefix "checkpoint-" for the training loop,
"vae-checkpoint-" for the VAE stage) holding what its writer puts there (for the loop: what
`Accelerator.save_state` writes, model weights as safetensors, optimizer, LR scheduler, one RNG file per process,
plus `training_state.json`, the loop's counters) and one file of ours:

- `manifest.json`: written LAST, lists every other file with its size and sha256.

Why a folder can be trusted (the same idea as a database commit record):
1. everything is written into `output_dir/.tmp-{prefix}{N}`, a name nothing ever resumes from;
2. the manifest is written (and fsynced) only after every other file is complete;
3. `os.rename` of the finished folder to `{prefix}{N}` is atomic on POSIX, so a `{prefix}{N}`
   either exists complete or not at all. A kill -9 at any earlier point leaves only a `.tmp-*` folder,
   which the next save deletes.
On resume, `verify_checkpoint` re-hashes every file against the manifest, so a folder damaged later
(disk full, a partial copy between machines, a hand edit) is refused with the file and the reason.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text, fsync_dir
from ..errors import InputError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
TRAINING_STATE_NAME = "training_state.json"
MANIFEST_VERSION = 1
_HASH_CHUNK = 1 << 20


def temp_prefix(prefix: str) -> str:
    """The name of a checkpoint still being written (or deleted): never resumed from, never uploaded."""
    return f".tmp-{prefix}"


CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = temp_prefix(CHECKPOINT_PREFIX)


# ----------------------------------------------------------------------------------------------------------
# Small file-system helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint_step(path: Path, prefix: str) -> int | None:
    match = re.fullmatch(re.escape(prefix) + r"(\d+)", path.name)
    return int(match.group(1)) if match else None


def _list_checkpoints(output_dir: Path, prefix: str) -> list[tuple[int, Path]]:
    """All `{prefix}N` folders in `output_dir`, sorted by N (oldest first), complete or not."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        step = _checkpoint_step(child, prefix)
        if step is not None and child.is_dir():
            found.append((step, child))
    return sorted(found)


def _remove_tree(path: Path, prefix: str) -> None:
    """Delete a folder so that a crash mid-delete never leaves a half-deleted `{prefix}N`:
    rename it to a temp name first (atomic), then delete that."""
    doomed = path.with_name(f"{temp_prefix(prefix)}{path.name[len(prefix):]}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.rename(path, doomed)
    shutil.rmtree(doomed)


# ----------------------------------------------------------------------------------------------------------
# Manifest


def write_manifest(checkpoint_dir: Path) -> None:
    """List every file under `checkpoint_dir` (relative POSIX path, size, sha256), fsync each, then write
    `manifest.json` last, itself fsynced. Called only after every other file in the folder is final."""
    files = []
    for path in sorted(p for p in checkpoint_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(checkpoint_dir).as_posix()
        if relative == MANIFEST_NAME:
            continue
        _fsync_file(path)
        files.append({"path": relative, "size": path.stat().st_size, "sha256": _sha256(path)})
    manifest = {"version": MANIFEST_VERSION, "files": files}
    atomic_write_text(checkpoint_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    fsync_dir(checkpoint_dir)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check a checkpoint folder against its manifest.

    Raises `InputError` (one line) if the folder is missing, has no readable manifest, or any listed file
    is missing, has the wrong size or the wrong sha256; the message names the file and the reason.
    Files present but not listed (e.g. a `.DS_Store`) are ignored: accelerate never reads them.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"checkpoint {path} does not exist or is not a directory")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"checkpoint {path} has no {MANIFEST_NAME} (an incomplete save, or not made by ddpm_hub)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = [(e["path"], int(e["size"]), str(e["sha256"])) for e in manifest["files"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"checkpoint {path}: {MANIFEST_NAME} is unreadable ({type(err).__name__}: {err})") from None
    if not entries:
        raise InputError(f"checkpoint {path}: {MANIFEST_NAME} lists no files")
    for relative, size, sha256 in entries:
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise InputError(f"checkpoint {path}: {MANIFEST_NAME} lists {relative!r}, a path outside the checkpoint")
        file_path = path / relative
        if not file_path.is_file():
            raise InputError(f"checkpoint {path}: file {relative} listed in {MANIFEST_NAME} is missing")
        actual_size = file_path.stat().st_size
        if actual_size != size:
            raise InputError(
                f"checkpoint {path}: file {relative} has size {actual_size} bytes, manifest says {size} "
                "(truncated or rewritten)"
            )
        if _sha256(file_path) != sha256:
            raise InputError(f"checkpoint {path}: file {relative} has the wrong sha256 (its content is corrupted)")


# ----------------------------------------------------------------------------------------------------------
# Save


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    global_step: int,
    training_state: dict,
    total_limit: int | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save the full training state as `output_dir/checkpoint-{global_step}`, crash-safely.

    Must be called on ALL processes: `accelerator.save_state` writes one RNG file per process and
    synchronises. Only the main process touches the folder layout (temp folder, manifest, rename, pruning).

    1. main: delete a stale `.tmp-checkpoint-{N}`, create it fresh;          wait for everyone
    2. all:  `accelerator.save_state(tmp)` (safetensors weights);             wait for everyone
    3. main: `write_extra(tmp)` (what else the caller keeps: a task's state), `training_state.json` (atomic),
             then `manifest.json` LAST (fsynced),
             then `os.rename(tmp, checkpoint-{N})`; an existing `checkpoint-{N}` (re-saving a step after a
             resume) is moved aside first and deleted only after the rename
    4. main: prune to `total_limit` complete checkpoints (never the new one), delete leftover
             `.tmp-checkpoint-*` folders of crashed runs;                      wait for everyone

    `training_state` must be JSON-serialisable; `global_step` is added to it. Returns the final path
    (on every process).
    """
    output_dir = Path(output_dir)
    global_step = int(global_step)
    if global_step < 0:
        raise ValueError(f"global_step must be >= 0, got {global_step}")
    if total_limit is not None and (isinstance(total_limit, bool) or int(total_limit) < 1):
        raise InputError(
            f"--checkpoints_total_limit must be a positive integer or unset, got {total_limit!r}"
        )
    if accelerator.project_configuration.automatic_checkpoint_naming:
        # save_state would then ignore our folder and write to project_dir/checkpoints instead.
        raise ValueError(
            "save_checkpoint needs an Accelerator without ProjectConfiguration(automatic_checkpoint_naming=True)"
        )
    if training_state.get("global_step", global_step) != global_step:
        raise ValueError(
            f"training_state['global_step']={training_state['global_step']} disagrees with global_step={global_step}"
        )
    state = {"global_step": global_step, **training_state}
    # Serialise before the (slow) save_state so a non-JSON value fails fast, not after minutes of writing.
    state_text = json.dumps(state, indent=2, sort_keys=True) + "\n"

    # 1. a fresh temp folder
    tmp_dir = new_checkpoint_folder(output_dir, CHECKPOINT_PREFIX, global_step) if accelerator.is_main_process \
        else output_dir / f"{TMP_PREFIX}{global_step}"
    accelerator.wait_for_everyone()

    # 2. accelerate writes weights, optimizer, scheduler, RNG states (one file per process)
    accelerator.save_state(str(tmp_dir))
    accelerator.wait_for_everyone()

    # 3-4. our counters, the manifest last, the atomic publish; retention
    final_dir = output_dir / f"{CHECKPOINT_PREFIX}{global_step}"
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp_dir)
        atomic_write_text(tmp_dir / TRAINING_STATE_NAME, state_text)
        publish_checkpoint(tmp_dir, CHECKPOINT_PREFIX, global_step, total_limit)
    accelerator.wait_for_everyone()
    return final_dir


def new_checkpoint_folder(output_dir: str | os.PathLike, prefix: str, step: int) -> Path:
    """A fresh, empty `output_dir/.tmp-{prefix}{step}` to write a checkpoint into (a stale one is deleted)."""
    tmp_dir = Path(output_dir) / f"{temp_prefix(prefix)}{step}"
    tmp_dir.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    return tmp_dir


def publish_checkpoint(tmp_dir: Path, prefix: str, step: int, total_limit: int | None = None) -> Path:
    """Turn a finished temp folder into `{prefix}{step}`: `manifest.json` LAST (fsynced), then an atomic rename
    (an existing `{prefix}{step}`, a step saved again after a resume, is moved aside first and deleted only after
    the rename); then prune to `total_limit` complete checkpoints (never the new one) and delete leftover temp
    folders of crashed saves. Returns the published folder."""
    output_dir = tmp_dir.parent
    final_dir = output_dir / f"{prefix}{step}"
    write_manifest(tmp_dir)
    aside = None
    if final_dir.exists():
        aside = output_dir / f"{temp_prefix(prefix)}{step}.old"
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(final_dir, aside)
    os.rename(tmp_dir, final_dir)
    fsync_dir(output_dir)
    if aside is not None:
        shutil.rmtree(aside)
    logger.info("saved checkpoint %s", final_dir)
    if total_limit is not None:
        _prune_checkpoints(output_dir, prefix, int(total_limit), keep=final_dir)
    for leftover in output_dir.glob(f"{temp_prefix(prefix)}*"):
        if leftover.is_dir():
            logger.info("removing leftover %s from an interrupted save", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    return final_dir


def _prune_checkpoints(output_dir: Path, prefix: str, total_limit: int, keep: Path) -> None:
    """Delete the oldest (by step) complete checkpoints until at most `total_limit` remain, never `keep`.

    "Complete" means it has a manifest: folders without one were not written by us, so they are left alone.
    """
    complete = [path for _, path in _list_checkpoints(output_dir, prefix) if (path / MANIFEST_NAME).is_file()]
    excess = len(complete) - total_limit
    for path in complete:
        if excess <= 0:
            break
        if path == keep:
            continue
        logger.info("removing old checkpoint %s (keeping %d)", path, total_limit)
        _remove_tree(path, prefix)
        excess -= 1


# ----------------------------------------------------------------------------------------------------------
# Find / resolve / load


def find_latest_checkpoint(output_dir: str | os.PathLike,
                           prefix: str = CHECKPOINT_PREFIX) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest `{prefix}N` (by N, not mtime) in `output_dir` that verifies, or None.

    Also returns `(path, reason)` for every newer checkpoint that failed verification and was skipped, so
    the caller can warn about them. `.tmp-{prefix}*` folders (interrupted saves) are never considered.
    """
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(_list_checkpoints(Path(output_dir), prefix)):
        try:
            verify_checkpoint(path)
        except InputError as err:
            skipped.append((path, str(err)))
            continue
        return path, skipped
    return None, skipped


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """Turn the `--resume_from_checkpoint` value into a verified checkpoint folder, or None.

    - None: no resume.
    - "latest": the newest valid checkpoint in `output_dir` (warns about each newer damaged one it skips);
      none valid -> warns and returns None (training starts from scratch).
    - anything else: a path, absolute or relative to `output_dir` (e.g. "checkpoint-500"; a path relative
      to the working directory is accepted too). It must exist and verify, else `InputError`.
    """
    if resume_from_checkpoint is None:
        return None
    output_dir = Path(output_dir)
    if resume_from_checkpoint == "latest":
        latest, skipped = find_latest_checkpoint(output_dir)
        for path, reason in skipped:
            logger.warning("skipping damaged checkpoint %s: %s", path, reason)
        if latest is None:
            logger.warning("no valid checkpoint in %s; starting from scratch", output_dir)
        return latest

    candidate = Path(resume_from_checkpoint).expanduser()
    if not candidate.is_absolute():
        in_output_dir = output_dir / candidate
        candidate = in_output_dir if in_output_dir.exists() or not candidate.exists() else candidate
    if not candidate.is_dir():
        raise InputError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such checkpoint folder ({candidate}); "
            f"give 'latest', a checkpoint-N name inside {output_dir}, or a path"
        )
    try:
        verify_checkpoint(candidate)
    except InputError as err:
        raise InputError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not usable: {err}") from None
    return candidate


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict:
    """Verify `path`, restore it with `accelerator.load_state` (model, optimizer, scheduler, RNG states),
    and return its `training_state.json` dict. Call on all processes."""
    path = Path(path)
    verify_checkpoint(path)
    state_path = path / TRAINING_STATE_NAME
    if not state_path.is_file():
        raise InputError(f"checkpoint {path} has no {TRAINING_STATE_NAME}")
    training_state = json.loads(state_path.read_text(encoding="utf-8"))
    accelerator.load_state(str(path))
    logger.info("resumed from checkpoint %s (global_step=%s)", path, training_state.get("global_step"))
    return training_state
