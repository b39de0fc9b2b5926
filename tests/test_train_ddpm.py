"""train_ddpm.py end to end with a tiny UNet: the folder it writes, exact resume, hub push, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_ddpm  # noqa: E402
from conftest import TINY_UNET, rank_weight_digests, tensorboard_scalars  # noqa: E402



@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("config") / "tiny_unet.json"
    path.write_text(json.dumps(TINY_UNET))
    return str(path)


def _args(output_dir, tiny_config, *extra: str) -> list[str]:
    return ["--output_dir", str(output_dir), "--model_config_name_or_path", tiny_config, "--train_batch_size", "32",
            "--eval_batch_size", "4", "--ddpm_num_inference_steps", "4", "--logger", "none", "--max_train_steps", "2",
            "--eval_epochs", "0", *extra]


def _train(output_dir, tiny_config, *extra: str, hub_api=None) -> Path:
    summary = train_ddpm.main(train_ddpm.parse_args(_args(output_dir, tiny_config, *extra)), hub_api=hub_api)
    assert summary.images_per_second > 0 and summary.train_seconds <= summary.wall_seconds
    return summary.output_dir


def _image_folder(root: Path, count: int = 12, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.png")
    return root


def _unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "diffusion_pytorch_model.safetensors")


def test_default_run_writes_a_diffusers_pipeline_folder(tmp_path, tiny_config):
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "6", "--checkpointing_steps", "3",
                 "--logger", "tensorboard", "--checkpoints_total_limit", "1")
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) or all("checkpoint-" in str(p) for p in out.rglob("*.bin"))

    # stock diffusers loads and samples it; ours loads its scheduler
    from diffusers import DDPMPipeline

    from ddpm_hub import DDPMScheduler

    pipe = DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.manual_seed(0)).images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
    ours = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    assert ours.config.num_train_timesteps == 1000 and ours.config.prediction_type == "v_prediction"
    assert ours.config.beta_schedule == "squaredcos_cap_v2"  # the tuned defaults (README: issue 4)
    assert ours.config.timestep_spacing == "trailing" and pipe.scheduler.config.timestep_spacing == "trailing"

    # the exported weights are the EMA weights of the last checkpoint
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-6"]  # total limit 1 pruned checkpoint-3
    exported, ema = _unet_weights(out / "unet"), _unet_weights(checkpoints[0] / "unet_ema")
    raw = _unet_weights(checkpoints[0] / "unet")
    assert exported.keys() == ema.keys()
    assert all(torch.equal(exported[k], ema[k]) for k in exported)
    assert any(not torch.equal(exported[k], raw[k]) for k in exported)

    # what a person looks at
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert "DDPMPipeline.from_pretrained" in card.text and "samples/latest.png" in card.text
    assert Image.open(out / "samples" / "latest.png").size[0] > 16
    assert Image.open(out / "loss_curve.png").format == "PNG"
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    state = json.loads((checkpoints[0] / "training_state.json").read_text())
    assert state["global_step"] == 6 and len(state["loss_history"]) == 6


def test_resume_continues_exactly(tmp_path, tiny_config):
    """Interrupted at a checkpoint and resumed, a run ends with the same weights as the uninterrupted one:
    data order, augmentation, noise, timesteps, optimizer, LR schedule and EMA all continue. The interrupted run
    reads the decoded store, the uninterrupted one decodes into memory (--no_data_cache): the same images."""
    data = _image_folder(tmp_path / "images", count=20, size=20)  # 20x20 at 16: random crops from the store
    common = ("--train_data_dir", str(data), "--random_flip", "--train_batch_size", "8", "--max_train_steps", "8",
              "--checkpointing_steps", "4", "--save_images_epochs", "100", "--seed", "7")
    stores = ("--data_cache_dir", str(tmp_path / "stores"))
    full = _train(tmp_path / "full", tiny_config, *common, "--no_data_cache")
    interrupted = _train(tmp_path / "interrupted", tiny_config, *common, *stores)
    assert len(list((tmp_path / "stores").glob("images-*/*/pixels.u8"))) == 1
    # simulate the interruption right after checkpoint-4 (epoch 2 of 3-batch epochs, mid-epoch)
    for name in ("checkpoint-8", "unet", "scheduler", "model_index.json"):
        path = interrupted / name
        subprocess.run(["rm", "-rf", str(path)], check=True)
    _train(tmp_path / "interrupted", tiny_config, *common, *stores, "--resume_from_checkpoint", "latest")
    for folder in ("unet", "checkpoint-8/unet", "checkpoint-8/unet_ema"):
        a, b = _unet_weights(full / folder), _unet_weights(interrupted / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    history_a = json.loads((full / "checkpoint-8" / "training_state.json").read_text())["loss_history"]
    history_b = json.loads((interrupted / "checkpoint-8" / "training_state.json").read_text())["loss_history"]
    assert history_a == history_b


@pytest.mark.parametrize("task", ["unconditional", "class-conditional"])
def test_checkpoints_grids_evaluations_and_exports_leave_the_training_alone(tmp_path, tiny_config, task):
    """Only the loss draws from the global RNG (loop.py's docstring): a run that checkpoints every 2 steps and
    draws a grid, evaluates and exports every epoch ends with the weights of a run that does none of it. (Saving the
    EMA and loading the cached digits classifier each built a model whose random init advanced that RNG; the loop
    forks it around the checkpoint hook and the end-of-epoch work.)"""
    common = ("--task", task, "--train_batch_size", "256", "--max_train_steps", "9", "--eval_num_samples", "8")
    quiet = _train(tmp_path / "quiet", tiny_config, *common, "--checkpointing_steps", "500", "--eval_epochs", "0",
                   "--save_images_epochs", "100", "--save_model_epochs", "100")
    busy = _train(tmp_path / "busy", tiny_config, *common, "--checkpointing_steps", "2", "--eval_epochs", "1",
                  "--save_images_epochs", "1", "--save_model_epochs", "1")
    assert (busy / "checkpoint-2").is_dir() and (busy / "samples").is_dir()
    for folder in ("unet", "checkpoint-9/unet", "checkpoint-9/unet_ema"):
        a, b = _unet_weights(quiet / folder), _unet_weights(busy / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder


def test_resume_latest_skips_a_damaged_checkpoint(tmp_path, tiny_config, caplog):
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "4", "--checkpointing_steps", "2")
    with open(out / "checkpoint-4" / "optimizer.bin", "r+b") as f:  # damage the newest
        f.truncate(10)
    _train(out, tiny_config, "--max_train_steps", "5", "--checkpointing_steps", "2", "--resume_from_checkpoint",
           "latest")
    assert "checkpoint-4" in caplog.text and (out / "checkpoint-5").is_dir()
    state = json.loads((out / "checkpoint-5" / "training_state.json").read_text())
    assert len(state["loss_history"]) == 5  # resumed at step 2: 2 restored + 3 new


def test_named_checkpoint_missing_is_an_error(tmp_path, tiny_config, capsys):
    code = train_ddpm.cli(_args(tmp_path / "run", tiny_config, "--resume_from_checkpoint", "checkpoint-99"))
    err = capsys.readouterr().err
    assert code == 2 and "--resume_from_checkpoint" in err and err.count("\n") == 1


def test_push_to_hub_uploads_the_folder_and_never_writes_the_token(tmp_path, tiny_config, capsys):
    class FakeHfApi:
        def __init__(self):
            self.calls = []

        def create_repo(self, **kwargs):
            from huggingface_hub import RepoUrl

            self.calls.append(("create_repo", kwargs))
            return RepoUrl(f"https://huggingface.co/{kwargs['repo_id']}")

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs))

    api, secret = FakeHfApi(), "hf_SeCrEtToKeN1234567890"
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "2", "--checkpointing_steps", "1",
                 "--logger", "tensorboard", "--push_to_hub", "--hub_model_id", "alice/digits-ddpm",
                 "--hub_token", secret, "--hub_private_repo", hub_api=api)
    (name, create), (name2, upload) = api.calls
    assert name == "create_repo" and create["repo_id"] == "alice/digits-ddpm" and create["private"] is True
    assert name2 == "upload_folder" and Path(upload["folder_path"]) == out and upload["token"] == secret
    assert "checkpoint-*" in upload["ignore_patterns"]
    from ddpm_hub.hub import files_to_upload

    uploaded = files_to_upload(out, upload["ignore_patterns"])
    assert "model_index.json" in uploaded and "README.md" in uploaded
    assert not [f for f in uploaded if f.startswith("checkpoint-")]
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    captured = capsys.readouterr()
    assert secret not in captured.out and secret not in captured.err


def test_mixed_folder_trains_and_reports_skips(tmp_path, tiny_config, capsys):
    data = _image_folder(tmp_path / "mixed", count=4, size=20)
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (data / "notes.txt").write_text("not an image")
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(data / "rgba.png")
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(data / "deep.png")
    Image.new("P", (16, 16)).save(data / "palette.gif")
    Image.new("RGB", (8, 8)).save(data / "small.png")
    _train(tmp_path / "run", tiny_config, "--train_data_dir", str(data), "--max_train_steps", "1")
    out = capsys.readouterr().out
    assert "loaded 7 images (3 channels, 16x16)" in out and "skipped 3 files: " in out
    assert "corrupt" in out and "not an image" in out and "smaller than --resolution 16" in out


def test_streaming_trains_from_a_local_dataset_and_says_resume_is_not_exact(tmp_path, tiny_config, capsys,
                                                                            caplog, offline):
    import datasets

    rows = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (18, 20, 3), dtype=np.uint8))
            for i in range(10)]
    datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image()).save_to_disk(
        str(tmp_path / "saved"))
    common = ("--dataset_name", str(tmp_path / "saved"), "--streaming", "--train_batch_size", "4",
              "--checkpointing_steps", "2", "--save_images_epochs", "100", "--eval_epochs", "1",
              "--eval_bpd_images", "3", "--eval_bpd_timesteps", "3", "--eval_num_samples", "2")
    out = _train(tmp_path / "run", tiny_config, *common, "--max_train_steps", "4")  # 3 batches a pass: 2 passes
    first = capsys.readouterr().out
    assert "streaming images (3 channels, 16x16)" in first and "a resumed run is not exact (--streaming)" in first
    assert "bits_per_dim" in first  # evaluated on the stream's first images

    _train(out, tiny_config, *common, "--max_train_steps", "5", "--resume_from_checkpoint", "latest")
    assert "--streaming: a resumed run restarts the stream at the beginning of its epoch, so resume is not exact" \
        in capsys.readouterr().out + caplog.text
    assert json.loads((out / "checkpoint-5" / "training_state.json").read_text())["global_step"] == 5


@pytest.mark.parametrize("extra,match", [
    (["--train_data_dir", "/nonexistent/folder"], "--train_data_dir '/nonexistent/folder' does not exist"),
    (["--train_batch_size", "0"], "--train_batch_size must be a positive integer"),
    (["--resolution", "0"], "--resolution must be a positive integer"),
    (["--resolution", "15"], "--resolution 15 is not usable by this UNet: it must be a positive multiple of 2"),
    (["--prediction_type", "noise"], "--prediction_type 'noise' is not supported; choose one of epsilon"),
    (["--ddpm_num_inference_steps", "2000"], "--ddpm_num_inference_steps 2000 exceeds"),
    (["--eval_epochs", "-1"], "--eval_epochs must be an integer >= 0, got -1"),
    (["--eval_num_samples", "1"], "--eval_num_samples must be an integer >= 2, got 1"),
    (["--eval_bpd_timesteps", "2"], "--eval_bpd_timesteps must be 'full' or an integer K >= 3"),
    # conflicting flags are an error that names both, never a silent rewrite
    (["--eval_inference_steps", "30", "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "4"],
     "--eval_inference_steps 30 exceeds --ddpm_num_steps 20"),
    (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"],
     "--overwrite_output_dir and --resume_from_checkpoint contradict each other"),
    (["--no_data_cache", "--data_cache_dir", "stores"], "--no_data_cache and --data_cache_dir 'stores' contradict"),
    (["--streaming", "--dataset_name", "you/faces", "--train_data_dir", "x"],
     "--streaming and --train_data_dir contradict each other"),
    (["--streaming", "--dataset_name", "you/faces", "--data_cache_dir", "x"],
     "--streaming and --data_cache_dir contradict each other"),
    (["--streaming", "--dataset_name", "you/faces", "--no_data_cache"],
     "--streaming and --no_data_cache contradict each other"),
    (["--streaming"], "--streaming needs --dataset_name"),
    (["--streaming", "--dataset_name", "you/faces", "--num_epochs", "3"],
     "--streaming and --num_epochs contradict each other"),
    (["--streaming", "--dataset_name", "you/captions", "--task", "text-to-image", "--ddpm_num_inference_steps", "4",
      "--eval_batch_size", "4"], "--streaming is not supported by --task text-to-image"),
])
def test_bad_flags_give_one_line_errors(tmp_path, tiny_config, capsys, extra, match):
    code = train_ddpm.cli(_args(tmp_path / "run", tiny_config, *extra))
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err


def test_user_unet_config_sets_the_channels(tmp_path, tiny_config, capsys):
    """Grayscale digits train a 3-channel UNet from a user's config (converted once), and a contradicting
    --num_channels is refused."""
    config = tmp_path / "rgb_unet.json"
    config.write_text(json.dumps({**TINY_UNET, "in_channels": 3, "out_channels": 3}))
    out = _train(tmp_path / "rgb", str(config), "--max_train_steps", "1")
    assert "(3 channels, 16x16) from digits" in capsys.readouterr().out
    assert json.loads((out / "unet" / "config.json").read_text())["in_channels"] == 3
    assert train_ddpm.cli(_args(tmp_path / "bad", str(config), "--num_channels", "1")) == 2
    assert "--num_channels 1 contradicts in_channels=3" in capsys.readouterr().err


def test_empty_and_unreadable_folders(tmp_path, tiny_config, capsys):
    (tmp_path / "empty").mkdir()
    assert train_ddpm.cli(_args(tmp_path / "a", tiny_config, "--train_data_dir", str(tmp_path / "empty"))) == 2
    assert "is empty" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    (bad / "y.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert train_ddpm.cli(_args(tmp_path / "b", tiny_config, "--train_data_dir", str(bad))) == 2
    assert "none of the 2 files could be used" in capsys.readouterr().err


def test_output_dir_rules(tmp_path, tiny_config, capsys):
    (tmp_path / "file").write_text("x")
    assert train_ddpm.cli(_args(tmp_path / "file", tiny_config)) == 2
    assert "is a file" in capsys.readouterr().err
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "1")
    before = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert train_ddpm.cli(_args(out, tiny_config, "--max_train_steps", "1")) == 2
    assert "holds an earlier run" in capsys.readouterr().err
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before  # untouched
    _train(out, tiny_config, "--max_train_steps", "2", "--overwrite_output_dir", "--seed", "3")
    assert [c.name for c in out.glob("checkpoint-*")] == ["checkpoint-2"]


def test_hub_dataset_while_offline(tmp_path, tiny_config, capsys, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    assert train_ddpm.cli(_args(tmp_path / "run", tiny_config, "--dataset_name", "someone/some-images")) == 2
    err = capsys.readouterr().err
    assert "offline" in err and err.count("\n") == 1


def test_cli_exits_non_zero_with_one_line(tmp_path):
    """The real entry point: a subprocess gets exit status 2 and one line on stderr, no traceback."""
    result = subprocess.run([sys.executable, str(ROOT / "train_ddpm.py"), "--output_dir", str(tmp_path / "o"),
                             "--train_batch_size", "0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["train_ddpm.py: error: --train_batch_size must be a positive "
                                                  "integer, got 0"]
    result = subprocess.run([sys.executable, str(ROOT / "train_ddpm.py"), "--mixed_precision", "fp8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on Linux CI")
def test_two_processes_on_cpu_end_identical(tmp_path, tiny_config):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(ROOT / "train_ddpm.py"), *_args(out, tiny_config, "--max_train_steps", "3",
                                                   "--checkpointing_steps", "3", "--train_batch_size", "16")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = rank_weight_digests(result.stdout + result.stderr)
    assert sorted(digests) == [0, 1]
    assert digests[0] == digests[1]
    checkpoint = out / "checkpoint-3"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    top_level = sorted(p.name for p in out.iterdir())
    assert top_level == ["README.md", "checkpoint-3", "loss_curve.png", "model_index.json", "samples", "scheduler",
                         "unet"]
    assert len(list((out / "samples").iterdir())) == 2  # one grid + latest, written once
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert state["global_step"] == 3
    assert "lr=3.00e-05" in result.stderr  # warm-up 3/100 of 1e-3: the schedule is not stepped twice per update


def test_kill_9_leaves_only_complete_checkpoints(tmp_path, tiny_config):
    """SIGKILL a run at several moments while it checkpoints every step: every checkpoint-N that exists
    verifies, and --resume_from_checkpoint latest continues from the newest one."""
    import signal
    import time

    from ddpm_hub.training.checkpointing import find_latest_checkpoint, verify_checkpoint

    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train_ddpm.py"),
               *_args(out, tiny_config, "--max_train_steps", "400", "--checkpointing_steps", "1")]
    for delay in (0.3, 0.9, 1.7):
        extra = ["--resume_from_checkpoint", "latest"] if out.exists() else []
        process = subprocess.Popen(command + extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not list(out.glob("checkpoint-*")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        for checkpoint in out.glob("checkpoint-*"):
            verify_checkpoint(checkpoint)  # raises if any listed file is missing or differs
    latest, skipped = find_latest_checkpoint(out)
    assert latest is not None and not skipped
    step = int(latest.name.split("-")[1])
    summary = _train(out, tiny_config, "--max_train_steps", str(step + 1), "--checkpointing_steps", "1",
                     "--resume_from_checkpoint", "latest")
    assert (summary / f"checkpoint-{step + 1}").is_dir()


def test_diverging_loss_stops_with_a_clear_error(tmp_path, tiny_config, capsys):
    code = train_ddpm.cli(_args(tmp_path / "run", tiny_config, "--learning_rate", "1e30", "--lr_warmup_steps", "0",
                                "--max_train_steps", "6", "--train_batch_size", "16"))
    err = capsys.readouterr().err
    assert code == 2 and "the loss became nan" in err and "--learning_rate" in err


def test_eval_epochs_logs_metrics_and_writes_them_to_the_card(tmp_path, tiny_config):
    """Digits: every --eval_epochs (and after the last) the sample-quality metrics and held-out bits/dim are
    logged as eval/* and the last ones land in the model card; the numbers are those of evaluate_model on the
    exported (EMA) weights, and better than those of the weights training started from."""
    from diffusers import UNet2DModel

    from ddpm_hub import DDPMScheduler
    from ddpm_hub.evaluation import evaluate_model

    eval_flags = ["--eval_num_samples", "8", "--eval_inference_steps", "3", "--eval_bpd_timesteps", "4",
                  "--eval_bpd_images", "4"]
    # no warm-up: at the default 100 steps, 3 steps move the weights by 1e-4 and the model is still its initialisation
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "3", "--train_batch_size", "1500",
                 "--lr_warmup_steps", "0", "--eval_epochs", "2", "--logger", "tensorboard", *eval_flags)
    scalars = tensorboard_scalars(out / "logs")
    for tag in ("eval/fd", "eval/fd_floor", "eval/fd_ratio", "eval/confidence", "eval/classes_covered",
                "eval/bits_per_dim", "eval/bits_per_dim_se", "eval/sampling_seconds"):
        assert [step for step, _ in scalars[tag]] == [2, 3], tag  # epochs of 1 step: after epoch 2 and the last

    unet = UNet2DModel.from_pretrained(out, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    evaluation = dict(num_samples=8, sampler="dpm", num_inference_steps=3, bpd_timesteps=4, bpd_images=None,
                      bpd_num_images=4, seed=0)
    expected = evaluate_model(unet, scheduler, **evaluation)
    assert scalars["eval/fd"][-1][1] == pytest.approx(expected["fd"], rel=1e-4)
    assert scalars["eval/bits_per_dim"][-1][1] == pytest.approx(expected["bits_per_dim"], rel=1e-4)
    assert expected["fd"] > expected["fd_floor"] > 0

    # The weights training started from: set_seed(0) then UNet2DModel.from_config. Rebuilt here, they are within
    # a few percent of the exported ones in weight space (another seed's are ~100% away), so they are the start.
    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    initial = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        initial[seed] = UNet2DModel.from_config(unet.config)
    moved = {seed: ((weights(unet) - weights(model)).norm() / weights(model).norm()).item()
             for seed, model in initial.items()}
    assert 0 < moved[0] < 0.1 < 0.5 < moved[1], moved
    # three steps of training lower both metrics on the same evaluation draws (by 0.8 bits/dim and 9% of fd here)
    untrained = evaluate_model(initial[0], scheduler, **evaluation)
    assert expected["bits_per_dim"] < untrained["bits_per_dim"] - 0.3, (expected, untrained)
    assert expected["fd"] < 0.97 * untrained["fd"], (expected, untrained)

    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "| evaluated at step | 3 |" in card
    assert "| Frechet digits distance (8 samples, DPM-Solver++ 3 steps) | " in card
    assert f"{expected['bits_per_dim']:.4f} ± " in card and "held-out digits, 4 images, 4-term estimate" in card


def test_eval_on_other_data_reports_training_image_bits_per_dim(tmp_path, tiny_config, capsys):
    folder = _image_folder(tmp_path / "images", count=6)
    out = _train(tmp_path / "run", tiny_config, "--train_data_dir", str(folder), "--eval_epochs", "1",
                 "--eval_bpd_timesteps", "3", "--eval_bpd_images", "4", "--max_train_steps", "1")
    printed = capsys.readouterr().out
    assert "evaluation at step 1: bits_per_dim " in printed and "fd" not in printed.split("evaluation at step 1:")[1]
    card = (out / "README.md").read_text()
    assert "bits/dim (first 4 training images, 3-term estimate)" in card and "Frechet" not in card


def test_timestep_spacing_default_follows_the_prediction_type():
    """trailing starts few-step samplers at t = T-1, where x0 from an epsilon prediction divides by sqrt(abar_T-1)
    (about 5e-5 for the cosine schedule): epsilon models keep diffusers' leading spacing unless told otherwise."""
    assert train_ddpm.parse_args([]).timestep_spacing == "trailing"  # v-prediction, the default
    assert train_ddpm.parse_args(["--prediction_type", "epsilon"]).timestep_spacing == "leading"
    assert train_ddpm.parse_args(["--prediction_type", "epsilon", "--timestep_spacing", "trailing"]
                                 ).timestep_spacing == "trailing"


def test_the_model_card_describes_the_builtin_digits_and_lists_only_this_tasks_flags(tmp_path, tiny_config):
    """The built-in digits are scikit-learn's, not the Hub dataset called "digits": no link, no datasets tag; and an
    unconditional run's hyperparameter table holds no text-to-image or VAE flag."""
    out = _train(tmp_path / "run", tiny_config)
    card = (out / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "huggingface.co/datasets" not in card and "datasets:" not in front_matter
    assert "scikit-learn's built-in handwritten digits" in card
    table = {line.split("|")[1].strip() for line in card.splitlines() if line.startswith("| ")}
    assert {"learning_rate", "ddpm_num_inference_steps", "eval_bpd_images"} <= table
    assert not table & {"vae_num_steps", "guidance_scale", "caption_column", "validation_prompts", "given_flags"}


def test_every_step_reaches_tensorboard_without_a_flush_per_step(tmp_path, tiny_config, monkeypatch):
    """The loss of every step is in the event file, and the writer is not flushed once a step (accelerate's
    TensorBoardTracker.log does, about 70 ms a step here); it flushes on its own timer and at the end."""
    from torch.utils.tensorboard import SummaryWriter

    flushes = []
    real_flush = SummaryWriter.flush
    monkeypatch.setattr(SummaryWriter, "flush", lambda self: (flushes.append(1), real_flush(self))[1])
    out = _train(tmp_path / "run", tiny_config, "--max_train_steps", "8", "--logger", "tensorboard")
    scalars = tensorboard_scalars(out / "logs")
    assert [step for step, _ in scalars["loss"]] == list(range(1, 9))
    assert [value for _, value in scalars["loss"]] == pytest.approx(
        json.loads((out / "checkpoint-8" / "training_state.json").read_text())["loss_history"], rel=1e-5)
    assert len(flushes) <= 2  # the hyperparameters at the start; nothing per step
