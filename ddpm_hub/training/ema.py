"""Exponential moving averages of the trained weights (diffusers' EMAModel, with its warm-up), saved into each
checkpoint as a loadable model folder, and the averaged copy that samples, evaluates and is exported.

diffusers' EMAModel saves itself only for diffusers models (`model_cls`); a trained text encoder is a transformers
model, so its average is saved here as a CLIPTextModel folder holding the EMA weights plus `ema_state.json` (the
decay settings and step count), which EMAModel has no format for.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

EMA_STATE_NAME = "ema_state.json"


def make_ema(model, max_decay: float, inv_gamma: float, power: float):
    """An EMAModel of `model`'s parameters with warm-up: decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)
    (diffusers' train_unconditional.py defaults: inv_gamma 1, power 3/4, max_decay 0.9999)."""
    from diffusers import ModelMixin
    from diffusers.training_utils import EMAModel

    model_cls = type(model) if isinstance(model, ModelMixin) else None
    return EMAModel(model.parameters(), decay=max_decay, use_ema_warmup=True, inv_gamma=inv_gamma, power=power,
                    foreach=True, model_cls=model_cls, model_config=model.config)


def averaged_copy(model, ema):
    """The model to sample from or export: a copy holding the EMA weights, or `model` itself without EMA."""
    if ema is None:
        return model
    averaged = copy.deepcopy(model)
    ema.copy_to(averaged.parameters())
    return averaged


def save_ema(ema, model, folder: str | os.PathLike) -> None:
    """EMA weights as a loadable model folder: diffusers' EMAModel.save_pretrained (the EMA settings in its
    config.json), or for a transformers model a copy holding the EMA weights plus ema_state.json."""
    if ema.model_cls is not None:
        ema.save_pretrained(folder)
        return
    averaged_copy(model, ema).save_pretrained(folder)
    settings = {key: value for key, value in ema.state_dict().items() if key != "shadow_params"}
    Path(folder, EMA_STATE_NAME).write_text(json.dumps(settings, indent=2) + "\n")


def load_ema(ema, model_class, folder: str | os.PathLike) -> None:
    """Restore `ema` in place from a folder `save_ema` wrote."""
    from diffusers.training_utils import EMAModel

    if ema.model_cls is not None:
        with _quiet_diffusers_config_warnings():  # EMAModel.from_pretrained's own deprecated calls
            loaded = EMAModel.from_pretrained(folder, ema.model_cls, foreach=True)
        ema.load_state_dict(loaded.state_dict())
        return
    averaged = model_class.from_pretrained(folder)
    settings = json.loads(Path(folder, EMA_STATE_NAME).read_text())
    ema.load_state_dict({**settings, "shadow_params": [p.detach().clone() for p in averaged.parameters()]})


def register_checkpoint_hooks(accelerator, model_classes: dict, emas: dict) -> None:
    """Checkpoints hold each trained model in its library's safetensors format, so each one is a usable model:
    unet/ (and text_encoder/ when it trains) in the order they were prepared, and their EMAs in unet_ema/,
    text_encoder_ema/. `model_classes` maps each name to the class that loads it back."""
    import torch

    names = list(model_classes)

    def save_hook(models, weights, output_dir):
        # runs before accelerate saves the RNG states, under a fork: EMAModel.save_pretrained builds a fresh model,
        # whose random init must not move the RNG the loss draws from (or checkpointing would change the training)
        with torch.random.fork_rng(devices=[]):  # the models are built on the CPU
            if accelerator.is_main_process:
                for name, model in zip(names, models):
                    model = accelerator.unwrap_model(model)
                    if name in emas:
                        save_ema(emas[name], model, os.path.join(output_dir, f"{name}_ema"))
                    model.save_pretrained(os.path.join(output_dir, name))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        for name, ema in emas.items():
            load_ema(ema, model_classes[name], os.path.join(input_dir, f"{name}_ema"))
            ema.to(accelerator.device)
        for name, model in zip(names, list(models)):
            loaded = model_classes[name].from_pretrained(os.path.join(input_dir, name))
            accelerator.unwrap_model(model).load_state_dict(loaded.state_dict())
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


@contextlib.contextmanager
def _quiet_diffusers_config_warnings() -> Iterator[None]:
    from diffusers.utils import logging as diffusers_logging

    config_logger = diffusers_logging.get_logger("diffusers.configuration_utils")
    level = config_logger.level
    config_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        config_logger.setLevel(level)
