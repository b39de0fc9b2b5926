"""python -m ddpm_hub.visualize: the forward and reverse process pictures."""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from ddpm_hub import visualize

from conftest import TINY_UNET  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 20-step DDPMPipeline folder (the default cosine schedule, 16x16, 1 channel) from train_ddpm.py."""
    sys.path.insert(0, str(ROOT))
    import train_ddpm

    root = tmp_path_factory.mktemp("model")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_UNET))
    return train_ddpm.main(train_ddpm.parse_args([
        "--output_dir", str(root / "model"), "--model_config_name_or_path", str(config), "--max_train_steps", "1",
        "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--eval_inference_steps", "5",
        "--eval_batch_size", "2", "--logger", "none", "--train_batch_size", "16"])).output_dir


def test_forward_and_reverse_pictures(model, tmp_path):
    written = visualize.main(visualize.parse_args(["--output_dir", str(tmp_path / "pics"), "--model", str(model)]))
    assert [p.name for p in written] == ["forward_process.png", "reverse_process.png"]
    forward, reverse = (Image.open(p) for p in written)
    assert forward.width > 5 * forward.height  # one row of 11 panels
    assert reverse.height > forward.height  # four seeds, one row each
    assert not list((tmp_path / "pics").glob("*.tmp"))


def test_the_forward_process_drawn_is_the_models_own(model, tmp_path, monkeypatch):
    """With --model the forward process is the model's saved schedule at its size, not the linear default."""
    drawn = {}

    def record(image, scheduler, timesteps, path, seed=0):
        drawn.update(shape=tuple(image.shape), config=dict(scheduler.config), timesteps=list(timesteps))
        return path

    monkeypatch.setattr(visualize, "forward_process_figure", record)
    monkeypatch.setattr(visualize, "reverse_process_figure", lambda unet, scheduler, path: path)
    visualize.main(visualize.parse_args(["--output_dir", str(tmp_path), "--model", str(model)]))
    saved = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    unet = json.loads((model / "unet" / "config.json").read_text())
    assert drawn["config"]["beta_schedule"] == saved["beta_schedule"] == "squaredcos_cap_v2"
    assert drawn["config"]["num_train_timesteps"] == 20 and drawn["timesteps"][-1] == 19
    assert drawn["shape"] == (unet["in_channels"], unet["sample_size"], unet["sample_size"]) == (1, 16, 16)
    visualize.main(visualize.parse_args(["--output_dir", str(tmp_path)]))  # no model: the notes' linear DDPM
    assert drawn["config"]["beta_schedule"] == "linear" and drawn["shape"] == (1, 32, 32)


def test_schedule_flags_with_a_model_contradict_it(model, tmp_path, capsys):
    assert visualize.cli(["--output_dir", str(tmp_path), "--model", str(model), "--beta_schedule", "linear"]) == 2
    assert "--beta_schedule contradicts --model" in capsys.readouterr().err


def test_bad_model_folder(tmp_path, capsys):
    assert visualize.cli(["--output_dir", str(tmp_path), "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist: give a DDPMPipeline folder" in err and err.count("\n") == 1
