"""Pipelines diffusers lacks. Each module here imports only torch, numpy and diffusers, because an exported folder
carries it as its own `pipeline.py` (loaded with `trust_remote_code=True` where ddpm_hub is not installed)."""

from .class_conditional import ClassConditionalDDPMPipeline

__all__ = ["ClassConditionalDDPMPipeline"]
