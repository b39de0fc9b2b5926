"""README.md model cards: metadata parsed back by huggingface_hub, body content, secrets, atomic write,
and the usage snippet actually running against a tiny saved pipeline."""

import json
import os
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from ddpm_hub.errors import InputError
from ddpm_hub.model_card import render_model_card, template_path

REPO_ROOT = Path(__file__).resolve().parent.parent
HYPERPARAMETERS = {
    "learning_rate": 1e-4,
    "train_batch_size": 16,
    "num_epochs": 50,
    "lr_scheduler": "cosine",
    "mixed_precision": "no",
    "hub_token": "hf_secret123",
}


@pytest.fixture
def run_dir(tmp_path):
    """A pipeline folder as train_ddpm.py leaves it (configs only; the weights are not read)."""
    folder = tmp_path / "ddpm-butterflies-64"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "samples").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    (folder / "unet" / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DModel", "sample_size": 64, "block_out_channels": [128, 256]})
    )
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMScheduler",
                "num_train_timesteps": 1000,
                "beta_schedule": "linear",
                "prediction_type": "epsilon",
            }
        )
    )
    (folder / "samples" / "final.png").write_bytes(b"\x89PNG fake")
    return folder


def _render(folder, **overrides):
    kwargs = dict(
        repo_id="alice/ddpm-butterflies-64",
        dataset_name="huggan/smithsonian_butterflies_subset",
        hyperparameters=HYPERPARAMETERS,
        final_loss=0.0123,
        sample_grid="samples/final.png",
    )
    kwargs.update(overrides)
    return render_model_card(folder, **kwargs)


def test_template_is_the_top_level_file_and_the_packaged_symlink_points_to_it():
    assert template_path() == REPO_ROOT / "model_card_template.md"
    packaged = REPO_ROOT / "ddpm_hub" / "templates" / "model_card_template.md"
    assert packaged.is_symlink() and os.readlink(packaged) == "../../model_card_template.md"
    assert packaged.read_text() == template_path().read_text()


def test_unconditional_card_metadata(run_dir):
    card = ModelCard.load(_render(run_dir))
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "apache-2.0"
    assert card.data.tags == ["ddpm_hub", "diffusers", "diffusers-training", "ddpm", "unconditional-image-generation"]
    assert card.data.datasets == ["huggan/smithsonian_butterflies_subset"]


def test_unconditional_card_body(run_dir):
    body = ModelCard.load(_render(run_dir, metrics={"fid": 41.27, "inception_score": 3.5})).text
    assert body.lstrip().startswith("# ddpm-butterflies-64")
    # Description from the saved configs, data with a link.
    assert "`UNet2DModel` (sample size 64×64" in body
    assert "`DDPMScheduler` (1000 timesteps, `linear` β schedule, predicting `epsilon`)" in body
    assert "(https://huggingface.co/datasets/huggan/smithsonian_butterflies_subset)" in body
    assert "![Samples from ddpm-butterflies-64](samples/final.png)" in body
    # Usage: DDPM with the repo id, then the DPM-Solver++ swap.
    assert "from diffusers import DDPMPipeline" in body
    assert 'DDPMPipeline.from_pretrained("alice/ddpm-butterflies-64")' in body
    assert "images = pipe(batch_size=8).images" in body
    assert "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)" in body
    # Hyperparameters table, loss, metrics, credit line.
    for row in ["| learning_rate | 0.0001 |", "| train_batch_size | 16 |", "| lr_scheduler | cosine |"]:
        assert row in body
    assert "Final training loss: **0.0123**" in body
    assert "| fid | 41.27 |" in body and "| inception_score | 3.5 |" in body
    assert "Trained with ddpm_hub" in body


def test_no_repo_id_points_usage_at_the_folder_and_no_metrics_section(run_dir):
    body = ModelCard.load(_render(run_dir, repo_id=None, final_loss=None, sample_grid=None)).text
    assert f'DDPMPipeline.from_pretrained("{run_dir.as_posix()}")' in body
    assert "Final training loss: **not recorded**" in body
    assert "![" not in body and "## Evaluation" not in body


def test_token_never_reaches_the_card(run_dir):
    hyperparameters = {
        **HYPERPARAMETERS,
        "HF_TOKEN": "hf_other456",
        "push_token_note": "x",
        "notes": "hf_AbCdEfGh12345678",  # a token-looking value under an innocent key
    }
    readme = _render(run_dir, hyperparameters=hyperparameters)
    text = readme.read_text()
    for secret in ["hf_secret123", "hf_other456", "hf_AbCdEfGh12345678"]:
        assert secret not in text
    assert "token" not in text.lower().split("## training", 1)[1]
    assert HYPERPARAMETERS["hub_token"] == "hf_secret123"  # the caller's dict is not modified


def test_table_cells_are_escaped(run_dir):
    body = ModelCard.load(_render(run_dir, hyperparameters={"resolution|crop": "64\ncenter", "dims": [1, 2]})).text
    assert "| resolution\\|crop | 64 center |" in body
    assert "| dims | [1, 2] |" in body


