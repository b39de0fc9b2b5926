"""ddpm_hub.evaluation and `python -m ddpm_hub.evaluate`: the digits classifier and its cache, the Frechet
distance against closed forms, the digits metrics' ordering on real, degraded and fake digits, the bits/dim of
a trained vs an untrained model, and the CLI on tiny model folders."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_ddpm  # noqa: E402

from ddpm_hub import evaluate, evaluation  # noqa: E402
from ddpm_hub.evaluation import digits as digits_module  # noqa: E402
from ddpm_hub.data import load_digits_split  # noqa: E402
from ddpm_hub.errors import InputError  # noqa: E402
from ddpm_hub.evaluation import (classifier_cache_path, digits_metrics, frechet_distance,  # noqa: E402
                                 heldout_bits_per_dim, inception_fid, load_digits_classifier)
from ddpm_hub.evaluation.pixel_pca import pixel_metrics, pixel_pca_basis  # noqa: E402
from ddpm_hub.scheduling_ddpm import DDPMScheduler  # noqa: E402

from conftest import TINY_UNET  # noqa: E402  (the shared tiny UNet config)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads spin against other work
    (a 45k-parameter UNet training step: 50 ms on one thread, 0.3-1.4 s on two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def classifier(cache_dir):
    """Trained once for the module (a few seconds) and cached in cache_dir; never in the user's ~/.cache."""
    return load_digits_classifier(cache_dir)


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    _, split = load_digits_split(resolution=16)
    return split.images.to(torch.float32) / 127.5 - 1.0, split.labels


# --------------------------------------------------------------------------------------------- the classifier
def test_classifier_reaches_97_percent_on_held_out_digits(classifier, held_out):
    images, labels = held_out
    with torch.no_grad():
        accuracy = (classifier(images).argmax(dim=1) == labels).double().mean().item()
    assert accuracy >= 0.97, accuracy


def test_cached_classifier_reloads_to_the_same_predictions(classifier, cache_dir, held_out, monkeypatch):
    path = classifier_cache_path(cache_dir)
    assert path.is_file() and path.read_bytes()[:8] != b"PK\x03\x04"  # safetensors, not a torch zip pickle

    def no_training(*args, **kwargs):
        raise AssertionError("a valid cache must be loaded, not retrained")

    monkeypatch.setattr(digits_module, "train_digits_classifier", no_training)
    reloaded = load_digits_classifier(cache_dir)
    with torch.no_grad():
        assert torch.equal(reloaded(held_out[0]), classifier(held_out[0]))


def test_classifier_training_is_deterministic_for_a_seed(classifier, held_out):
    # The cached classifier was trained with seed 0 in this process; training again gives the same weights.
    again = evaluation.train_digits_classifier(seed=0, epochs=1)
    twice = evaluation.train_digits_classifier(seed=0, epochs=1)
    other = evaluation.train_digits_classifier(seed=1, epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), twice.state_dict().values()))
    assert not torch.equal(again.fc2.weight, other.fc2.weight)


def test_an_empty_cache_trains_the_classifier_under_any_grad_mode(classifier, held_out, tmp_path, monkeypatch):
    """A newcomer's first evaluation: no cached classifier, and `digits_metrics` (a no_grad function) trains it.
    Under no_grad and inference_mode it gets the weights a plain call gets (the module fixture's)."""
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "no_grad"))
    scores = digits_metrics(held_out[0][:20])  # classifier=None: load_digits_classifier() from the empty cache
    assert classifier_cache_path().is_file() and scores["classes_covered"] >= 8
    with torch.inference_mode():
        in_inference = load_digits_classifier(tmp_path / "inference_mode")
    for trained in (load_digits_classifier(), in_inference):
        assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), classifier.state_dict().values()))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other tensors"])
def test_damaged_cache_is_retrained(classifier, cache_dir, tmp_path, monkeypatch, caplog, damage):
    from safetensors.torch import save_file

    path = classifier_cache_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(classifier_cache_path(cache_dir).read_bytes()[:5000])
    else:
        save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": digits_module.CLASSIFIER_FORMAT})
    calls = []

    def fake_training(seed=0):  # the real training is covered by the module fixture; this checks the path taken
        calls.append(seed)
        return classifier

    monkeypatch.setattr(digits_module, "train_digits_classifier", fake_training)
    loaded = load_digits_classifier(tmp_path)
    assert loaded is classifier and calls == [0]
    assert "unusable" in caplog.text and "retraining" in caplog.text
    monkeypatch.setattr(digits_module, "train_digits_classifier", lambda seed=0: pytest.fail("retrained twice"))
    assert torch.equal(load_digits_classifier(tmp_path).fc2.weight, classifier.fc2.weight)  # the file is whole now
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left beside it


