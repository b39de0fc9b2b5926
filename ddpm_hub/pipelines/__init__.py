"""Pipelines beyond sampling, for any DDPMPipeline folder: `DDPMInpaintPipeline` (RePaint inpainting, `inpaint`) and
`DDPMImg2ImgPipeline` (SDEdit image-to-image, `img2img`); `image_inputs` checks and converts what they take and give."""

from .img2img import DDPMImg2ImgPipeline
from .inpaint import DDPMInpaintPipeline

__all__ = ["DDPMImg2ImgPipeline", "DDPMInpaintPipeline"]
