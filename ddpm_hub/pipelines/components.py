"""What the editing pipelines share about their components: the DDPM scheduler they need, loading a plain or a
class-conditional folder, and the network as an edit calls it (with class labels and classifier-free guidance for a
class-conditional model).

A class-conditional folder (`ClassConditionalDDPMPipeline`'s, what `train_ddpm.py --class_conditional` writes) names
its own `pipeline.py` in model_index.json, so diffusers' loader would import that file (and only with
trust_remote_code=True). `EditingPipeline.from_pretrained` loads such a folder with
`ClassConditionalDDPMPipeline.from_pretrained` instead, which runs nothing from the folder, and every other folder
with diffusers' own loader, as before.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Union

import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import InputError, one_line
from ..scheduling_ddpm import DDPMScheduler
from .class_conditional import DEFAULT_GUIDANCE_SCALE, ClassConditionalDDPMPipeline

# model_index.json's "_class_name" of a ClassConditionalDDPMPipeline folder (the Hub's custom-pipeline convention)
CLASS_CONDITIONAL_INDEX_NAME = ["pipeline", ClassConditionalDDPMPipeline.__name__]
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")

# The network as one edit calls it: (x_t [N x C x H x W], t) -> the model output [N x C' x H x W].
ModelOutput = Callable[[torch.Tensor, Union[int, torch.Tensor]], torch.Tensor]


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


def has_class_embeddings(unet) -> bool:
    """Whether `unet` takes class labels (a UNet2DModel with num_class_embeds or a class_embed_type)."""
    return unet.config.get("num_class_embeds") is not None or unet.config.get("class_embed_type") is not None


def is_class_conditional_folder(pretrained_model_name_or_path: str | os.PathLike, **download) -> bool:
    """Whether a local folder or Hub repo is a ClassConditionalDDPMPipeline one, by its model_index.json alone (a
    repo's is fetched with huggingface_hub.hf_hub_download and `download`: revision, token, cache_dir, ...)."""
    path = str(pretrained_model_name_or_path)
    if os.path.isdir(path):
        index_file = Path(path) / DiffusionPipeline.config_name
        if not index_file.is_file():
            return False  # diffusers' loader says what is missing
    else:
        from huggingface_hub import hf_hub_download

        index_file = Path(hf_hub_download(path, DiffusionPipeline.config_name, **download))
    index = json.loads(index_file.read_text(encoding="utf-8"))
    return isinstance(index, dict) and index.get("_class_name") == CLASS_CONDITIONAL_INDEX_NAME


class EditingPipeline(DiffusionPipeline):
    """The base of DDPMInpaintPipeline and DDPMImg2ImgPipeline: a unet, the model's DDPM scheduler and, for a
    class-conditional unet, its class names.

    Components: unet (a UNet2DModel; with `num_class_embeds` = K + 1 for a class-conditional model, id K "no
    class"), scheduler (a DDPM scheduler config: ours, or diffusers' DDPMScheduler, read into ours; its config is the
    model's, never re-typed), id2label (`{id: name}` of a class-conditional model, as ClassConditionalDDPMPipeline
    keeps it; None: "0", "1", ...; an unconditional model has none).

    Attributes: id2label and labels (`{name: id}`), as ClassConditionalDDPMPipeline's (empty for an unconditional
    model); `get_label_ids(names)`.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, id2label: dict[Union[int, str], str] | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=as_ddpm_scheduler(scheduler, type(self).__name__))
        if has_class_embeddings(unet):
            names = ClassConditionalDDPMPipeline(unet, scheduler, id2label=id2label).id2label  # checks unet, id2label
            self.register_to_config(id2label={str(i): name for i, name in names.items()})
            self.id2label = names
        elif id2label:
            raise ValueError("id2label is given, but the unet has no class embeddings (num_class_embeds): an "
                             "unconditional model has no classes to name")
        else:
            self.id2label = {}
        self.labels = {name: i for name, i in sorted((name, i) for i, name in self.id2label.items())}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a DDPMPipeline folder or Hub repo (ours, or the google/ddpm-* layout) with diffusers' loader, or a
        ClassConditionalDDPMPipeline one with `ClassConditionalDDPMPipeline.from_pretrained`: its unet/ and
        scheduler/ and id2label, nothing executed from the folder, no trust_remote_code (that loader's kwargs:
        unet=, scheduler=, id2label=, torch_dtype=, and revision=, token=, ... for a repo)."""
        download = {key: kwargs[key] for key in DOWNLOAD_KWARGS if key in kwargs}
        if not is_class_conditional_folder(pretrained_model_name_or_path, **download):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        loaded = ClassConditionalDDPMPipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls(unet=loaded.unet, scheduler=loaded.scheduler, id2label=loaded.id2label)

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class names to class ids, as ClassConditionalDDPMPipeline.get_label_ids (DiTPipeline's method)."""
        return self._class_conditional(self.unet, "get_label_ids").get_label_ids(label)

    def model_output(self, class_labels, guidance_scale: float | None, batch_size: int,
                     unet=None) -> ModelOutput:
        """The network as this edit calls it at every step: (x_t [N x C x H x W], t) -> [N x C' x H x W].

        Unconditional unet: `unet(x_t, t)`; class_labels is an InputError (the model has no classes).
        Class-conditional unet: class_labels None is the "no class" id K (unconditional editing); given labels (ids
        or names, one per image or one for all), ClassConditionalDDPMPipeline's `guided_model_output` over this same
        unet, the classifier-free guided output eps_u + s (eps_c - eps_u) at s = guidance_scale (None:
        DEFAULT_GUIDANCE_SCALE). A guidance_scale other than None or 1 without class labels is an InputError.

        unet: the network to call (default self.unet; img2img passes the one its sampler sees, `MeanOnly` for an
            ODE sampler of a learned-variance model).
        """
        unet = self.unet if unet is None else unet
        if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(
                guidance_scale, numbers.Real) or not guidance_scale >= 0):  # also refuses NaN
            raise InputError(f"guidance_scale must be a number >= 0 (1: no guidance), got {guidance_scale!r}")
        if class_labels is None:
            if guidance_scale not in (None, 1):
                raise InputError(f"guidance_scale={guidance_scale} needs class_labels: guidance steers the edit "
                                 "toward a class; give class_labels or drop guidance_scale")
            if not has_class_embeddings(unet):
                return lambda sample, t: unet(sample, t).sample
        guided = self._class_conditional(unet, "class_labels")
        if class_labels is None:
            class_ids, guidance_scale = torch.full((batch_size,), guided.null_class_id), 1.0
        else:
            class_ids = self._class_ids(guided, class_labels, batch_size)
            guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else float(guidance_scale)
        class_ids = class_ids.to(self._execution_device)
        return lambda sample, t: guided.guided_model_output(sample, t, class_ids, guidance_scale)

    def _class_conditional(self, unet, argument: str) -> ClassConditionalDDPMPipeline:
        """A ClassConditionalDDPMPipeline over `unet` (shared) with this pipeline's scheduler and id2label, for its
        label parsing and guidance; an InputError naming `argument` for a model without classes."""
        if not has_class_embeddings(unet):
            raise InputError(f"{argument}: this model has no classes (its unet has no class embeddings, "
                             "num_class_embeds); it edits without class labels")
        guided = ClassConditionalDDPMPipeline(unet, self.scheduler, id2label=self.id2label)
        guided.set_progress_bar_config(disable=True)
        return guided

    @staticmethod
    def _class_ids(guided: ClassConditionalDDPMPipeline, class_labels, batch_size: int) -> torch.Tensor:
        """class_labels as ids [batch_size] (one label repeated for all images); one-line InputErrors."""
        try:
            class_ids = guided.class_ids(class_labels)
        except ValueError as error:
            raise InputError(one_line(error)) from None
        if len(class_ids) == 1:
            return class_ids.expand(batch_size)
        if len(class_ids) != batch_size:
            raise InputError(f"class_labels has {len(class_ids)} entries for {batch_size} images: give one per "
                             "image or one for all")
        return class_ids
