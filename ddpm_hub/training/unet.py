"""The pixel-space denoiser: diffusers' UNet2DModel, sized for a 2-core CPU by default, or from a user's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError


def default_unet_config(resolution: int, channels: int, learned_variance: bool = False) -> dict[str, Any]:
    """A UNet2DModel config sized for a 2-core CPU at small resolutions (about 1.6M parameters at 16x16).

    Self-attention sits at the lowest resolution (4x4 at 16x16, as diffusers' example puts it near the bottom of its
    U-Net): the same parameters as at 8x8, but attention over 16 positions instead of 64 trains about 18% more steps
    in the same wall time, and it scored better or level in both feature spaces of docs/benchmarks.md's
    default-vs-example benchmark ("A fourth seed, and attention at 4x4 at DDPM 1000").
    """
    return {
        "sample_size": resolution,
        "in_channels": channels,
        "out_channels": channels * (2 if learned_variance else 1),
        "layers_per_block": 2,
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 16,
    }


def read_unet_config(path: str | None) -> dict[str, Any] | None:
    """A user's UNet2DModel config JSON (a file, or a folder holding config.json); None without a path."""
    if path is None:
        return None
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise InputError(f"--model_config_name_or_path {path!r} is not a UNet2DModel config JSON file or a folder "
                         "holding config.json")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"--model_config_name_or_path {path!r} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise InputError(f"--model_config_name_or_path {path!r} must hold a JSON object (a UNet2DModel config)")
    return config


def unet_config_for(user_config: dict[str, Any] | None, resolution: int, channels: int,
                    learned_variance: bool) -> dict[str, Any]:
    """The UNet2DModel config to train: the user's (sample_size, in/out channels set to fit) or the default.

    sample_size follows --resolution, in_channels the data's channels, out_channels is in_channels (x2 for a
    learned variance).
    """
    if user_config is None:
        return default_unet_config(resolution, channels, learned_variance)
    return {**user_config, "sample_size": resolution, "in_channels": channels,
            "out_channels": channels * (2 if learned_variance else 1)}


def class_conditional_config(config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """`config` with class embeddings for num_classes classes plus the "no class" id (num_class_embeds = K + 1,
    class_embed_type None: a learned embedding of the id added to the timestep embedding). A user's config that sets
    either to something else is an InputError naming the value, never silently rewritten."""
    given_type = config.get("class_embed_type")
    if given_type is not None:
        raise InputError(f"--model_config_name_or_path sets class_embed_type {given_type!r}; class-conditional "
                         "training uses None (an embedding table of the class ids): leave it out")
    given = config.get("num_class_embeds")
    if given is not None and given != num_classes + 1:
        raise InputError(f"--model_config_name_or_path sets num_class_embeds {given}, but the data has {num_classes} "
                         f"classes (+1 'no class' id for guidance): set it to {num_classes + 1} or leave it out")
    return {**config, "class_embed_type": None, "num_class_embeds": num_classes + 1}


def build_unet(config: dict[str, Any]):
    """A diffusers UNet2DModel from a config, after checking the resolution suits its down-sampling."""
    from diffusers import UNet2DModel

    resolution = int(config["sample_size"])
    levels = len(config.get("block_out_channels", (224, 448, 672, 896)))
    factor = 2 ** (levels - 1)
    if resolution < 1 or resolution % factor:
        raise InputError(f"--resolution {resolution} is not usable by this UNet: it must be a positive multiple of "
                         f"{factor} ({levels} resolution levels halve it {levels - 1} times)")
    try:
        return UNet2DModel.from_config(config)
    except (TypeError, ValueError) as error:
        raise InputError(f"--model_config_name_or_path gives an invalid UNet2DModel config: {error}") from None


def channels_for(num_channels: int | None, user_config: dict[str, Any] | None) -> int | None:
    """The image channels to train on: --num_channels, else the user's UNet in_channels, else None (follow the
    data). InputError when the two are given and disagree, or the config's in_channels is not 1 or 3."""
    configured = (user_config or {}).get("in_channels")
    if num_channels and configured and num_channels != configured:
        raise InputError(f"--num_channels {num_channels} contradicts in_channels={configured} of "
                         "--model_config_name_or_path; drop one of them")
    if configured not in (None, 1, 3):
        raise InputError(f"--model_config_name_or_path has in_channels={configured}; images have 1 or 3 channels")
    return num_channels or configured
