"""The latent autoencoder (ddpm_hub.vae): note 003's KL and loss, training, scaling factor, exact resume, loading."""

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from PIL import Image
from safetensors.torch import load_file

from ddpm_hub import vae as vae_module
from ddpm_hub.training import checkpointing
from ddpm_hub.errors import InputError
from ddpm_hub.vae import (
    DEFAULT_BETA,
    build_vae,
    check_latent_channels,
    default_vae_config,
    find_latest_vae_checkpoint,
    gaussian_kl_standard_normal,
    latent_scaling_factor,
    load_pretrained_vae,
    train_vae,
    vae_loss,
)

# 16x16 RGB -> 4 x 8 x 8 latents; about 30k parameters
TINY_VAE = {"sample_size": 16, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "norm_num_groups": 4}


def coloured_squares(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n x 3 x R x R]: one square of a random colour, size and place on white per image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, resolution, resolution), 255, dtype=torch.uint8)
    for i in range(n):
        side = int(torch.randint(resolution // 4, resolution // 2 + 1, (1,), generator=g))
        top, left = torch.randint(0, resolution - side + 1, (2,), generator=g).tolist()
        images[i, :, top:top + side, left:left + side] = torch.randint(0, 256, (3, 1, 1), generator=g,
                                                                       dtype=torch.uint8)
    return images


def unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


@torch.no_grad()
def mode_reconstruction_error(vae, images: torch.Tensor) -> float:
    """Mean over images of ||x - f(mu(x))||^2."""
    x = unit(images)
    decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return (decoded - x).pow(2).flatten(1).sum(1).mean().item()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def squares():
    return coloured_squares(64, 16)


@pytest.fixture(scope="module")
def trained(squares, tmp_path_factory):
    """A tiny VAE trained 60 steps on 64 coloured squares, with the untrained error and RNG states around it."""
    output_dir = tmp_path_factory.mktemp("trained")
    vae = build_vae(TINY_VAE, seed=0)
    before = mode_reconstruction_error(vae, squares)
    rng_before = torch.get_rng_state()
    result = train_vae(vae, squares, num_steps=60, batch_size=8, learning_rate=5e-3, beta=DEFAULT_BETA, seed=0,
                       output_dir=output_dir, progress=False)
    return {"result": result, "before": before, "rng_before": rng_before, "rng_after": torch.get_rng_state(),
            "output_dir": output_dir}


# ------------------------------------------------------------------------------------------------ the model
def test_default_config_size_and_latent_shape():
    """The documented size: 954,567 parameters, 4x down-sampling (32x32 -> 4 x 8 x 8), same weights per seed."""
    vae = build_vae(default_vae_config(), seed=0)
    assert sum(p.numel() for p in vae.parameters()) == 954_567
    posterior = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist
    assert posterior.mean.shape == (1, 4, 8, 8)
    assert vae.decode(posterior.mean).sample.shape == (1, 3, 32, 32)
    grey = default_vae_config(resolution=16, channels=1, latent_channels=8)
    assert build_vae(grey).encode(torch.zeros(2, 1, 16, 16)).latent_dist.mean.shape == (2, 8, 4, 4)


def test_build_vae_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_vae(TINY_VAE, seed=3), build_vae(TINY_VAE, seed=3), build_vae(TINY_VAE, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_weights(a, b) and not same_weights(a, c)


# --------------------------------------------------------------------------------------------------- the KL
def test_kl_closed_form_matches_float64_monte_carlo():
    """Note 003: KL(N(mu, s^2) || N(0, 1)) = 1/2(-log s^2 + mu^2 + s^2 - 1), vs E_q[log q(z) - log p(z)]."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) * 0.8
    std = (0.5 * logvar).exp()
    z = mean + std * torch.randn(100_000, *mean.shape, generator=g, dtype=torch.float64)  # [S x N x 3 x 2 x 2]
    log_q = -0.5 * (((z - mean) / std) ** 2 + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z ** 2 + math.log(2 * math.pi))
    samples = (log_q - log_p).flatten(2).sum(2)  # [S x N]: log q(z)/p(z) summed over an image's latent dims
    estimate, standard_error = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    closed = gaussian_kl_standard_normal(mean, logvar)
    assert closed.shape == (2,) and closed.dtype == torch.float64
    assert ((closed - estimate).abs() < 4 * standard_error).all(), (closed, estimate, standard_error)
    assert (standard_error < 0.02 * closed).all()  # the check has teeth: 2% of the value
    # hand values: KL(N(0,1)||N(0,1)) = 0; mu = 1 adds 1/2; sigma^2 = e adds 1/2 (-1 + e - 1)
    zeros = torch.zeros(1, 1)
    assert gaussian_kl_standard_normal(zeros, zeros).item() == 0
    assert gaussian_kl_standard_normal(torch.ones(1, 1), zeros).item() == 0.5
    assert gaussian_kl_standard_normal(zeros, torch.ones(1, 1)).item() == pytest.approx(0.5 * (math.e - 2))


def test_kl_matches_diffusers_diagonal_gaussian():
    g = torch.Generator().manual_seed(1)
    parameters = torch.randn(3, 8, 4, 4, generator=g) * 2  # [N x 2*latent x h x w]: mean, logvar
    posterior = DiagonalGaussianDistribution(parameters)
    ours = gaussian_kl_standard_normal(posterior.mean, posterior.logvar)
    torch.testing.assert_close(ours, posterior.kl(), rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------------- the loss
def test_loss_equals_hand_computation_for_a_fixed_generator(squares):
    """encode -> q(z|x) -> z = mu + sigma * eps with eps from the generator -> decode; SSE + beta * KL."""
    vae = build_vae(TINY_VAE, seed=0)
    x = unit(squares[:4])
    out = vae_loss(vae, x, beta=0.25, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        z = mean + (0.5 * logvar).exp() * eps
        decoded = vae.decoder(vae.post_quant_conv(z))
        reconstruction = ((decoded - x) ** 2).sum(dim=(1, 2, 3))
        kl = 0.5 * (-logvar + mean ** 2 + logvar.exp() - 1).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out.reconstruction, reconstruction.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl, kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.loss, (reconstruction + 0.25 * kl).mean(), rtol=1e-5, atol=1e-4)
    # a different eps gives a different reconstruction term, the same KL
    other = vae_loss(vae, x, beta=0.25, generator=torch.Generator().manual_seed(8))
    assert other.reconstruction.item() != out.reconstruction.item()
    torch.testing.assert_close(other.kl, out.kl)


def test_reparameterization_sends_the_reconstruction_gradient_to_the_encoder(squares):
    vae = build_vae(TINY_VAE, seed=0)
    out = vae_loss(vae, unit(squares[:4]), beta=0.0, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0  # through z = mu + sigma * eps
    assert vae.decoder.conv_out.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- training
def test_training_lowers_the_reconstruction_error(trained):
    result = trained["result"]
    after = mode_reconstruction_error(result.vae, coloured_squares(64, 16))
    assert after < 0.4 * trained["before"], (trained["before"], after)
    assert len(result.reconstruction) == len(result.kl) == 60 and result.steps == list(range(1, 61))
    assert np.mean(result.reconstruction[-10:]) < 0.4 * np.mean(result.reconstruction[:5])
    assert result.resumed_from is None and not result.vae.training


def test_training_under_the_callers_no_grad_trains_the_same(trained, squares):
    """The VAE stage may run inside a no_grad caller; training turns gradients on itself (5 steps of the same run)."""
    plain = train_vae(build_vae(TINY_VAE, seed=0), squares, num_steps=5, batch_size=8, learning_rate=5e-3,
                      beta=DEFAULT_BETA, seed=0, progress=False)
    with torch.no_grad():
        quiet = train_vae(build_vae(TINY_VAE, seed=0), squares, num_steps=5, batch_size=8, learning_rate=5e-3,
                          beta=DEFAULT_BETA, seed=0, progress=False)
    assert same_weights(plain.vae, quiet.vae) and not same_weights(plain.vae, build_vae(TINY_VAE, seed=0))
    assert quiet.reconstruction == trained["result"].reconstruction[:5]  # the first steps of the 60-step run


def test_training_never_touches_the_global_rng(trained):
    assert torch.equal(trained["rng_before"], trained["rng_after"])


def test_scaling_factor_makes_latents_unit_std(trained, squares):
    vae, factor = trained["result"].vae, trained["result"].scaling_factor
    assert vae.config.scaling_factor == factor
    # the definition: 1 / std of posterior samples with the generator train_vae uses (seed 0), in batches of 8
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = torch.cat([vae.encode(unit(chunk)).latent_dist.sample(generator=g) for chunk in squares.split(8)])
    assert factor == pytest.approx(1 / latents.double().std().item(), rel=1e-6)
    # other eps draws and other images of the same kind: unit std within tolerance
    with torch.no_grad():
        fresh = vae.encode(unit(coloured_squares(64, 16, seed=1))).latent_dist.sample(torch.Generator().manual_seed(5))
    assert (fresh * factor).std().item() == pytest.approx(1.0, abs=0.1)
    assert abs(factor - 1.0) > 0.1  # not trivially 1: the unscaled latents are not unit-std


def test_reconstruction_grid_shows_originals_above_reconstructions(trained, squares):
    path = trained["result"].reconstruction_grid
    assert path == trained["output_dir"] / "vae_reconstructions.png"
    grid = np.asarray(Image.open(path))
    pad, side, scale = 2, 16, 4  # image_grid's white padding, 16x16 images upscaled 4x
    assert grid.shape == ((2 * (side + pad) + pad) * scale, (8 * (side + pad) + pad) * scale, 3)
    first = grid[pad * scale:(pad + side) * scale:scale, pad * scale:(pad + side) * scale:scale]
    np.testing.assert_array_equal(first, squares[0].permute(1, 2, 0).numpy())
    vae = trained["result"].vae
    with torch.no_grad():
        decoded = vae.decode(vae.encode(unit(squares[:1])).latent_dist.mode()).sample.clamp(-1, 1)
    expected = ((decoded[0] + 1) / 2 * 255).round().permute(1, 2, 0).numpy()
    top = (2 * pad + side) * scale
    below = grid[top:top + side * scale:scale, pad * scale:(pad + side) * scale:scale]
    assert np.abs(below.astype(float) - expected).max() <= 1


# ------------------------------------------------------------------------------------------------- resume
def _run(output_dir, num_steps, images, seed_for_init=0, **kwargs):
    vae = build_vae(TINY_VAE, seed=seed_for_init)
    return train_vae(vae, images, num_steps=num_steps, batch_size=4, learning_rate=5e-3, beta=1e-3, seed=11,
                     output_dir=output_dir, checkpointing_steps=2, progress=False, **kwargs)


def test_resume_gives_bit_identical_weights(tmp_path, monkeypatch):
    images = coloured_squares(12, 16)  # 3 batches an epoch: the 7 steps cross epochs
    uninterrupted = _run(tmp_path / "a", 7, images)

    calls = {"n": 0}
    real_loss = vae_module.vae_loss

    def crashing_loss(*args, **kwargs):  # a crash during step 5, after vae-checkpoint-4 was written
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(vae_module, "vae_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", 7, images)
    monkeypatch.setattr(vae_module, "vae_loss", real_loss)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["vae-checkpoint-4"]

    resumed = _run(tmp_path / "b", 7, images, seed_for_init=99)  # other initial weights: the checkpoint's win
    assert resumed.resumed_from == 4
    assert same_weights(resumed.vae, uninterrupted.vae)
    assert resumed.reconstruction == uninterrupted.reconstruction and resumed.kl == uninterrupted.kl
    assert resumed.scaling_factor == uninterrupted.scaling_factor
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["vae-checkpoint-6", "vae_reconstructions.png"]
    # without resume the same folder starts over (and, with other initial weights, ends elsewhere)
    fresh = _run(tmp_path / "b", 7, images, seed_for_init=99, resume=False)
    assert fresh.resumed_from is None and not same_weights(fresh.vae, uninterrupted.vae)


def test_checkpoint_contents_load_safely(tmp_path):
    images = coloured_squares(8, 16)
    result = _run(tmp_path, 2, images)
    checkpoint = tmp_path / "vae-checkpoint-2"
    assert result.checkpoint == checkpoint
    assert (checkpoint / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(checkpoint.rglob("*.bin"))
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert state["step"] == 2 and len(state["reconstruction"]) == 2
    assert state["run"]["batch_size"] == 4 and state["generator"].dtype == torch.uint8
    files = {entry["path"] for entry in json.loads((checkpoint / "manifest.json").read_text())["files"]}
    assert {"training_state.pt", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"} <= files
    # a run started over in the same folder replaces the same-step checkpoint, leaving nothing else behind
    again = _run(tmp_path, 2, images, seed_for_init=5, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae-checkpoint-2", "vae_reconstructions.png"]
    saved = load_file(checkpoint / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in again.vae.state_dict().items())
    assert not same_weights(again.vae, result.vae)


def test_partial_and_damaged_checkpoints_are_ignored(tmp_path, monkeypatch, caplog):
    images = coloured_squares(8, 16)
    _run(tmp_path, 2, images)
    # a save killed before its rename: only a temp folder; a newer folder without a manifest; one truncated
    partial = tmp_path / ".tmp-vae-checkpoint-4"
    shutil.copytree(tmp_path / "vae-checkpoint-2", partial)
    (partial / "manifest.json").unlink()
    (tmp_path / "vae-checkpoint-8").mkdir()
    damaged = tmp_path / "vae-checkpoint-6"
    shutil.copytree(tmp_path / "vae-checkpoint-2", damaged)
    with open(damaged / "training_state.pt", "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.vae"):
        assert find_latest_vae_checkpoint(tmp_path) == tmp_path / "vae-checkpoint-2"
    assert "vae-checkpoint-6" in caplog.text and "vae-checkpoint-8" in caplog.text

    resumed = _run(tmp_path, 4, images)
    assert resumed.resumed_from == 2
    # the damaged checkpoint (it has a manifest: ours) is pruned; a folder without one was not written by us and
    # is left alone, as the training loop's checkpoints leave it (ddpm_hub.training.checkpointing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae-checkpoint-4", "vae-checkpoint-8",
                                                          "vae_reconstructions.png"]


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    images = coloured_squares(8, 16)
    _run(tmp_path, 2, images)

    def killed(folder):
        raise KeyboardInterrupt  # the process dies after the weights, before the manifest and the rename

    monkeypatch.setattr(checkpointing, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 4, images)
    assert (tmp_path / ".tmp-vae-checkpoint-4" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (tmp_path / "vae-checkpoint-4").exists()
    assert find_latest_vae_checkpoint(tmp_path) == tmp_path / "vae-checkpoint-2"


def test_resume_refuses_other_settings(tmp_path):
    images = coloured_squares(8, 16)
    _run(tmp_path, 4, images)
    vae = build_vae(TINY_VAE)
    with pytest.raises(InputError, match=r"vae-checkpoint-4 was trained with batch_size 4, not 2: pass the same"):
        train_vae(vae, images, 6, 2, 5e-3, 1e-3, 11, output_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"was trained with data_sha256"):
        train_vae(vae, coloured_squares(8, 16, seed=1), 6, 4, 5e-3, 1e-3, 11, output_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"vae-checkpoint-4 is at step 4, past num_steps 3"):
        train_vae(vae, images, 3, 4, 5e-3, 1e-3, 11, output_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------------ saving and loading
def test_saved_vae_loads_with_stock_diffusers_and_decodes_identically(trained, tmp_path):
    vae = trained["result"].vae
    vae.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["scaling_factor"] == vae.config.scaling_factor
    stock = AutoencoderKL.from_pretrained(tmp_path / "vae")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(stock.decode(latents).sample, vae.decode(latents).sample)
    assert stock.config.scaling_factor == trained["result"].scaling_factor

    for path in (tmp_path / "vae", tmp_path):  # the folder itself, or a pipeline folder holding vae/
        loaded = load_pretrained_vae(path)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert same_weights(loaded, vae)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_load_pretrained_vae_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(InputError, match=r"^--pretrained_vae_name_or_path '\./missing': no such folder"):
        load_pretrained_vae("./missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"--pretrained_vae_name_or_path '.*empty': no config.json in"):
        load_pretrained_vae(tmp_path / "empty")
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "in_channels": 4}))
    with pytest.raises(InputError, match=r"holds a UNet2DModel config, not an AutoencoderKL$"):
        load_pretrained_vae(unet)
    weightless = tmp_path / "weightless"
    build_vae(TINY_VAE).save_config(weightless)
    with pytest.raises(InputError, match=r"weightless' could not be loaded: ") as error:
        load_pretrained_vae(weightless)
    assert "\n" not in str(error.value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never reach the network
    with pytest.raises(InputError, match=r"'nobody-here/no-such-vae' is not a local folder, and the Hub could not "
                                         r"provide it: "):
        load_pretrained_vae("nobody-here/no-such-vae")


def test_check_latent_channels():
    vae = build_vae(TINY_VAE)
    check_latent_channels(vae, {"in_channels": 4, "out_channels": 4})
    check_latent_channels(vae, {"in_channels": 4, "out_channels": 8})  # a learned variance
    with pytest.raises(InputError, match=r"^the VAE's latent_channels \(4\) do not match the U-Net's in_channels "
                                         r"\(8\): .*set its in_channels to 4"):
        check_latent_channels(vae, {"in_channels": 8, "out_channels": 8})
    with pytest.raises(InputError, match=r"the U-Net's out_channels \(3\): use 4 \(or 8"):
        check_latent_channels(vae, {"in_channels": 4, "out_channels": 3})

    class Model:
        config = {"in_channels": 3}

    with pytest.raises(InputError, match=r"in_channels \(3\)"):
        check_latent_channels(vae, Model())


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, r"^num_steps 0 must be a positive integer$"),
    ({"batch_size": 2.5}, r"^batch_size 2.5 must be a positive integer$"),
    ({"batch_size": 9}, r"^batch_size 9 is larger than the 8 training images$"),
    ({"learning_rate": -1.0}, r"^learning_rate -1.0 must be a positive number"),
    ({"beta": float("nan")}, r"^beta nan must be a number >= 0"),
    ({"checkpointing_steps": 2}, r"^checkpointing_steps needs an output_dir"),
    ({"dataset_images": coloured_squares(8, 16).float()}, r"^dataset_images must be a non-empty uint8 tensor "
                                                           r"\[N x C x H x W\] in 0..255, got torch.float32"),
    ({"dataset_images": [coloured_squares(1, 16)[0]]}, r"^dataset_images must be a uint8 tensor .* got list"),
    ({"dataset_images": coloured_squares(8, 16)[:, :1]}, r"^dataset_images have 1 channels but the VAE takes "
                                                          r"in_channels 3$"),
    ({"dataset_images": coloured_squares(8, 15)}, r"^dataset_images are 15x15: this VAE needs sides that are "
                                                   r"multiples of 2$"),
])
def test_train_vae_bad_arguments(kwargs, message):
    arguments = {"dataset_images": coloured_squares(8, 16), "num_steps": 1, "batch_size": 4, "learning_rate": 1e-3,
                 "beta": 1e-4, "seed": 0, "progress": False, **kwargs}
    with pytest.raises(InputError, match=message):
        train_vae(build_vae(TINY_VAE), **arguments)


def test_other_bad_inputs():
    vae = build_vae(TINY_VAE)
    with pytest.raises(InputError, match=r"^images must be a float tensor \[N x C x H x W\] in \[-1, 1\], got "
                                         r"torch.uint8"):
        vae_loss(vae, coloured_squares(2, 16), beta=1e-4)
    with pytest.raises(InputError, match=r"^images have 1 channels but the VAE takes in_channels 3$"):
        vae_loss(vae, torch.zeros(2, 1, 16, 16), beta=1e-4)
    with pytest.raises(InputError, match=r"^images must be a non-empty uint8 tensor"):
        latent_scaling_factor(vae, torch.zeros(2, 3, 16, 16), batch_size=2)
    with pytest.raises(InputError, match=r"^--resolution 18 is not usable by this VAE: it must be a positive "
                                         r"multiple of 4"):
        build_vae(default_vae_config(resolution=18))
    with pytest.raises(InputError, match=r"^the VAE config is not a valid AutoencoderKL config: "):
        build_vae({**TINY_VAE, "norm_num_groups": 3})
