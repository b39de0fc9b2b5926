"""ddpm_hub: the DDPM math of the study notes as diffusers-compatible, shareable models."""

__version__ = "0.1.0"

from .hub import push_to_hub  # noqa: E402
from .likelihood import bits_per_dim  # noqa: E402
from .scheduling_ddpm import DDPMScheduler, DDPMSchedulerOutput  # noqa: E402

__all__ = ["ClassConditionalDDPMPipeline", "DDPMImg2ImgPipeline", "DDPMInpaintPipeline", "DDPMScheduler",
           "DDPMSchedulerOutput", "bits_per_dim", "push_to_hub"]


def __getattr__(name: str):
    """The pipelines load on first use: importing diffusers' DiffusionPipeline costs seconds that `import ddpm_hub`
    (the scheduler, the CLIs' --help) should not pay."""
    if name in ("ClassConditionalDDPMPipeline", "DDPMImg2ImgPipeline", "DDPMInpaintPipeline"):
        from . import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'ddpm_hub' has no attribute {name!r}")
