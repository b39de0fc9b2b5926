"""Write a training run's model as a folder that stock diffusers loads: model_index.json, unet/, scheduler/.

The folder names only diffusers classes (so `DDPMPipeline.from_pretrained(folder)` works without ddpm_hub),
and `ddpm_hub.DDPMScheduler.from_pretrained(folder, subfolder="scheduler")` loads the same config. Each part is
written to a temporary name first and swapped in with renames, so an interrupted export never leaves a
half-written unet/ that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PIPELINE_PARTS = ("unet", "scheduler", "model_index.json")


def save_pipeline(output_dir: str | os.PathLike, unet, scheduler_config: dict) -> Path:
    """Save `unet` (safetensors) and a diffusers DDPMScheduler with `scheduler_config` as a DDPMPipeline folder.

    Other files in output_dir (checkpoints, samples, logs, the model card) are left alone.
    """
    from diffusers import DDPMPipeline
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler

    pipeline = DDPMPipeline(unet=unet, scheduler=DiffusersDDPMScheduler.from_config(scheduler_config))
    return save_pipeline_parts(pipeline, output_dir, PIPELINE_PARTS)


def save_pipeline_parts(pipeline, output_dir: str | os.PathLike, parts: tuple[str, ...]) -> Path:
    """`pipeline.save_pretrained` (safetensors) into a temporary folder inside output_dir, then each of `parts`
    swapped in by renames; other files in output_dir are left alone."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=output_dir))
    try:
        pipeline.save_pretrained(staging, safe_serialization=True)
        swap_in(staging, output_dir, parts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def swap_in(staging: Path, output_dir: Path, parts: tuple[str, ...]) -> None:
    """Move each finished part from `staging` into `output_dir`, replacing the old one by renames only."""
    for name in parts:
        new, final = staging / name, output_dir / name
        if not new.exists():
            continue
        if new.is_dir():
            old = output_dir / f".tmp-old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(new, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(new, final)
