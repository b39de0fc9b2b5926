"""Text-to-image end to end (train_ddpm.py --task text-to-image) and the pieces of ddpm_hub.text_to_image.

Tiny everything: 16x16 shapes, a two-level VAE, a U-Net of a few thousand parameters, a few steps; the checks are
against references (a stock StableDiffusionPipeline, the loss written out by hand, diffusers' posterior sampling).
"""

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_ddpm  # noqa: E402

from ddpm_hub.errors import InputError  # noqa: E402
from ddpm_hub.scheduling_ddpm import DDPMScheduler  # noqa: E402
from ddpm_hub.data.shapes import generate_shapes  # noqa: E402
from ddpm_hub.text_encoder import build_clip_tokenizer, build_text_encoder, encode_prompts  # noqa: E402
from ddpm_hub.text_to_image import (  # noqa: E402
    LatentDataset,
    TextToImageComponents,
    adherence_prompts,
    build_conditional_unet,
    default_conditional_unet_config,
    drop_captions,
    generate_from_prompts,
    prompt_adherence,
    sample_latents,
    text_to_image_loss,
)
from ddpm_hub.training.objectives import LossConfig  # noqa: E402
from ddpm_hub.vae import build_vae  # noqa: E402

from conftest import tensorboard_scalars  # noqa: E402

# a UNet2DConditionModel of a few thousand parameters (4 x 4 x 4 latents of 16x16 images through the default
# three-level VAE; 4 x 8 x 8 through the two-level TINY_VAE)
TINY_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2}
TINY_VAE = {"sample_size": 16, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "norm_num_groups": 4}
SIZES = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
PROMPTS = ("a red circle", "a blue square")


@pytest.fixture(scope="module")
def unet_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("config") / "tiny_unet.json"
    path.write_text(json.dumps(TINY_UNET))
    return str(path)


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    """A tiny AutoencoderKL saved as a folder (untrained; scaling_factor 0.5), for --pretrained_vae_name_or_path."""
    folder = tmp_path_factory.mktemp("vae") / "vae"
    vae = build_vae(TINY_VAE, seed=0)
    vae.register_to_config(scaling_factor=0.5)
    vae.save_pretrained(folder)
    return folder


def _args(output_dir, unet_config, *extra: str) -> list[str]:
    return ["--task", "text-to-image", "--output_dir", str(output_dir), "--num_images", "24", "--resolution", "16",
            "--model_config_name_or_path", unet_config, "--train_batch_size", "8", "--max_train_steps", "2",
            "--logger", "none", "--eval_epochs", "0", "--num_validation_images", "1", "--eval_inference_steps", "2",
            "--validation_prompts", *PROMPTS, *extra]