def test_cache_location_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_HUB_CACHE", str(tmp_path / "env"))
    assert classifier_cache_path() == tmp_path / "env" / "digits_classifier-v1.safetensors"
    assert classifier_cache_path(tmp_path / "arg") == tmp_path / "arg" / "digits_classifier-v1.safetensors"
    monkeypatch.delenv("DDPM_HUB_CACHE")
    assert classifier_cache_path() == Path.home() / ".cache" / "ddpm_hub" / "digits_classifier-v1.safetensors"


# ------------------------------------------------------------------------------------------ Frechet distance
def _with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and (unbiased) sample covariance are exactly mean and cov."""
    x = rng.standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(x, rowvar=False)))).T  # sample covariance I
    return x @ np.linalg.cholesky(cov).T + mean


@pytest.mark.parametrize("mean_a, cov_a, mean_b, cov_b, expected", [
    # 1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2
    ([0.0], [[1.0]], [0.0], [[9.0]], 4.0),
    ([2.0], [[4.0]], [-1.0], [[1.0]], 9.0 + 1.0),
    # 2-D, identity covariances: |d|^2
    ([0.0, 0.0], np.eye(2), [3.0, 4.0], np.eye(2), 25.0),
    # 2-D, commuting covariances diag(1, 4), diag(4, 1): tr = 10, tr sqrt(S_a S_b) = 2 + 2; plus |d|^2 = 5
    ([0.0, 0.0], np.diag([1.0, 4.0]), [1.0, 2.0], np.diag([4.0, 1.0]), 5.0 + 10.0 - 8.0),
    # 2-D, non-commuting: tr(S_a + S_b) - 2 tr (S_a^1/2 S_b S_a^1/2)^1/2 with S_a = I is tr S_b - 2 tr S_b^1/2 + 2
    ([0.0, 0.0], np.eye(2), [0.0, 0.0], [[2.0, 1.0], [1.0, 2.0]], 4.0 - 2.0 * (np.sqrt(3.0) + 1.0) + 2.0),
])
def test_frechet_distance_matches_the_closed_form(mean_a, cov_a, mean_b, cov_b, expected):
    rng = np.random.default_rng(0)
    a = _with_moments(rng, 50, np.array(mean_a), np.array(cov_a, dtype=np.float64))
    b = _with_moments(rng, 80, np.array(mean_b), np.array(cov_b, dtype=np.float64))
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(torch.from_numpy(b), torch.from_numpy(a)) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_of_sampled_gaussians_is_within_sampling_error():
    """a ~ N(0, I), b ~ N(d, I) in 2-D with |d| = 5: FD = 25. The estimate's error is dominated by the mean
    difference, 2 d . e with e ~ N(0, 2/N I): standard deviation 2 |d| sqrt(2/N) = 0.1 at N = 20000."""
    rng = np.random.default_rng(1)
    n = 20_000
    a = rng.standard_normal((n, 2))
    b = rng.standard_normal((n, 2)) + np.array([3.0, 4.0])
    assert frechet_distance(a, b) == pytest.approx(25.0, abs=5 * 2 * 5 * np.sqrt(2 / n))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 16)), rng.standard_normal((7, 16))
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-5)  # rank-4 covariances: sqrtm is near singular


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((1, 3)), np.zeros((5, 3)), r"too few samples for a covariance: N=1 \(need at least 2; use >= D=3"),
    (np.ones((4, 3)), np.zeros((1, 3)), "N=1"),
    (np.zeros((4, 3)), np.zeros((4, 2)), "feature dimensions differ: features_a has D=3, features_b has D=2"),
    (np.zeros(4), np.zeros(4), r"features_a must be \[N x D\]"),
    (np.full((4, 2), np.nan), np.zeros((4, 2)), "NaN or infinite"),
])
def test_frechet_distance_bad_input(a, b, match):
    with pytest.raises(InputError, match=match):
        frechet_distance(a, b)


# --------------------------------------------------------------------------------------------- digits metrics
def test_digits_metrics_order_real_blurred_repeated_noise(classifier, held_out):
    """The metrics rank what a generator could produce: real digits sit at the real-vs-real floor; blurred
    digits are still read but are further away; one digit repeated covers one class and is far away; noise is
    far away too and the only one read with low confidence. (The distance alone puts the repeated digit beyond
    noise, about 620 vs 420: it punishes mode collapse that hard; confidence orders those two.)"""
    images, _ = held_out
    n = 100
    real = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:n]]
    blurred = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="bilinear")  # 8x8 detail, smoothed
    repeated = real[:1].expand(n, -1, -1, -1)
    noise = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    scores = {name: digits_metrics(x, classifier=classifier, seed=0)
              for name, x in [("real", real), ("blurred", blurred), ("repeated", repeated), ("noise", noise)]}
    fd = {name: s["fd"] for name, s in scores.items()}

    assert fd["real"] < 1.5 * scores["real"]["fd_floor"], scores["real"]
    assert fd["real"] < fd["blurred"] < fd["repeated"], fd
    assert fd["blurred"] < fd["noise"] and fd["noise"] > 15 * scores["noise"]["fd_floor"], fd
    assert len({s["fd_floor"] for s in scores.values()}) == 1  # same N and seed: the same floor and reference
    assert scores["real"]["floor_reference"].startswith("held-out vs held-out")
    assert scores["real"]["classes_covered"] == 10 and scores["real"]["smallest_class_share"] > 0.03
    assert scores["repeated"]["classes_covered"] == 1 and scores["repeated"]["smallest_class_share"] == 0.0
    assert max(scores["repeated"]["class_histogram"]) == n
    confidence = {name: s["confidence"] for name, s in scores.items()}
    assert min(confidence["real"], confidence["repeated"]) > 0.9 and confidence["noise"] < 0.8, confidence
    assert confidence["noise"] < confidence["blurred"] < confidence["real"], confidence
    assert scores["noise"]["classes_covered"] < 10  # uniform noise is read as a few classes, mostly one
    assert sum(scores["noise"]["class_histogram"]) == n
    json.dumps(scores, allow_nan=False)  # plain JSON values


def test_digits_metrics_reads_the_pipeline_numpy_layout(classifier, held_out):
    """DDPMPipeline(output_type="np") gives [N x 16 x 16 x 1] in [0, 1]: the same images, the same metrics."""
    real = held_out[0][:20]
    nhwc = ((real + 1) / 2).permute(0, 2, 3, 1).numpy()
    uint8 = ((real + 1) * 127.5).round().to(torch.uint8)
    expected = digits_metrics(real, classifier=classifier)
    for images in (nhwc, uint8):
        scores = digits_metrics(images, classifier=classifier)
        assert scores.keys() == expected.keys()
        for key, value in expected.items():  # field by field: pytest >= 9.2's approx refuses nested containers
            if isinstance(value, float):
                assert scores[key] == pytest.approx(value, abs=1e-5), key
            else:
                assert scores[key] == value, key


def test_digits_metrics_floor_uses_the_train_split_for_large_n(classifier, held_out):
    images = held_out[0]
    scores = digits_metrics(images[:200], classifier=classifier)
    assert scores["floor_reference"].startswith("train vs held-out") and scores["num_reference"] == 200
    assert scores["fd_floor"] > 0
    small = digits_metrics(images[:50], classifier=classifier, reference=images[:60])
    assert small["fd_floor"] is None and small["floor_reference"].startswith("none")


# --------------------------------------------------------------------------------------------- pixel-PCA metrics
def test_pixel_pca_basis_is_the_train_splits_leading_principal_subspace():
    """The 32 components span the same subspace as numpy's float64 eigendecomposition of the train pixels'
    covariance (compared as projection matrices, which do not depend on the components' signs)."""
    train, _ = load_digits_split(resolution=16)
    pixels = train.images.reshape(len(train.images), -1).numpy().astype(np.float64) / 127.5 - 1.0
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    top = vectors[:, np.argsort(values)[::-1][:32]]
    mean, components = pixel_pca_basis()
    assert components.shape == (32, 256) and components.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), pixels.mean(axis=0), atol=1e-6)  # pixels scaled in float32 first
    np.testing.assert_allclose(components.numpy().T @ components.numpy(), top @ top.T, atol=1e-6)


