"""train_ddpm.py --task distill end to end with a tiny teacher: the round folders stock diffusers samples bit for bit
as ddpm_hub's own sampler does, exact resume inside and between rounds, the student of a learned-variance teacher,
and one-line errors for bad input."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_ddpm  # noqa: E402
from conftest import tiny_unet  # noqa: E402


def _teacher(folder: Path, prediction_type: str = "v_prediction", out_channels: int = 1) -> Path:
    """An (untrained) tiny 16x16 digits DDPMPipeline folder: T = 1000, cosine schedule."""
    from ddpm_hub import DDPMScheduler
    from ddpm_hub.export import save_pipeline

    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                              timestep_spacing="trailing")
    save_pipeline(folder, tiny_unet(in_channels=1, out_channels=out_channels, sample_size=16), dict(scheduler.config))
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return _teacher(tmp_path_factory.mktemp("teacher") / "tiny-teacher")


def _args(teacher: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--task", "distill", "--teacher", str(teacher), "--output_dir", str(output_dir), "--distill_start_steps",
            "8", "--distill_steps", "2", "--distill_round_steps", "3", "--train_batch_size", "16", "--logger", "none",
            "--eval_epochs", "0", "--distill_grid_images", "4", *extra]


def _distill(teacher: Path, output_dir: Path, *extra: str):
    return train_ddpm.main(train_ddpm.parse_args(_args(teacher, output_dir, *extra)))


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "diffusion_pytorch_model.safetensors")


def test_round_folders_are_ddim_pipelines_that_reproduce_our_sampler_bit_for_bit(tmp_path, teacher):
    """Each round's folder loads in stock diffusers as a DDIMPipeline whose saved config visits exactly the round's
    training timesteps, and samples the same bits as ddpm_hub's own N-step sampler (the grid's and the
    evaluation's); the output folder holds the last student; each card names its step count."""
    from diffusers import DDIMPipeline, DiffusionPipeline

    from ddpm_hub.distillation import distillation_grid
    from ddpm_hub.sampling import generate, sampling_pipeline

    out = tmp_path / "distilled"
    summary = _distill(teacher, out)
    assert summary.steps == 6 and len(summary.phase_seconds) == 2
    for steps in (4, 2):
        folder = out / f"round-{steps}"
        pipe = DiffusionPipeline.from_pretrained(folder)
        assert isinstance(pipe, DDIMPipeline)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler.set_timesteps(steps)
        assert torch.equal(pipe.scheduler.timesteps, distillation_grid(pipe.scheduler.config, steps).timesteps)
        stock = pipe(batch_size=3, num_inference_steps=steps, generator=torch.Generator().manual_seed(5),
                     output_type="np").images
        ours = generate(sampling_pipeline(pipe.unet, pipe.scheduler.config, "ddim"), 3, num_inference_steps=steps,
                        batch_size=3, seed=5)
        assert torch.equal(torch.from_numpy(stock), ours)
        card = (folder / "README.md").read_text()
        assert f"num_inference_steps={steps})" in card and f"exactly {steps} deterministic DDIM step" in card
        assert (folder / "samples.png").is_file()
    last, top = _weights(out / "round-2" / "unet"), _weights(out / "unet")
    assert all(torch.equal(last[k], top[k]) for k in last)
    first = _weights(out / "round-4" / "unet")
    assert any(not torch.equal(first[k], last[k]) for k in first)  # round 2 trained on
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
    table = {line.split("|")[1].strip() for line in (out / "README.md").read_text().splitlines()
             if line.startswith("| ")}
    assert {"teacher", "distill_round_steps"} <= table and not table & {"prediction_type", "snr_gamma",
                                                                          "ddpm_num_steps", "num_epochs"}