def _train(output_dir, unet_config, *extra: str) -> Path:
    summary = train_ddpm.main(train_ddpm.parse_args(_args(output_dir, unet_config, *extra)))
    assert summary.steps > 0 and summary.images_per_second > 0
    return summary.output_dir


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = list(folder.glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(files[0])


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _captioned_folder(root: Path, captions: list[str], column: str = "text") -> Path:
    """16x16 shapes images with a metadata.jsonl giving each its caption in `column`."""
    root.mkdir(parents=True)
    data = generate_shapes(len(captions), 16, seed=1)
    lines = []
    for i, caption in enumerate(captions):
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", column: caption}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _tiny_sd_folder(folder: Path) -> Path:
    """A tiny Stable Diffusion folder as StableDiffusionPipeline.save_pretrained writes it, with a 100-step
    scheduler (so a test can tell the folder's scheduler from the flags' default)."""
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler
    from diffusers import StableDiffusionPipeline

    tokenizer = build_clip_tokenizer(generate_shapes(40, 16).captions)
    text_encoder = build_text_encoder(tokenizer, seed=0, **SIZES)
    unet = build_conditional_unet({**TINY_UNET, "sample_size": 8, "in_channels": 4, "out_channels": 4,
                                   "cross_attention_dim": SIZES["hidden_size"]}, seed=0)
    vae = build_vae(TINY_VAE, seed=0)
    scheduler = DiffusersDDPMScheduler(num_train_timesteps=100, steps_offset=1, clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------ end to end
STOCK_SCRIPT = r"""
import sys
class NoDdpmHub:  # the folder must load without ddpm_hub
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ddpm_hub":
            raise ImportError("ddpm_hub is blocked in this test")
sys.meta_path.insert(0, NoDdpmHub())
import numpy as np, torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline
out, result = sys.argv[1], sys.argv[2]
pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
pipe.set_progress_bar_config(disable=True)
images = {}
for name, cls in (("ddpm", None), ("ddim", DDIMScheduler), ("dpm", DPMSolverMultistepScheduler)):
    if cls is not None:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    images[name] = pipe("a red circle", guidance_scale=3.0, num_inference_steps=3, output_type="np",
                        generator=torch.Generator().manual_seed(0)).images
images["dpm_unguided"] = pipe("a red circle", guidance_scale=1.0, num_inference_steps=3, output_type="np",
                              generator=torch.Generator().manual_seed(0)).images
np.savez(result, **images)
"""


def test_run_exports_a_stable_diffusion_folder_that_stock_diffusers_samples(tmp_path, unet_config):
    """VAE stage, joint text encoder + U-Net training, validation grid, evaluation, export: the folder loads with
    stock diffusers in a process where ddpm_hub cannot be imported, samples with DDPM, DDIM and DPM-Solver swapped
    in, and gives exactly the images `generate_from_prompts` gives; the exported pair is the EMA pair."""
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import ModelCard

    out = _train(tmp_path / "run", unet_config, "--vae_num_steps", "3", "--vae_batch_size", "8",
                 "--checkpointing_steps", "2", "--logger", "tensorboard", "--eval_epochs", "1",
                 "--eval_num_samples", "3", "--guidance_scale", "3")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["requires_safety_checker"] is False
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["safety_checker"] == [None, None]
    for part in ("model_index.json", "vae", "text_encoder", "tokenizer", "unet", "scheduler"):
        for path in [out / part] if part.endswith(".json") else (out / part).glob("*.json"):
            assert "ddpm_hub" not in path.read_text(), path
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDPMScheduler" and scheduler["steps_offset"] == 1
    assert scheduler["clip_sample"] is False and scheduler["num_train_timesteps"] == 1000
    assert not list(out.glob(".tmp*"))

    # the VAE stage: its reconstruction grid, a scaling factor from the data, the VAE exported as trained
    assert (out / "vae_reconstructions.png").is_file() and list(out.glob("vae-checkpoint-*"))
    assert json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] != 1.0
    # the exported U-Net and text encoder are the EMA weights of the last checkpoint, not the raw ones
    checkpoint = out / "checkpoint-2"
    for name in ("unet", "text_encoder"):
        exported, ema, raw = _weights(out / name), _weights(checkpoint / f"{name}_ema"), _weights(checkpoint / name)
        assert _same(exported, ema) and not _same(exported, raw), name

    # stock diffusers, no ddpm_hub, three samplers; the same numbers as generate_from_prompts
    result = tmp_path / "stock.npz"
    done = subprocess.run([sys.executable, "-I", "-c", STOCK_SCRIPT, str(out), str(result)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stock = np.load(result)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no steps_offset / clip_sample rewrite of the config
        pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    for sampler in ("ddpm", "ddim", "dpm"):
        ours = generate_from_prompts(pipe, ["a red circle"], 3.0, 3, seed=0, sampler=sampler).numpy()
        assert ours.shape == (1, 16, 16, 3) and np.isfinite(ours).all()
        np.testing.assert_allclose(ours, stock[sampler], atol=1e-5, err_msg=sampler)
    assert np.abs(stock["dpm"] - stock["dpm_unguided"]).max() > 1e-4  # guidance changes the image

    # --push_to_hub uploads the pipeline, never the VAE stage's checkpoints (optimizer state) or logs
    from ddpm_hub.hub import files_to_upload

    uploaded = files_to_upload(out)
    assert "vae/diffusion_pytorch_model.safetensors" in uploaded and "tokenizer/tokenizer_config.json" in uploaded
    assert not [f for f in uploaded if "checkpoint-" in f or f.startswith("logs/")]

    # what a person looks at: one grid row per validation prompt, the card, tensorboard
    grid = Image.open(out / "samples" / "latest.png")
    assert grid.size == ((1 * 18 + 2) * 8, (2 * 18 + 2) * 8)  # 1 image x 2 prompts of 16 px, 2 px padding, x8
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-to-image" and "trained from scratch" in card.text
    assert "- a red circle" in card.text and "- a blue square" in card.text and "samples/latest.png" in card.text
    assert "| prompt adherence at guidance 3 (3 shapes prompts, DPM-Solver++ 2 steps) |" in card.text
    scalars = tensorboard_scalars(out / "logs")
    for tag in ("eval/adherence", "eval/adherence_unguided", "eval/adherence_colour", "eval/adherence_shape"):
        assert [step for step, _ in scalars[tag]] == [2] and 0.0 <= scalars[tag][0][1] <= 1.0, tag


def test_resume_continues_exactly_and_skips_a_finished_vae_stage(tmp_path, unet_config, caplog):
    """Killed after checkpoint-2 and resumed, the run ends with the weights of the uninterrupted one: U-Net, text
    encoder and both EMAs, bit for bit (random flips: latents encoded per batch). The finished vae/ is reused."""
    common = ("--vae_num_steps", "2", "--vae_batch_size", "8", "--random_flip", "--max_train_steps", "5",
              "--checkpointing_steps", "2", "--seed", "3", "--validation_epochs", "100")
    full = _train(tmp_path / "full", unet_config, *common)
    interrupted = _train(tmp_path / "interrupted", unet_config, *common)
    for name in ("checkpoint-4", "checkpoint-5", "unet", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        subprocess.run(["rm", "-rf", str(interrupted / name)], check=True)
    vae_before = (interrupted / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _train(tmp_path / "interrupted", unet_config, *common, "--resume_from_checkpoint", "latest")
    assert "using the trained VAE in" in caplog.text and "resumed VAE training" not in caplog.text
    assert (interrupted / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == vae_before
    for folder in ("unet", "text_encoder", "checkpoint-5/unet", "checkpoint-5/text_encoder", "checkpoint-5/unet_ema",
                   "checkpoint-5/text_encoder_ema"):
        assert _same(_weights(full / folder), _weights(interrupted / folder)), folder
    state = [json.loads((run / "checkpoint-5" / "training_state.json").read_text()) for run in (full, interrupted)]
    assert state[0]["loss_history"] == state[1]["loss_history"] and len(state[0]["loss_history"]) == 5
    ema_state = json.loads((interrupted / "checkpoint-5" / "text_encoder_ema" / "ema_state.json").read_text())
    assert ema_state["optimization_step"] == 5


def test_fine_tuning_a_stable_diffusion_folder_trains_only_its_unet(tmp_path):
    sd = _tiny_sd_folder(tmp_path / "sd")
    args = ["--task", "text-to-image", "--output_dir", str(tmp_path / "run"), "--pretrained_model_name_or_path",
            str(sd), "--num_images", "16", "--train_batch_size", "8", "--max_train_steps", "2", "--logger", "none",
            "--eval_epochs", "0", "--num_validation_images", "1", "--eval_inference_steps", "2", "--no-use_ema"]
    out = train_ddpm.main(train_ddpm.parse_args(args)).output_dir
    assert _same(_weights(out / "vae"), _weights(sd / "vae"))
    assert _same(_weights(out / "text_encoder"), _weights(sd / "text_encoder"))
    assert not _same(_weights(out / "unet"), _weights(sd / "unet"))
    from transformers import CLIPTokenizer

    exported, original = (CLIPTokenizer.from_pretrained(folder / "tokenizer") for folder in (out, sd))
    assert exported.get_vocab() == original.get_vocab() and exported.model_max_length == original.model_max_length
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"] == 100
    assert not (out / "checkpoint-2" / "text_encoder").exists()  # only the U-Net trains
    assert Image.open(out / "samples" / "latest.png").size[0] == (1 * 18 + 2) * 8  # 16 px: 8 latents x 2
    assert "fine-tuned" in (out / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad")
    sd_without_unet = _tiny_sd_folder(root / "sd")
    subprocess.run(["rm", "-rf", str(sd_without_unet / "unet")], check=True)
    wrong_channels = root / "unet3.json"
    wrong_channels.write_text(json.dumps({**TINY_UNET, "in_channels": 3, "out_channels": 3}))
    return {"other_column": _captioned_folder(root / "other", ["a red circle"] * 4, column="caption"),
            "empty": _captioned_folder(root / "empty", [""] * 4), "sd_without_unet": sd_without_unet,
            "wrong_channels": wrong_channels}


@pytest.mark.parametrize("make_flags,message", [
    (lambda d, v: ["--train_data_dir", str(d["other_column"])],
     "--caption_column 'text' is not a column of the metadata in --train_data_dir"),
    (lambda d, v: ["--train_data_dir", str(d["empty"])], "--caption_column 'text' is empty in every one of the 4"),
    (lambda d, v: ["--pretrained_model_name_or_path", str(d["sd_without_unet"])], "has no unet/ folder"),
    (lambda d, v: ["--pretrained_vae_name_or_path", str(v), "--model_config_name_or_path", str(d["wrong_channels"])],
     "the VAE's latent_channels (4) do not match the U-Net's in_channels (3)"),
    (lambda d, v: ["--pretrained_vae_name_or_path", str(v), "--vae_num_steps", "5"],
     "--vae_num_steps has no effect here: no VAE is trained when a pretrained one is given"),
    (lambda d, v: ["--ddpm_num_inference_steps", "10"],
     "--ddpm_num_inference_steps is a --task unconditional or class-conditional flag; --task text-to-image does "
     "not use it"),
    (lambda d, v: ["--loss_type", "hybrid"], "--loss_type 'hybrid' is not supported by --task text-to-image"),
    (lambda d, v: ["--conditioning_dropout_prob", "1.5"], "--conditioning_dropout_prob must be between 0 and 1"),
])
def test_bad_text_to_image_input_is_one_line_and_exit_2(tmp_path, unet_config, vae_folder, bad_data, capsys,
                                                        make_flags, message):
    args = _args(tmp_path / "run", unet_config, *make_flags(bad_data, vae_folder))
    if "--pretrained_model_name_or_path" in args:  # its U-Net config comes from the folder
        index = args.index("--model_config_name_or_path")
        del args[index:index + 2]
    code = train_ddpm.cli(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("flags,name", [(["--caption_column", "text"], "caption_column"),
                                        (["--num_validation_images", "3"], "num_validation_images"),
                                        (["--validation_prompts", "a red circle"], "validation_prompts")])
def test_text_to_image_flags_with_the_unconditional_task_are_an_error(tmp_path, capsys, flags, name):
    code = train_ddpm.cli(["--output_dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--{name} is a --task text-to-image flag; --task unconditional does not use it" in err


def test_task_defaults_and_explicit_flags():
    unconditional, text = train_ddpm.parse_args([]), train_ddpm.parse_args(["--task", "text-to-image"])
    assert (unconditional.resolution, unconditional.output_dir) == (16, "ddpm-digits-16")
    assert (text.resolution, text.output_dir) == (32, "ldm-shapes-32") and text.num_epochs != unconditional.num_epochs
    given = train_ddpm.parse_args(["--task", "text-to-image", "--resolution", "64", "--num_epochs", "3"])
    assert (given.resolution, given.num_epochs) == (64, 3)
    assert given.given_flags == {"task", "resolution", "num_epochs"}


def test_long_captions_are_truncated_with_one_warning(tmp_path, unet_config, vae_folder, caplog):
    """A pretrained (frozen) VAE, captions longer than --tokenizer_max_length: one warning for the whole run,
    not one per step."""
    long = "a red circle on a light grey background drawn large near the middle"
    data = _captioned_folder(tmp_path / "data", [long, "a blue square", long, "a green triangle"] * 2)
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.text_encoder"):
        _train(tmp_path / "run", unet_config, "--train_data_dir", str(data), "--pretrained_vae_name_or_path",
               str(vae_folder), "--tokenizer_max_length", "6", "--train_batch_size", "4", "--max_train_steps", "4")
    warned = [r for r in caplog.records if r.name == "ddpm_hub.text_encoder" and "truncated" in r.getMessage()]
    assert len(warned) == 1 and "1 of 3 captions are longer than" in warned[0].getMessage()
    assert not (tmp_path / "run" / "vae_reconstructions.png").exists()  # no VAE stage
    assert json.loads((tmp_path / "run" / "vae" / "config.json").read_text())["scaling_factor"] == 0.5


# ------------------------------------------------------------------------------------------------ the pieces
@pytest.fixture(scope="module")
def text_side():
    tokenizer = build_clip_tokenizer(generate_shapes(40, 16).captions, model_max_length=8)
    return tokenizer, build_text_encoder(tokenizer, seed=0, **SIZES)


def test_conditioning_dropout_rate_and_draws():
    torch.manual_seed(0)
    n, p = 20000, 0.1
    dropped = drop_captions(["a red circle"] * n, p)
    share = dropped.count("") / n
    assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5  # 4 standard errors
    assert set(dropped) == {"", "a red circle"}
    captions = [f"caption {i}" for i in range(50)]
    torch.manual_seed(7)
    ours = drop_captions(captions, 0.3)
    torch.manual_seed(7)
    reference = ["" if u < 0.3 else c for c, u in zip(captions, torch.rand(50).tolist())]
    assert ours == reference
    assert drop_captions(captions, 0.0) == captions and drop_captions(captions, 1.0) == [""] * 50
    with pytest.raises(InputError, match="between 0 and 1"):
        drop_captions(captions, -0.1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_is_l_simple_on_latents_written_out(text_side, prediction_type):
    """text_to_image_loss = the note 001 objective computed by hand: dropout, text states, x_t from the closed
    form sqrt(abar_t) z_0 + sqrt(1-abar_t) z, MSE to the prediction type's target."""
    tokenizer, text_encoder = text_side
    unet = build_conditional_unet({**TINY_UNET, "sample_size": 4, "in_channels": 4, "out_channels": 4,
                                   "cross_attention_dim": SIZES["hidden_size"]}, seed=0)
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    latents = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    captions = ["a red circle", "a blue square", "an orange triangle"] * 2
    torch.manual_seed(11)
    loss = text_to_image_loss(unet, text_encoder, tokenizer, latents, captions, scheduler,
                              LossConfig(prediction_type=prediction_type), conditioning_dropout_prob=0.5)

    torch.manual_seed(11)
    kept = ["" if u < 0.5 else c for c, u in zip(captions, torch.rand(6).tolist())]
    assert "" in kept and any(kept)  # this seed drops some and keeps some
    states = encode_prompts(tokenizer, text_encoder, kept)
    noise = torch.randn_like(latents)
    t = torch.randint(0, 100, (6,))
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)[t].float().view(6, 1, 1, 1)
    noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * latents
    prediction = unet(noisy, t, encoder_hidden_states=states).sample
    assert loss.item() == pytest.approx((prediction - target).pow(2).mean().item(), rel=1e-5)
    loss.backward()  # gradients reach both the U-Net and the text encoder
    assert unet.conv_in.weight.grad is not None
    assert all(p.grad is not None for p in text_encoder.get_input_embeddings().parameters())
    text_encoder.zero_grad(set_to_none=True)


def test_training_encodes_prompts_without_a_warning_per_call(text_side, caplog):
    tokenizer, text_encoder = text_side
    captions = ["a red circle", "", "a red circle on a light grey background near the middle"]
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.text_encoder"), torch.no_grad():
        ours = encode_prompts(tokenizer, text_encoder, captions, warn_truncation=False)
        assert not caplog.records
        assert torch.equal(ours, encode_prompts(tokenizer, text_encoder, captions))
    assert ours.shape == (3, 8, SIZES["hidden_size"]) and len(caplog.records) == 1  # encode_prompts warned


def test_cached_posteriors_give_the_latents_of_encoding_each_batch():
    """sample_latents from a LatentDataset batch = scaling_factor * vae.encode(x).latent_dist.sample() for the same
    RNG state (diffusers' train_text_to_image.py computes the latter every step)."""
    from ddpm_hub.data.captioned import load_captioned_dataset

    dataset = load_captioned_dataset(num_images=10, resolution=16)
    vae = build_vae(TINY_VAE, seed=0).eval()
    vae.register_to_config(scaling_factor=0.7)
    cached = LatentDataset(dataset, vae, batch_size=4)
    indices = [3, 0, 9, 4]
    batch = cached.__getitems__(indices)
    assert batch["captions"] == [dataset.captions[i] for i in indices]
    torch.manual_seed(5)
    ours = sample_latents(batch, vae)
    torch.manual_seed(5)
    with torch.no_grad():
        reference = vae.encode(dataset.__getitems__(indices)["pixel_values"]).latent_dist.sample() * 0.7
        pixels_path = sample_latents(dataset.__getitems__(indices), vae)
    assert ours.shape == (4, 4, 8, 8)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(pixels_path, reference)  # the RNG moved on: a second draw differs


def test_default_unet_size_and_seeding():
    config = default_conditional_unet_config(8, 4, 64)
    a, b = build_conditional_unet(config, seed=1), build_conditional_unet(config, seed=1)
    state = torch.random.get_rng_state()
    c = build_conditional_unet(config, seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert sum(p.numel() for p in a.parameters()) == 1_687_652
    assert _same(a.state_dict(), b.state_dict()) and not _same(a.state_dict(), c.state_dict())
    with torch.no_grad():
        out = a(torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), encoder_hidden_states=torch.randn(2, 16, 64)).sample
    assert out.shape == (2, 4, 8, 8)
    with pytest.raises(InputError, match="must be a multiple of 4"):
        build_conditional_unet(default_conditional_unet_config(6, 4, 64))


def test_prompt_adherence_scores_the_images_of_each_prompt(monkeypatch):
    """adherence_prompts covers every colour x shape pair evenly; prompt_adherence hands its prompts to the
    sampler and scores what comes back against them."""
    import ddpm_hub.text_to_image as t2i
    from ddpm_hub.data.shapes import COLOURS, SHAPES, parse_prompt

    prompts = adherence_prompts(36)
    assert len(set(prompts)) == len(COLOURS) * len(SHAPES) == 18 and all(prompts.count(p) == 2 for p in prompts)
    assert "an orange circle" in prompts
    pool = generate_shapes(400, 32, seed=0)
    by_pair = {parse_prompt(c): pool.images[i] for i, c in enumerate(pool.captions)}
    drawn = {}

    def fake_generate(model, prompts, guidance_scale, num_inference_steps, seed, sampler, batch_size):
        drawn["args"] = (model, guidance_scale, num_inference_steps, seed, sampler)
        images = torch.stack([by_pair[parse_prompt(p)] for p in prompts])  # the right picture for each prompt
        return images.permute(0, 2, 3, 1).float() / 255

    monkeypatch.setattr(t2i, "generate_from_prompts", fake_generate)
    result = prompt_adherence("model", num_prompts=20, guidance_scale=4.0, num_inference_steps=7, seed=3)
    assert result.accuracy == 1.0 and len(result.correct) == 20 and drawn["args"] == ("model", 4.0, 7, 3, "dpm")
    monkeypatch.setattr(t2i, "generate_from_prompts", lambda *a, **k: fake_generate(*a, **k).roll(1, dims=0))
    assert prompt_adherence("model", num_prompts=18).accuracy == 0.0  # every image shows its neighbour's prompt


def test_generate_from_components_is_the_stock_pipeline(text_side):
    import diffusers
    from diffusers import StableDiffusionPipeline

    from ddpm_hub.text_to_image import build_pipeline

    tokenizer, text_encoder = text_side
    unet = build_conditional_unet({**TINY_UNET, "sample_size": 8, "in_channels": 4, "out_channels": 4,
                                   "cross_attention_dim": SIZES["hidden_size"]}, seed=0)
    components = TextToImageComponents(vae=build_vae(TINY_VAE, seed=0).eval(), tokenizer=tokenizer,
                                       text_encoder=text_encoder.eval(), unet=unet.eval(),
                                       scheduler=DDPMScheduler(num_train_timesteps=50))
    ours = generate_from_prompts(components, list(PROMPTS), 2.0, 3, seed=4, sampler="ddim")
    pipe = build_pipeline(components, "ddim")
    assert isinstance(pipe, StableDiffusionPipeline) and type(pipe.scheduler).__name__ == "DDIMScheduler"
    reference = diffusers.DDPMScheduler(num_train_timesteps=50, steps_offset=1, clip_sample=False)
    stock = StableDiffusionPipeline(vae=components.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                    scheduler=diffusers.DDIMScheduler.from_config(reference.config),
                                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    stock = stock(list(PROMPTS), guidance_scale=2.0, num_inference_steps=3, output_type="np",
                  generator=torch.Generator().manual_seed(4)).images
    np.testing.assert_array_equal(ours.numpy(), stock)
    assert ours.shape == (2, 16, 16, 3) and 0.0 <= ours.min() and ours.max() <= 1.0
