"""Pipeline folders on disk: written so that stock diffusers loads them, and read back.

`save_pipeline` writes model_index.json, unet/ and scheduler/ naming only diffusers classes (so
`DDPMPipeline.from_pretrained(folder)` works without ddpm_hub; `save_ddim_pipeline` the same for a DDIMPipeline), and `ddpm_hub.DDPMScheduler.from_pretrained(folder,
subfolder="scheduler")` loads the same config. `save_class_conditional_pipeline` writes a class-conditional folder in
the Hub's custom-pipeline layout (its pipeline.py is the module `ddpm_hub.pipelines.class_conditional` itself). Each
part is written to a temporary name first and swapped in with renames, so an interrupted export never leaves a
half-written unet/ that looks complete. `load_pipeline_parts` reads a DDPMPipeline folder back as (UNet2DModel, our
DDPMScheduler) for the evaluation and the pictures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError, one_line

PIPELINE_PARTS = ("unet", "scheduler", "model_index.json")
# model_index.json last: it marks a finished folder, so it is swapped in after the parts it names
CLASS_CONDITIONAL_PARTS = ("unet", "scheduler", "pipeline.py", "model_index.json")


def save_pipeline(output_dir: str | os.PathLike, unet, scheduler_config: dict) -> Path:
    """Save `unet` (safetensors) and a diffusers DDPMScheduler with `scheduler_config` as a DDPMPipeline folder.

    Other files in output_dir (checkpoints, samples, logs, the model card) are left alone.
    """
    from diffusers import DDPMPipeline
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler

    pipeline = DDPMPipeline(unet=unet, scheduler=DiffusersDDPMScheduler.from_config(scheduler_config))
    return save_pipeline_parts(pipeline, output_dir, PIPELINE_PARTS)


def save_class_conditional_pipeline(output_dir: str | os.PathLike, unet, scheduler_config: dict,
                                    id2label: dict[int, str]) -> Path:
    """Save a class-conditional `unet` with a diffusers DDPMScheduler of `scheduler_config` and the class names as
    a `ClassConditionalDDPMPipeline` folder: unet/, scheduler/, model_index.json (naming ["pipeline",
    "ClassConditionalDDPMPipeline"], with id2label) and pipeline.py, the pipeline's module file itself (its
    `save_pretrained`). Loads with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` without
    ddpm_hub. Other files in output_dir are left alone."""
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler

    from .pipelines import ClassConditionalDDPMPipeline

    pipeline = ClassConditionalDDPMPipeline(unet=unet, scheduler=DiffusersDDPMScheduler.from_config(scheduler_config),
                                            id2label=id2label)
    return save_pipeline_parts(pipeline, output_dir, CLASS_CONDITIONAL_PARTS)


def save_ddim_pipeline(output_dir: str | os.PathLike, unet, scheduler_config: dict) -> Path:
    """Save `unet` (safetensors) and a diffusers DDIMScheduler with `scheduler_config` as a DDIMPipeline folder (a
    distilled student: `DiffusionPipeline.from_pretrained(folder)` gives a DDIMPipeline). Other files are left alone."""
    from diffusers import DDIMPipeline, DDIMScheduler

    pipeline = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler_config))
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


def save_model_atomically(model, folder: str | os.PathLike) -> Path:
    """`model.save_pretrained` (safetensors) into a temporary folder beside `folder`, then renamed onto it: readers
    see the old folder or the new one, never half of one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=folder.parent))
    try:
        model.save_pretrained(staging / folder.name, safe_serialization=True)
        swap_in(staging, folder.parent, (folder.name,))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_pipeline_parts(model_dir: str | os.PathLike, flag: str = "--model"):
    """(unet, scheduler) of a DDPMPipeline folder: diffusers' UNet2DModel from `unet/` (in eval mode) and our
    DDPMScheduler from `scheduler/` (the model's own config, never re-typed). One-line InputError, naming `flag`,
    for a missing folder or one that is not a pipeline folder."""
    from diffusers import UNet2DModel

    from .scheduling_ddpm import DDPMScheduler

    folder = check_pipeline_folder(model_dir, flag)
    if _is_class_conditional(folder):
        raise InputError(f"{flag} {str(model_dir)!r} holds a class-conditional model (ClassConditionalDDPMPipeline), "
                         "which samples only given classes; this takes a DDPMPipeline folder (score a "
                         "class-conditional one with benchmarks/class_conditional.py)")
    try:
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"{flag} {str(model_dir)!r} could not be loaded: {one_line(error, 300)}") from None
    return unet.eval(), scheduler


def check_pipeline_folder(model_dir: str | os.PathLike, flag: str = "--model") -> Path:
    """`model_dir` as a Path, checked to be a pipeline folder (model_index.json, unet/, scheduler/), plain or
    class-conditional; one-line InputError naming `flag` otherwise."""
    folder = Path(model_dir)
    if not folder.exists():
        raise InputError(f"{flag} {str(model_dir)!r} does not exist: give a DDPMPipeline folder (what "
                         "train_ddpm.py writes)")
    if not folder.is_dir():
        raise InputError(f"{flag} {str(model_dir)!r} is not a folder: give a DDPMPipeline folder")
    missing = [name for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
               if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{flag} {str(model_dir)!r} is not a DDPMPipeline folder: it lacks {', '.join(missing)}")
    return folder


def _is_class_conditional(folder: Path) -> bool:
    """Whether the folder's U-Net needs class labels (a ClassConditionalDDPMPipeline folder)."""
    import json

    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # unreadable: from_pretrained reports it
    return isinstance(config, dict) and (config.get("num_class_embeds") is not None
                                         or config.get("class_embed_type") is not None)