@pytest.mark.parametrize("removed", [("checkpoint-4", "checkpoint-6"), ("checkpoint-6",)],
                         ids=["from-the-end-of-round-1", "inside-round-2"])
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, teacher, removed):
    """Rounds of 3 steps with a checkpoint every 2: checkpoint-3 ends round 1 (its student not yet the teacher),
    checkpoint-4 is inside round 2 (the teacher saved in it). Resumed from either, the run ends with the weights,
    EMA and losses of an uninterrupted one."""
    common = ("--checkpointing_steps", "2", "--random_flip", "--seed", "3")
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    _distill(teacher, full, *common)
    _distill(teacher, interrupted, *common)
    for name in removed:
        shutil.rmtree(interrupted / name)
    state = json.loads((interrupted / "checkpoint-4" / "distill_state.json").read_text()) \
        if (interrupted / "checkpoint-4").exists() else None
    assert state is None or state["round"] == 1 and (interrupted / "checkpoint-4" / "teacher").is_dir()
    _distill(teacher, interrupted, *common, "--resume_from_checkpoint", "latest")
    for folder in ("checkpoint-6/unet", "checkpoint-6/unet_ema", "checkpoint-6/teacher"):
        a, b = _weights(full / folder), _weights(interrupted / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    losses = [json.loads((run / "checkpoint-6" / "training_state.json").read_text())["loss_history"]
              for run in (full, interrupted)]
    assert losses[0] == losses[1]


def test_a_learned_variance_teacher_is_distilled_through_its_mean_channels(tmp_path):
    """The student keeps the teacher's first C output filters (the mean) and outputs C channels, so stock DDIM
    samples it; the teacher's reference still samples with its own variance."""
    from diffusers import DiffusionPipeline

    from ddpm_hub.training.tasks.distill import load_teacher, student_from

    folder = _teacher(tmp_path / "hybrid", prediction_type="epsilon", out_channels=2)
    unet, _ = load_teacher(str(folder))
    student = student_from(unet)
    assert student.config.out_channels == 1
    assert torch.equal(student.conv_out.weight, unet.conv_out.weight[:1])
    z, t = torch.randn(2, 1, 16, 16), torch.tensor([999, 10])
    with torch.no_grad():
        torch.testing.assert_close(student(z, t).sample, unet(z, t).sample[:, :1], rtol=0, atol=1e-5)
    out = tmp_path / "out"
    _distill(folder, out, "--distill_steps", "4", "--distill_round_steps", "1")
    pipe = DiffusionPipeline.from_pretrained(out / "round-4")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=1, num_inference_steps=4, output_type="np").images.shape == (1, 16, 16, 1)


def _configs(folder: Path, unet: dict | None = None, scheduler: dict | None = None) -> Path:
    for name, update in (("unet/config.json", unet), ("scheduler/scheduler_config.json", scheduler)):
        path = folder / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **(update or {})}))
    return folder


@pytest.mark.parametrize("case,extra,match", [
    ("missing", [], "--teacher '{missing}' is not a folder"),
    ("empty", [], "is not a diffusion pipeline folder: it lacks model_index.json, unet/config.json"),
    ("conditional", [], "has a UNet2DConditionModel denoiser; distillation takes an unconditional UNet2DModel"),
    ("classes", [], "is class-conditional"),
    ("ok", ["--distill_steps", "3"], "--distill_steps 3 must be --distill_start_steps 8 divided by a power of two"),
    ("ok", ["--distill_steps", "8"], "--distill_steps 8 must be --distill_start_steps 8 divided by a power of two"),
    ("ok", ["--distill_start_steps", "2048", "--distill_steps", "4"],
     "--distill_start_steps 2048 exceeds the teacher's 1000 diffusion steps"),
    ("ok", ["--prediction_type", "epsilon"], "--prediction_type has no effect with --task distill: students predict v"),
    ("ok", ["--max_train_steps", "5"], "--max_train_steps has no effect with --task distill"),
    ("ok", ["--resolution", "32"], "--resolution 32 contradicts the teacher's 16"),
    ("ok", ["--eval_batch_size", "4"], "--eval_batch_size is a --task unconditional or class-conditional flag"),
    ("threshold", [], "samples with dynamic thresholding"),
])
def test_bad_input_gives_one_line_errors(tmp_path, teacher, capsys, case, extra, match):
    folders = {"missing": tmp_path / "nowhere", "empty": tmp_path, "ok": teacher}
    if case in ("conditional", "classes", "threshold"):
        folder = shutil.copytree(teacher, tmp_path / case)
        folders[case] = _configs(folder, {"_class_name": "UNet2DConditionModel"} if case == "conditional" else
                                 {"num_class_embeds": 10} if case == "classes" else None,
                                 {"thresholding": True} if case == "threshold" else None)
    argv = _args(folders[case], tmp_path / "out", *extra)
    code = train_ddpm.cli(argv)
    err = capsys.readouterr().err
    assert code == 2 and match.format(missing=tmp_path / "nowhere") in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_distill_needs_a_teacher(tmp_path, capsys):
    assert train_ddpm.cli(["--task", "distill", "--output_dir", str(tmp_path / "o")]) == 2
    assert "--task distill needs --teacher DIR" in capsys.readouterr().err
