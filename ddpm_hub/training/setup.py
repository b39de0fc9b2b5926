"""Before the loop: the Accelerator the flags ask for, every CPU core for a single process, and the output
folder's rules (an earlier run is continued with --resume_from_checkpoint or replaced with --overwrite_output_dir,
never silently mixed with a new one)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError

# what every run writes into output_dir, besides its task's model parts (Task.artifacts)
COMMON_ARTIFACTS = ("model_index.json", "README.md", "samples", "logs", "loss_curve.png", "checkpoint-*")
# the names that mark output_dir as holding an earlier run (a folder with only logs/ or samples/ does not)
EARLIER_RUN_MARKERS = ("model_index.json", "unet", "vae", "checkpoint-*", "vae-checkpoint-*")


def make_accelerator(output_dir: Path, args):
    """The run's Accelerator: gradient accumulation, mixed precision, the logger (none, tensorboard or wandb)
    writing under output_dir/--logging_dir, and a seedable sampler (exact resume). Under torchrun on a CPU-only
    machine, accelerate forms gloo ranks from WORLD_SIZE only when told cpu=True."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    use_all_cpu_cores(accelerator)
    return accelerator


def use_all_cpu_cores(accelerator) -> None:
    """`accelerate launch` without --cpu exports OMP_NUM_THREADS=1 (meant to stop several processes from
    oversubscribing cores); a single CPU process then trains on one core. Give it the cores it may use."""
    import torch

    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ
    if (accelerator.device.type == "cpu" and accelerator.num_processes == 1 and launched_by_accelerate
            and os.environ.get("OMP_NUM_THREADS") == "1"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores > torch.get_num_threads():
            torch.set_num_threads(cores)
            accelerator.print(f"using {cores} CPU threads (accelerate launch had set OMP_NUM_THREADS=1)")


def prepare_output_dir(output_dir: Path, args, accelerator, artifacts: Iterable[str]) -> None:
    """Refuse a file, and an earlier run unless --overwrite_output_dir or --resume_from_checkpoint says what to do;
    with --overwrite_output_dir (and no resume), delete what runs write (`artifacts`: names or globs) first."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output_dir {str(output_dir)!r} is a file; give a folder")
    earlier = output_dir.is_dir() and any(any(output_dir.glob(name)) for name in EARLIER_RUN_MARKERS)
    if earlier and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        raise InputError(f"--output_dir {str(output_dir)!r} holds an earlier run; pass --resume_from_checkpoint latest "
                         "to continue it or --overwrite_output_dir to replace it")
    if earlier and args.overwrite_output_dir and not args.resume_from_checkpoint:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for path in {path for name in (*COMMON_ARTIFACTS, *artifacts) for path in output_dir.glob(name)}:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        accelerator.wait_for_everyone()
