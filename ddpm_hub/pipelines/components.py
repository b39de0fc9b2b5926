"""What the editing pipelines share about their components."""

from __future__ import annotations

from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import InputError
from ..scheduling_ddpm import DDPMScheduler


def as_ddpm_scheduler(scheduler: SchedulerMixin, pipeline: str) -> DDPMScheduler:
    """Our DDPMScheduler with `scheduler`'s config (diffusers' DDPMScheduler gives bit-equal steps); any other
    scheduler is an InputError: RePaint and SDEdit need the DDPM forward process and posterior of the model's own
    config, which the folder's scheduler/ holds."""
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler

    if isinstance(scheduler, DDPMScheduler):
        return scheduler
    if isinstance(scheduler, DiffusersDDPMScheduler):
        return DDPMScheduler.from_config({k: v for k, v in scheduler.config.items() if not k.startswith("_")})
    raise InputError(f"{pipeline} needs the model's DDPM scheduler, got {type(scheduler).__name__}: load the folder "
                     "without passing scheduler= (its scheduler/ config is read)")
