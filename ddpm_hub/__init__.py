"""ddpm_hub: the DDPM math of the study notes as diffusers-compatible, shareable models."""

__version__ = "0.1.0"

from .hub import push_to_hub  # noqa: E402
from .likelihood import bits_per_dim  # noqa: E402
from .pipelines import ClassConditionalDDPMPipeline  # noqa: E402
from .scheduling_ddpm import DDPMScheduler, DDPMSchedulerOutput  # noqa: E402

__all__ = ["ClassConditionalDDPMPipeline", "DDPMScheduler", "DDPMSchedulerOutput", "bits_per_dim", "push_to_hub"]