def test_pixel_metrics_order_real_blurred_noise(held_out):
    """Real held-out digits sit at the floor; blurred digits are further away and noise much further, in the same
    order as the digits classifier's space puts them, with no network involved."""
    images, _ = held_out
    n = 100
    real = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:n]]
    blurred = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="bilinear")
    noise = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    scores = {name: pixel_metrics(x) for name, x in [("real", real), ("blurred", blurred), ("noise", noise)]}
    fd = {name: s["fd"] for name, s in scores.items()}
    assert fd["real"] < 1.5 * scores["real"]["fd_floor"], scores["real"]
    assert fd["real"] < fd["blurred"] < fd["noise"] and fd["noise"] > 10 * scores["noise"]["fd_floor"], fd
    assert scores["real"]["num_samples"] == n and scores["real"]["floor_reference"].startswith("held-out vs held-out")


@pytest.mark.parametrize("images, match", [
    (torch.rand(4, 1, 16, 16) * 255, r"must be in \[-1, 1\] \(pass uint8 for 0..255\)"),
    (torch.rand(4, 16, 16, 1) * 2 - 1, r"\[N x H x W x C\] must be in \[0, 1\]"),
    (-torch.ones(4, 3, 16, 16), "must be 1-channel 16x16 digits"),
    (-torch.ones(4, 1, 8, 8), "must be 1-channel 16x16 digits"),
    (-torch.ones(16, 16), "must be a batch"),
    (-torch.ones(1, 1, 16, 16), "at least 2 images"),
])
def test_digits_metrics_bad_input(classifier, images, match):
    with pytest.raises(InputError, match=match):
        digits_metrics(images, classifier=classifier)


