"""ddpm_hub: the DDPM math of the study notes as diffusers-compatible, shareable models."""

__version__ = "0.1.0"

from .scheduling_ddpm import DDPMScheduler, DDPMSchedulerOutput  # noqa: E402

__all__ = ["DDPMScheduler", "DDPMSchedulerOutput"]
