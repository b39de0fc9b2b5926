"""Shared tiny fixtures: diffusers' own scheduler-test dummies and a tiny UNet2DModel; every per-user cache of the
suite in one temporary folder."""

import os
import shutil
import tempfile

import pytest
import torch

# Where the project and its libraries write per-user files. The suite points each at a fresh temporary folder, so
# that its result never depends on what the machine holds or on the order tests run in (a classifier cached by an
# earlier run hid a crash on empty caches once).
PER_USER_LOCATIONS = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "DDPM_HUB_CACHE", "HF_HOME", "MPLCONFIGDIR",
                      "TORCH_HOME")
_SESSION_HOME = None


def pytest_configure(config):
    """Before any test module is imported (huggingface_hub and datasets read HF_HOME at import time), point every
    per-user location at a fresh folder for this session; subprocesses of the tests inherit it."""
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="ddpm_hub-tests-")
    for name in PER_USER_LOCATIONS:
        os.environ[name] = os.path.join(_SESSION_HOME, name.lower())
        os.makedirs(os.environ[name])


def pytest_unconfigure(config):
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def cold_environment(root) -> dict:
    """os.environ with every per-user location at a new empty folder under `root` and the Hub offline: what a
    newcomer's first run sees, for subprocess tests."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for name in PER_USER_LOCATIONS:
        env[name] = os.path.join(root, name.lower())
        os.makedirs(env[name])
    return env

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


def tiny_unet(in_channels: int = 3, out_channels: int | None = None, sample_size: int = 8, seed: int = 0,
              num_class_embeds: int | None = None):
    """A diffusers UNet2DModel of a few thousand parameters, as diffusers' pipeline tests build it; num_class_embeds
    = K + 1 makes it class-conditional as train_ddpm.py --class_conditional builds it (id K: "no class")."""
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
        num_class_embeds=num_class_embeds,
    ).eval()


@pytest.fixture
def tmp_dir(tmp_path):
    return tmp_path


def rank_weight_digests(output: str) -> dict[int, str]:
    """{rank: sha256} from the "[rank R] weights sha256 H" lines each process of a run prints at the end. Found by
    pattern, not by line: two ranks' prints can land on one line of the combined output."""
    import re

    return {int(rank): digest for rank, digest in re.findall(r"\[rank (\d+)\] weights sha256 ([0-9a-f]{64})", output)}


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
