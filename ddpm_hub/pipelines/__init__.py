"""Pipelines diffusers lacks, for any DDPMPipeline folder: `ClassConditionalDDPMPipeline` (classifier-free
guidance over class labels), `DDPMInpaintPipeline` (RePaint inpainting, `inpaint`) and `DDPMImg2ImgPipeline` (SDEdit
image-to-image, `img2img`); `image_inputs` checks and converts what the editing pipelines take and give.
`class_conditional` imports only torch, numpy and diffusers, because an exported folder carries it as its own
`pipeline.py` (loaded with `trust_remote_code=True` where ddpm_hub is not installed)."""

from .class_conditional import ClassConditionalDDPMPipeline
from .img2img import DDPMImg2ImgPipeline
from .inpaint import DDPMInpaintPipeline

__all__ = ["ClassConditionalDDPMPipeline", "DDPMImg2ImgPipeline", "DDPMInpaintPipeline"]