def test_channels_first_floats_in_0_1_draw_a_warning(classifier, held_out):
    """[N x C x H x W] floats are read as [-1, 1]; all-non-negative ones (DDPMPipeline output_type="pt" gives
    [0, 1]) are flagged rather than silently rescaled."""
    with pytest.warns(UserWarning, match="every value is >= 0"):
        digits_metrics((held_out[0][:8] + 1) / 2, classifier=classifier)


# ------------------------------------------------------------------------------------------------------- FID
def test_inception_fid_needs_a_local_weights_file(tmp_path):
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(InputError, match=r"FID needs Inception weights: pass --inception_weights PATH \(a local "
                                         r"pt_inception-2015-12-05 file\); nothing is downloaded"):
        inception_fid(x, x)
    with pytest.raises(InputError, match="is not a file"):
        inception_fid(x, x, tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="FID needs the torch-fidelity package"):
            inception_fid(x, x, bad)
    else:
        with pytest.raises(InputError, match="not a readable weights file"):
            inception_fid(x, x, bad)


# ---------------------------------------------------------------------------------------------- bits per dim
def test_trained_model_has_lower_bits_per_dim_than_untrained(tmp_path):
    """150 steps of L_simple on the digits train split already lower the held-out bound well below the untrained
    network's (same architecture, same initial weights, same seed for timesteps and noise)."""
    from diffusers import DDPMPipeline, UNet2DModel

    from ddpm_hub.training.objectives import LossConfig, diffusion_loss

    train, _ = load_digits_split(resolution=16)
    data = train.images.to(torch.float32) / 127.5 - 1.0
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, **TINY_UNET)
        DDPMPipeline(unet=untrained, scheduler=scheduler).save_pretrained(tmp_path / "untrained")
        model = UNet2DModel.from_pretrained(tmp_path / "untrained", subfolder="unet").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(150):
            loss = diffusion_loss(model, data[torch.randint(0, len(data), (32,))], scheduler, LossConfig())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    DDPMPipeline(unet=model.eval(), scheduler=scheduler).save_pretrained(tmp_path / "trained")

    kwargs = dict(num_images=8, num_timesteps=32, seed=0)
    trained_bpd = heldout_bits_per_dim(str(tmp_path / "trained"), **kwargs)
    untrained_bpd = heldout_bits_per_dim(tmp_path / "untrained", **kwargs)
    assert trained_bpd["num_timesteps"] == 32 and trained_bpd["num_images"] == 8
    margin = 3 * np.hypot(trained_bpd["standard_error"], untrained_bpd["standard_error"])
    assert trained_bpd["mean"] + margin < untrained_bpd["mean"], (trained_bpd, untrained_bpd)
    assert trained_bpd["prior"] == pytest.approx(untrained_bpd["prior"])  # L_prior has no parameters
    json.dumps(trained_bpd, allow_nan=False)


