"""What a new user runs first, run as they run it: the documented commands in subprocesses, every per-user cache
empty (tests/conftest.py `cold_environment`), the Hub offline. A crash that only shows on an empty cache reached
users once: the digits classifier was trained inside a no_grad evaluation, and a cache filled by earlier tests hid it.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cold_environment

ROOT = Path(__file__).resolve().parents[1]

# the README's main command (tests/test_project.py checks the README says it); the tests add only what makes it
# small (steps, evaluation sizes, grids)
# `accelerate` of the Python running the tests (the venv's, also when the venv is not activated)
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
MAIN_COMMAND = [ACCELERATE, "launch", "--quiet", "train_ddpm.py"]
SMALL_EVALUATION = ["--eval_num_samples", "8", "--eval_inference_steps", "2", "--eval_bpd_timesteps", "3",
                    "--eval_bpd_images", "2"]


def _run(command: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def default_model(tmp_path_factory) -> Path:
    """The README's main command (default UNet, data, schedule and evaluation; 3 steps and small evaluation sizes),
    cold: the evaluation at the end must train the digits classifier itself."""
    root = tmp_path_factory.mktemp("main")
    env = cold_environment(root / "user")
    out = root / "ddpm-digits-16"
    result = _run([*MAIN_COMMAND, "--output_dir", str(out), "--max_train_steps", "3", "--eval_batch_size", "2",
                   "--ddpm_num_inference_steps", "2", *SMALL_EVALUATION], env)
    _ok(result)
    assert Path(env["DDPM_HUB_CACHE"], "digits_classifier-v1.safetensors").is_file()  # trained cold, then cached
    return out


def test_main_command_on_empty_caches_writes_a_folder_stock_diffusers_samples(default_model):
    from diffusers import DDPMPipeline

    card = (default_model / "README.md").read_text()
    assert "Frechet digits distance" in card and "bits/dim" in card  # the evaluation ran and reached the card
    pipe = DDPMPipeline.from_pretrained(default_model)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()


def test_evaluate_on_empty_caches(default_model, tmp_path):
    env = cold_environment(tmp_path / "user")
    result = _run([sys.executable, "-m", "ddpm_hub.evaluate", "--model", str(default_model), "--num_samples", "4",
                   "--num_inference_steps", "2", "--bpd_timesteps", "3", "--bpd_images", "2",
                   "--output", str(tmp_path / "metrics.json")], env)
    _ok(result)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["digits"]["num_samples"] == 4 and np.isfinite(metrics["bits_per_dim"]["mean"])


def test_visualize_on_empty_caches(default_model, tmp_path):
    env = cold_environment(tmp_path / "user")  # matplotlib builds its font cache from nothing
    result = _run([sys.executable, "-m", "ddpm_hub.visualize", "--output_dir", str(tmp_path / "pictures"),
                   "--model", str(default_model)], env)
    _ok(result)
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["forward_process.png", "reverse_process.png"]


def test_text_to_image_on_empty_caches_writes_a_stable_diffusion_folder(tmp_path):
    """--task text-to-image with its defaults (shapes data, VAE stage trained from scratch, tokenizer built from
    the captions, evaluation on), small: a StableDiffusionPipeline folder stock diffusers samples."""
    from diffusers import StableDiffusionPipeline

    env = cold_environment(tmp_path / "user")
    out = tmp_path / "ldm-shapes-32"
    result = _run([*MAIN_COMMAND, "--task", "text-to-image", "--output_dir", str(out), "--max_train_steps", "2",
                   "--num_images", "64", "--vae_num_steps", "2", "--num_validation_images", "1",
                   "--eval_num_samples", "4", "--eval_inference_steps", "2"], env)
    _ok(result)
    assert "prompt adherence" in (out / "README.md").read_text()
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_a_mistake_through_the_documented_command_ends_on_our_line(tmp_path):
    """`accelerate launch --quiet train_ddpm.py` with a missing folder: our one line is the last thing printed (without
    --quiet the launcher prints a CalledProcessError traceback after it), and the exit status is not 0."""
    env = cold_environment(tmp_path / "user")
    result = _run([*MAIN_COMMAND, "--train_data_dir", str(tmp_path / "missing")], env)
    assert result.returncode != 0
    assert _last_line(result.stderr) == (f"train_ddpm.py: error: --train_data_dir {str(tmp_path / 'missing')!r} does "
                                         "not exist: give a folder of images (.png, .jpg, ...)")
    assert "Traceback" not in result.stderr


def test_a_mistake_under_torchrun_is_the_root_cause_it_reports(tmp_path):
    """Several processes (torchrun, or accelerate launch --multi_gpu, which runs it): each rank prints our line, and
    torchrun's failure summary, printed last, names it as the traceback of the root cause."""
    env = cold_environment(tmp_path / "user")
    result = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train_ddpm.py",
                   "--train_data_dir", str(tmp_path / "missing")], env)
    assert result.returncode != 0
    summary = result.stderr[result.stderr.rindex("Root Cause"):]
    assert "traceback : train_ddpm.py: error: --train_data_dir" in summary and "does not exist" in summary