def test_text_to_image_card(run_dir):
    prompts = ["a watercolor butterfly", "a blue morpho on a leaf"]
    unet_config = {"_class_name": "UNet2DConditionModel", "sample_size": 64}
    (run_dir / "unet" / "config.json").write_text(json.dumps(unet_config))
    card = ModelCard.load(
        _render(
            run_dir,
            task="text-to-image",
            repo_id="alice/sd-butterflies",
            base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            validation_prompts=prompts,
        )
    )
    assert card.data.pipeline_tag == "text-to-image"
    assert card.data.tags == [
        "ddpm_hub",
        "diffusers",
        "diffusers-training",
        "ddpm",
        "text-to-image",
        "stable-diffusion",
    ]
    assert card.data.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    body = card.text
    assert 'StableDiffusionPipeline.from_pretrained("alice/sd-butterflies", safety_checker=None)' in body
    assert 'pipe("a watercolor butterfly"' in body
    assert "## Validation prompts" in body
    for prompt in prompts:
        assert f"- {prompt}" in body
    assert "DDPMPipeline" not in body
    assert len(re.findall(r"```python\n(.*?)```", body, flags=re.S)) == 1  # run in the test below


def test_local_dataset_is_described_but_not_in_metadata(run_dir, tmp_path):
    images = tmp_path / "my_images"
    images.mkdir()
    card = ModelCard.load(_render(run_dir, dataset_name=str(images)))
    assert card.data.datasets is None
    assert "local image folder (`my_images`)" in card.text


def test_readme_is_written_atomically_and_replaces_the_old_one(run_dir):
    (run_dir / "README.md").write_text("old card")
    before = set(run_dir.rglob("*"))
    readme = _render(run_dir)
    assert readme == run_dir / "README.md"
    assert set(run_dir.rglob("*")) == before  # no stray temp files
    assert readme.read_text().startswith("---\n") and "old card" not in readme.read_text()


def test_failed_render_leaves_no_temp_file_and_keeps_old_readme(run_dir, monkeypatch):
    (run_dir / "README.md").write_text("old card")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        _render(run_dir)
    monkeypatch.undo()
    assert (run_dir / "README.md").read_text() == "old card"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_bad_inputs_are_input_errors(run_dir, tmp_path):
    with pytest.raises(InputError, match="task"):
        _render(run_dir, task="image-to-image")
    with pytest.raises(InputError, match="sample_grid"):
        _render(run_dir, sample_grid="samples/missing.png")
    with pytest.raises(InputError, match="sample_grid"):
        _render(run_dir, sample_grid=str(run_dir / "samples" / "final.png"))
    with pytest.raises(InputError, match="output_dir"):
        _render(tmp_path / "missing")


def test_usage_snippets_run_against_a_tiny_saved_pipeline(tmp_path):
    """Execute the card's code blocks, as a user would paste them, against a tiny DDPM pipeline folder."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(4, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    folder = tmp_path / "tiny"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(folder)
    body = ModelCard.load(render_model_card(folder, hyperparameters={}, final_loss=0.5, sample_grid=None)).text
    assert "pipe(batch_size=8, num_inference_steps=10)" in body  # DDPMPipeline's default of 1000 would fail

    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 2
    namespace = {}
    exec(blocks[0], namespace)
    assert len(namespace["images"]) == 8 and namespace["images"][0].size == (8, 8)
    exec(blocks[1], namespace)
    assert type(namespace["pipe"].scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert len(namespace["images"]) == 8


def _tiny_stable_diffusion_folder(folder: Path) -> Path:
    """A Stable Diffusion folder of a few thousand parameters as StableDiffusionPipeline.save_pretrained writes it:
    16x16 images through a two-level VAE (8x8 latents), a one-layer CLIP text encoder, a 100-step scheduler."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from ddpm_hub.data.shapes import generate_shapes
    from ddpm_hub.text_encoder import build_clip_tokenizer, build_text_encoder
    from ddpm_hub.text_to_image import build_conditional_unet
    from ddpm_hub.vae import build_vae

    tokenizer = build_clip_tokenizer(generate_shapes(40, 16).captions)
    text_encoder = build_text_encoder(tokenizer, seed=0, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32)
    unet = build_conditional_unet({"sample_size": 8, "in_channels": 4, "out_channels": 4, "cross_attention_dim": 16,
                                   "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                                   "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                                   "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2})
    vae = build_vae({"sample_size": 16, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
                     "block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
                     "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "norm_num_groups": 4})
    scheduler = DDPMScheduler(num_train_timesteps=100, steps_offset=1, clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def test_text_to_image_snippet_runs_against_a_tiny_saved_pipeline(tmp_path, monkeypatch):
    """Execute the text-to-image card's code block, as a user would paste it, against a tiny local Stable Diffusion
    folder with the network blocked; its image must be the one the stock pipeline draws for the same prompt, steps
    and random state (so the snippet loads this folder and passes the validation prompt through unchanged)."""
    import socket

    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    folder = _tiny_stable_diffusion_folder(tmp_path / "tiny-sd")
    prompt = 'a "red" circle'  # quotes: the prompt literal must be escaped
    card = ModelCard.load(render_model_card(folder, task="text-to-image", hyperparameters={}, final_loss=0.5,
                                            sample_grid=None, validation_prompts=[prompt]))
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 1

    def no_network(*args, **kwargs):
        raise AssertionError("the snippet tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.chdir(tmp_path)  # the snippet writes sample.png to the working directory
    torch.manual_seed(0)
    namespace = {}
    exec(blocks[0], namespace)
    assert isinstance(namespace["pipe"], StableDiffusionPipeline)
    saved = Image.open(tmp_path / "sample.png")
    assert saved.size == (16, 16) and saved.mode == "RGB"

    reference = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    torch.manual_seed(0)
    expected = reference(prompt, num_inference_steps=50).images[0]
    assert namespace["image"].tobytes() == expected.tobytes()
    torch.manual_seed(0)
    other = reference("a blue square", num_inference_steps=50).images[0]
    assert other.tobytes() != expected.tobytes()  # the comparison can tell prompts apart
