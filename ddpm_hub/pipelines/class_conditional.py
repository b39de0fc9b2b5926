"""`ClassConditionalDDPMPipeline`: a class-conditional DDPM sampled with classifier-free guidance, as a diffusers
pipeline.

This file is also the `pipeline.py` of every folder ddpm_hub exports for a class-conditional model: its
model_index.json names ["pipeline", "ClassConditionalDDPMPipeline"] (the Hub's custom-pipeline convention), so
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads it where ddpm_hub is not installed. It
therefore imports only torch, numpy and diffusers (and huggingface_hub, diffusers' own dependency, to download).

The model: a diffusers `UNet2DModel` with `num_class_embeds = K + 1` and `class_embed_type=None`, so a learned
embedding of the class id is added to the timestep embedding. Ids 0..K-1 are the K classes; id K means "no class":
training feeds it in place of the true label a share of the time (conditioning dropout, Ho & Salimans 2022,
Algorithm 1), so that one network is both the conditional model eps(x_t, t, y) and the unconditional one
eps(x_t, t, K).

Classifier-free guidance (Ho & Salimans 2022, eq. 6, written with diffusers' guidance_scale s = 1 + w):

    eps~(x_t, t, y) = eps(x_t, t, K) + s * (eps(x_t, t, y) - eps(x_t, t, K))

s = 1 is the conditional model alone (the unconditional pass is skipped); s = 0 the unconditional one. The weights
(s and 1 - s) sum to 1 and v and x_0 are affine in eps at a fixed x_t, so the same combination of v- or
x_0-predictions is the guided prediction of that type: guidance works unchanged for every prediction type.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

CUSTOM_PIPELINE_FILE = "pipeline.py"  # the module name model_index.json's "_class_name" points to
# chosen on the digits (ddpm_hub docs/benchmarks.md, class-conditional): the middle of the scales (1.25-1.35) with
# class adherence >= 0.98 and both Frechet distances (digits CNN, pixel PCA) below an unconditional model's of the same
# budget; both distances grow with the scale (2.0 costs 1.7x for +0.01 adherence)
DEFAULT_GUIDANCE_SCALE = 1.3
LEARNED_VARIANCES = ("learned", "learned_range")
# The schedulers whose `step` reads a learned variance from 2C model channels; every other (DDIM, DPM-Solver++,
# Euler, ...) samples from the mean alone and gets the first C channels (diffusers' DPM-Solver would keep [:, :3] of
# 2C channels, right for RGB only, and DDIM cannot take 2C at all).
VARIANCE_READING_SCHEDULERS = ("DDPMScheduler", "DDPMParallelScheduler")


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    r"""Pixel-space DDPM sampling conditioned on a class, with classifier-free guidance.

    Parameters:
        unet ([`UNet2DModel`]): the denoiser, with `num_class_embeds` = number of classes + 1 (the last id is
            "no class") and `class_embed_type=None`; 2C output channels for a learned variance.
        scheduler ([`SchedulerMixin`]): any diffusers scheduler built from the saved config (DDPMScheduler,
            DDIMScheduler, DPMSolverMultistepScheduler, ...).
        id2label (`dict[int, str]`, *optional*): the class names by id, as diffusers' `DiTPipeline` takes them
            (None: the ids themselves, "0", "1", ...). Stored in model_index.json.

    Attributes:
        id2label: `{id: name}` for the K classes; labels: `{name: id}`, sorted by name (DiTPipeline's attribute);
        num_classes: K; null_class_id: K, the "no class" id.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin,
                 id2label: dict[Union[int, str], str] | None = None):  # JSON gives string keys
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        embeds = unet.config.get("num_class_embeds")
        if unet.config.get("class_embed_type") is not None or not isinstance(embeds, int) or embeds < 2:
            raise ValueError(f"unet must have class embeddings (class_embed_type None, num_class_embeds = classes "
                             f"+ 1 >= 2), got class_embed_type={unet.config.get('class_embed_type')!r}, "
                             f"num_class_embeds={embeds!r}")
        names = {int(key): str(value) for key, value in (id2label or {}).items()} or \
            {i: str(i) for i in range(embeds - 1)}
        if sorted(names) != list(range(embeds - 1)):
            raise ValueError(f"id2label must name each class id 0..{embeds - 2} once (the unet has {embeds - 1} "
                             f"classes and the 'no class' id {embeds - 1}), got ids {sorted(names)[:20]}")
        if len(set(names.values())) != len(names):
            raise ValueError("id2label gives two classes the same name; names must be distinct")
        self.register_to_config(id2label={str(i): names[i] for i in sorted(names)})  # JSON keys are strings
        self.id2label = dict(sorted(names.items()))
        self.labels = {name: i for name, i in sorted((name, i) for i, name in names.items())}

    @property
    def num_classes(self) -> int:
        """K, the number of classes (the unet's num_class_embeds - 1)."""
        return self.unet.config.num_class_embeds - 1

    @property
    def null_class_id(self) -> int:
        """The "no class" id, K: the unconditional branch of guidance."""
        return self.num_classes

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        r"""Map class names to class ids (DiTPipeline's method): `pipe.get_label_ids(["cat", "dog"])` -> `[0, 1]`.
        A single string is one name. Raises a ValueError naming an unknown label and the known ones."""
        names = [label] if isinstance(label, str) else list(label)
        for name in names:
            if name not in self.labels:
                known = ", ".join(repr(n) for n in list(self.labels)[:50])
                more = ", ..." if len(self.labels) > 50 else ""
                raise ValueError(f"class label {name!r} is not a label of this model; choose one of {known}{more}")
        return [self.labels[name] for name in names]

    def class_ids(self, class_labels) -> torch.Tensor:
        """The class ids [B] (long, on the CPU) of `class_labels`: an id or a name, a list of them (ids and names
        may mix), or a 1-D integer tensor. Names go through `get_label_ids`; an id outside 0..K-1 is a ValueError."""
        if isinstance(class_labels, torch.Tensor):
            if class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool or class_labels.ndim > 1:
                raise ValueError(f"class_labels as a tensor must be a 1-D integer tensor, got dtype "
                                 f"{class_labels.dtype} and shape {tuple(class_labels.shape)}")
            class_labels = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, (str, int, np.integer)):
            class_labels = [class_labels]
        ids = []
        for label in class_labels:
            if isinstance(label, str):
                ids.extend(self.get_label_ids(label))
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                if not 0 <= int(label) < self.num_classes:
                    raise ValueError(f"class id {int(label)} is out of range: this model has classes 0.."
                                     f"{self.num_classes - 1} (names: pipe.id2label)")
                ids.append(int(label))
            else:
                raise ValueError(f"class label {label!r} is neither a class id (int) nor a name (str)")
        if not ids:
            raise ValueError("class_labels is empty: give one class (id or name) per image")
        return torch.tensor(ids, dtype=torch.long)

    def _scheduler_reads_variance(self) -> bool:
        """Whether the scheduler's `step` takes the 2C channels of a learned variance (the DDPM schedulers)."""
        return (type(self.scheduler).__name__ in VARIANCE_READING_SCHEDULERS
                and self.scheduler.config.get("variance_type") in LEARNED_VARIANCES)

    def guided_model_output(self, sample: torch.Tensor, t, class_ids: torch.Tensor,
                            guidance_scale: float) -> torch.Tensor:
        """The model output at x_t = `sample` [B x C x H x W] for `class_ids` [B] with guidance (module docstring):
        one forward pass of 2B ([conditional; unconditional]) when guidance_scale != 1, else the conditional pass
        alone. The first C channels are guided; the variance channels of a learned-variance model are the
        conditional pass's (as GLIDE does). Returns [B x C' x H x W], C' the unet's out_channels."""
        C = sample.shape[1]
        if guidance_scale == 1.0:
            return self.unet(sample, t, class_labels=class_ids).sample
        null = torch.full_like(class_ids, self.null_class_id)
        output = self.unet(torch.cat([sample, sample]), t, class_labels=torch.cat([class_ids, null])).sample
        conditional, unconditional = output.chunk(2)
        guided = unconditional[:, :C] + guidance_scale * (conditional[:, :C] - unconditional[:, :C])
        return torch.cat([guided, conditional[:, C:]], dim=1)

    @torch.no_grad()
    def __call__(
        self,
        class_labels,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one image per class label.

        Args:
            class_labels (`int`, `str`, `list` of them, or a 1-D integer `torch.Tensor`): the class of each image,
                by id (0..K-1) or by name (`pipe.id2label`); e.g. `[3, 3, 7]` or `["3", "7"]`.
            guidance_scale (`float`, defaults to `DEFAULT_GUIDANCE_SCALE`): classifier-free guidance scale s >= 0;
                1 samples the conditional model alone (one forward pass per step), larger values follow the class
                more closely, 0 samples the unconditional model.
            num_inference_steps (`int`, *optional*): sampling steps; None: the scheduler's num_train_timesteps (the
                full DDPM chain, as DDPMPipeline's default of 1000 is for T = 1000).
            generator (`torch.Generator`, *optional*): makes generation deterministic.
            output_type (`str`, defaults to `"pil"`): "pil", "np" (float [B x H x W x C] in [0, 1]) or "pt"
                (float [B x C x H x W] in [0, 1]).
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` instead of a tuple.

        Examples:

        ```py
        >>> from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

        >>> pipe = DiffusionPipeline.from_pretrained("ddpm-digits-16-class-conditional", trust_remote_code=True)
        >>> images = pipe(class_labels=[3, 3, 7], guidance_scale=2.0).images
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        >>> images = pipe(class_labels=pipe.get_label_ids(["3", "7"]), num_inference_steps=25).images
        ```
        """
        if not guidance_scale >= 0:  # also refuses NaN
            raise ValueError(f"guidance_scale must be >= 0 (1: no guidance), got {guidance_scale}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type {output_type!r} is not supported; choose one of pil, np, pt")
        device = self._execution_device
        class_ids = self.class_ids(class_labels).to(device)
        config = self.unet.config
        size = (config.sample_size,) * 2 if isinstance(config.sample_size, int) else tuple(config.sample_size)
        shape = (len(class_ids), config.in_channels, *size)

        # 1. x_T ~ N(0, I), scaled by the sampler's initial sigma (1 for DDPM, DDIM, DPM-Solver)
        if device.type == "mps":  # randn is not reproducible on mps (as DDPMPipeline)
            sample = randn_tensor(shape, generator=generator, dtype=self.unet.dtype).to(device)
        else:
            sample = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        sample = sample * self.scheduler.init_noise_sigma
        steps = self.scheduler.config.num_train_timesteps if num_inference_steps is None else num_inference_steps
        self.scheduler.set_timesteps(steps, device=device)
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters \
            else {}

        # 2. x_t -> x_{t-1}: the guided model output, then the scheduler's step
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(sample, t)
            output = self.guided_model_output(model_input, t, class_ids, guidance_scale)
            if not self._scheduler_reads_variance():
                output = output[:, :shape[1]]
            sample = self.scheduler.step(output, t, sample, **step_kwargs).prev_sample

        # 3. [-1, 1] -> [0, 1]
        image = (sample / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    # ------------------------------------------------------------------------------------------ saving, loading
    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True,
                        variant: str | None = None, max_shard_size: int | str | None = None,
                        push_to_hub: bool = False, **kwargs):
        """diffusers' save_pretrained (unet/, scheduler/, model_index.json with id2label), then the custom-pipeline
        convention: this very file as `pipeline.py`, and model_index.json's `_class_name` as ["pipeline",
        "ClassConditionalDDPMPipeline"], so that `DiffusionPipeline.from_pretrained(folder,
        trust_remote_code=True)` loads the folder without ddpm_hub. push_to_hub uploads the finished folder's files
        through diffusers' `push_to_hub` (kwargs: repo_id, commit_message, private, token, create_pr)."""
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                max_shard_size=max_shard_size)
        folder = Path(save_directory)
        _write_bytes(folder / CUSTOM_PIPELINE_FILE, Path(__file__).read_bytes())
        index = json.loads((folder / self.config_name).read_text(encoding="utf-8"))
        index["_class_name"] = [Path(CUSTOM_PIPELINE_FILE).stem, type(self).__name__]
        _write_bytes(folder / self.config_name, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            self.push_to_hub(repo_id, safe_serialization=safe_serialization, variant=variant, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a folder (or Hub repo) that `save_pretrained` wrote, with this class's code.

        diffusers' loader would import the folder's `pipeline.py` and asks for trust_remote_code=True to do so;
        called on this class the code is already here, so nothing from the folder is executed: unet/ and
        scheduler/ load with the diffusers classes model_index.json names, and id2label comes from it. A Hub repo
        is downloaded without its .py file (kwargs revision, token, cache_dir, local_files_only, force_download).

        kwargs: unet=, scheduler= (components to use instead of the saved ones), id2label=, torch_dtype=.
        """
        import diffusers

        folder = str(pretrained_model_name_or_path)
        download = {key: kwargs.pop(key) for key in ("revision", "token", "cache_dir", "local_files_only",
                                                     "force_download") if key in kwargs}
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder, allow_patterns=[cls.config_name, "unet/*", "scheduler/*"], **download)
        index = json.loads((Path(folder) / cls.config_name).read_text(encoding="utf-8"))
        torch_dtype = kwargs.pop("torch_dtype", None)
        id2label = kwargs.pop("id2label", index.get("id2label"))
        components = {name: kwargs.pop(name) for name in ("unet", "scheduler") if name in kwargs}
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained got unexpected arguments: {', '.join(sorted(kwargs))}")
        for name in ("unet", "scheduler"):
            if name in components:
                continue
            library, class_name = index[name]
            if library != "diffusers" or not hasattr(diffusers, class_name):
                raise ValueError(f"{folder}/model_index.json names {name} {[library, class_name]}; this pipeline "
                                 f"loads diffusers classes only")
            extra = {"torch_dtype": torch_dtype} if name == "unet" and torch_dtype is not None else {}
            components[name] = getattr(diffusers, class_name).from_pretrained(folder, subfolder=name, **extra)
        return cls(**components, id2label=id2label)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