# ------------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    """A 1-channel 16x16 DDPMPipeline folder from train_ddpm.py with a tiny UNet and 2 steps."""
    root = tmp_path_factory.mktemp("model")
    config = root / "tiny_unet.json"
    config.write_text(json.dumps(TINY_UNET))
    summary = train_ddpm.main(train_ddpm.parse_args([
        "--output_dir", str(root / "run"), "--model_config_name_or_path", str(config), "--train_batch_size", "16",
        "--max_train_steps", "2", "--logger", "none", "--eval_batch_size", "2", "--ddpm_num_inference_steps", "2",
        "--eval_epochs", "0"]))
    return summary.output_dir


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_cli_writes_the_metrics_json(digits_model, classifier, cache_dir, tmp_path, monkeypatch, capsys, sampler):
    monkeypatch.setenv("DDPM_HUB_CACHE", str(cache_dir))  # the module's cached classifier
    out = tmp_path / "metrics.json"
    code = evaluate.cli(["--model", str(digits_model), "--num_samples", "16", "--num_inference_steps", "5",
                         "--bpd_timesteps", "4", "--bpd_images", "8", "--batch_size", "8", "--scheduler", sampler,
                         "--output", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"model", "sampling", "digits", "pixel_pca", "bits_per_dim"}
    assert metrics["sampling"] | {"seconds": 0} == {"num_samples": 16, "num_inference_steps": 5,
                                                    "scheduler": sampler, "seed": 0, "seconds": 0}
    digits = metrics["digits"]
    assert {"fd", "fd_floor", "floor_reference", "confidence", "classes_covered", "smallest_class_share",
            "class_histogram", "num_samples", "num_reference"} <= set(digits)
    assert digits["num_samples"] == 16 and sum(digits["class_histogram"]) == 16 and digits["fd"] > 0
    assert metrics["pixel_pca"]["num_samples"] == 16 and metrics["pixel_pca"]["fd"] > metrics["pixel_pca"]["fd_floor"]
    bpd = metrics["bits_per_dim"]
    assert bpd["num_timesteps"] == 4 and bpd["num_images"] == 8 and np.isfinite(bpd["mean"]) and bpd["mean"] > 0
    printed = capsys.readouterr().out
    assert "digits FD (floor)" in printed and "pixel-PCA FD (floor)" in printed and "bits/dim" in printed
    assert f"wrote {out}" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # written atomically, no temp file left


def _run_cli_error(capsys, argv) -> str:
    assert evaluate.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_missing_and_non_pipeline_folders_are_one_line_errors(tmp_path, capsys):
    err = _run_cli_error(capsys, ["--model", str(tmp_path / "nope")])
    assert "does not exist: give a DDPMPipeline folder" in err
    (tmp_path / "empty").mkdir()
    err = _run_cli_error(capsys, ["--model", str(tmp_path / "empty")])
    assert "is not a DDPMPipeline folder: it lacks model_index.json, unet/config.json" in err


def test_cli_refuses_digits_metrics_for_a_3_channel_model(tmp_path, capsys):
    from diffusers import DDPMPipeline, UNet2DModel

    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, **TINY_UNET)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "rgb")
    err = _run_cli_error(capsys, ["--model", str(tmp_path / "rgb"), "--num_samples", "4"])
    assert "the digits metrics need a 1-channel 16x16 model" in err and "is 3-channel 16x16" in err
    assert "--inception_weights" in err


@pytest.mark.parametrize("extra, match", [
    (["--bpd_timesteps", "2"], "--bpd_timesteps must be 'full' or an integer K >= 3"),
    (["--num_samples", "1"], "--num_samples must be an integer >= 2"),
    (["--num_inference_steps", "1001"], "--num_inference_steps 1001 exceeds the model's 1000 diffusion steps"),
    (["--bpd_images", "361"], "--bpd_images 361 exceeds the 360 reference images"),
    (["--reference_data_dir", "x"], "--reference_data_dir is used for FID"),
    (["--output", "."], "--output '.' is a folder"),
])
def test_cli_bad_flags_are_one_line_errors(digits_model, capsys, extra, match):
    assert match in _run_cli_error(capsys, ["--model", str(digits_model), *extra])
