"""Shared tiny fixtures: diffusers' own scheduler-test dummies and a tiny UNet2DModel."""

import pytest
import torch

# a UNet2DModel config of a few thousand parameters for CLI runs (train_ddpm.py --model_config_name_or_path)
TINY_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
             "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
             "attention_head_dim": 8}


def dummy_model(sample: torch.Tensor, t) -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_model: sample * t / (t + 1)."""
    return sample * t / (t + 1)


def dummy_sample_deter() -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_sample_deter: a deterministic (4, 3, 8, 8) ramp in [0, 1)."""
    n = 4 * 3 * 8 * 8
    return (torch.arange(n).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def tiny_unet(in_channels: int = 3, out_channels: int | None = None, sample_size: int = 8, seed: int = 0):
    """A diffusers UNet2DModel of a few thousand parameters, as diffusers' pipeline tests build it."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


@pytest.fixture
def tmp_dir(tmp_path):
    return tmp_path


def tensorboard_scalars(logs) -> dict:
    """tensorboard scalars written under the folder logs: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in logs.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return values


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode, effective even though datasets / huggingface_hub read the variables at import."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
