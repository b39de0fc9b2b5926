"""python -m ddpm_hub.edit: inpaint and img2img from image files, and every bad input as one line with exit 2."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_unet
from ddpm_hub import edit


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A DDPMPipeline folder as train_ddpm.py exports it: 1-channel 8x8, 20 timesteps, v-prediction."""
    from ddpm_hub.export import save_pipeline

    folder = tmp_path_factory.mktemp("model")
    save_pipeline(folder, tiny_unet(1), {"num_train_timesteps": 20, "prediction_type": "v_prediction",
                                         "beta_schedule": "squaredcos_cap_v2"})
    return folder


def write(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    image = write(tmp_path / "digit.png", rng.integers(0, 256, (8, 8)))
    keep = np.zeros((8, 8))
    keep[:4] = 255  # keep the top half
    return image, write(tmp_path / "keep.png", keep), tmp_path


def run(argv, capsys):
    code = edit.cli([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_inpaint_keeps_the_known_pixels_of_the_png(model, files, capsys):
    image, mask, folder = files
    out = folder / "out" / "filled.png"
    code, err = run(["inpaint", "--model", model, "--image", image, "--mask", mask, "--output", out,
                     "--num_inference_steps", 10, "--jump_length", 2, "--jump_n_sample", 2], capsys)
    assert code == 0, err
    before, after = np.asarray(Image.open(image)), np.asarray(Image.open(out))
    assert after.shape == (8, 8) and np.array_equal(after[:4], before[:4]) and not np.array_equal(after, before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["filled.png"]  # no temp file left


def test_img2img_at_strength_zero_writes_the_input_back(model, files, capsys):
    image, _, folder = files
    out = folder / "same.png"
    code, err = run(["img2img", "--model", model, "--image", image, "--strength", 0, "--output", out], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(image)))
    code, err = run(["img2img", "--model", model, "--image", image, "--strength", 0.5, "--sampler", "dpm",
                     "--num_inference_steps", 10, "--output", folder / "edited.png"], capsys)
    assert code == 0, err


BAD = [
    ("inpaint", lambda d: ["--mask", write(d / "grey.png", np.full((8, 8), 128))],
     "--mask .* must be binary.* holds 128"),
    ("inpaint", lambda d: ["--mask", write(d / "small.png", np.zeros((4, 8)))], "--mask .* is 8x4 .* but image is 8x8"),
    ("inpaint", lambda d: ["--image", write(d / "rgb.png", np.zeros((8, 8, 3)))],
     r"--image .* has 3 channels \(PIL mode RGB\) but the model takes 1"),
    ("inpaint", lambda d: ["--image", write(d / "big.png", np.zeros((16, 16)))], "is 16x16 .* the model makes 8x8"),
    ("inpaint", lambda d: ["--mask", d / "missing.png"], "--mask .* does not exist"),
    ("inpaint", lambda d: ["--jump_length", "0"], "jump_length must be an integer >= 1"),
    ("img2img", lambda d: ["--strength", "1.5"], r"--strength must be in \[0, 1\], got 1.5"),
    ("img2img", lambda d: ["--strength", "-0.5"], r"--strength must be in \[0, 1\], got -0.5"),
    ("img2img", lambda d: ["--output", d / "out.xyz"], "cannot write images with extension '.xyz'"),
    ("img2img", lambda d: ["--model", d], "is not a DDPMPipeline folder"),
    ("img2img", lambda d: ["--image", d / "missing.png"], "--image .* does not exist"),
]


@pytest.mark.parametrize("command, change, message", BAD)
def test_bad_input_is_one_line_and_exit_2_and_leaves_the_output_alone(model, files, capsys, command, change, message):
    image, mask, folder = files
    out = folder / "out.png"
    out.write_bytes(b"an earlier result")
    flags = {"--model": model, "--image": image, "--output": out, **({"--mask": mask} if command == "inpaint" else {})}
    changed = change(folder)
    flags.update(dict(zip(changed[::2], changed[1::2])))
    code, err = run([command, *[item for pair in flags.items() for item in pair]], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("python -m ddpm_hub.edit: error: "), err
    assert re.search(message, err), err
    assert out.read_bytes() == b"an earlier result"


def test_flags_of_the_other_command_and_unreadable_files_are_one_line_errors(model, files, capsys, tmp_path):
    image, mask, folder = files
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code, err = run(["inpaint", "--model", model, "--image", tmp_path / "broken.png", "--mask", mask, "--output",
                     folder / "x.png"], capsys)
    assert code == 2 and "--image" in err and "is not a readable image" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        edit.parse_args(["img2img", "--model", str(model), "--image", str(image), "--mask", str(mask),
                         "--output", "x.png"])
    assert exit_.value.code == 2 and "unrecognized arguments: --mask" in capsys.readouterr().err



# ---------------------------------------------------- class-conditional models (train_ddpm.py --class_conditional)
@pytest.fixture(scope="module")
def class_model(tmp_path_factory) -> Path:
    """A ClassConditionalDDPMPipeline folder (classes cat, dog, emu) whose pipeline.py raises on import: the CLI
    must run no code from it."""
    from ddpm_hub.export import save_class_conditional_pipeline

    folder = tmp_path_factory.mktemp("class_model")
    save_class_conditional_pipeline(folder, tiny_unet(1, num_class_embeds=4),
                                    {"num_train_timesteps": 20, "prediction_type": "v_prediction",
                                     "beta_schedule": "squaredcos_cap_v2"}, {0: "cat", 1: "dog", 2: "emu"})
    (folder / "pipeline.py").write_text("raise RuntimeError('the folder code ran')\n")
    return folder


def test_class_label_and_guidance_scale_reach_the_pipeline(class_model, files, capsys):
    """--class_label dog (a name) and 1 (its id) with --guidance_scale 3 write what DDPMImg2ImgPipeline gives for
    class_labels="dog", guidance_scale=3 and the seed; another class or no class gives another image."""
    import torch

    from ddpm_hub import DDPMImg2ImgPipeline

    image, _, folder = files
    common = ["img2img", "--model", class_model, "--image", image, "--strength", 0.8, "--num_inference_steps", 10,
              "--seed", 4]
    written = {}
    for name, extra in {"dog": ["--class_label", "dog", "--guidance_scale", 3], "1": ["--class_label", 1,
                        "--guidance_scale", 3], "emu": ["--class_label", "emu", "--guidance_scale", 3],
                        "none": []}.items():
        code, err = run([*common, *extra, "--output", folder / f"{name}.png"], capsys)
        assert code == 0, err
        written[name] = np.asarray(Image.open(folder / f"{name}.png"))
    pipe = DDPMImg2ImgPipeline.from_pretrained(class_model)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(Image.open(image), strength=0.8, num_inference_steps=10, class_labels="dog", guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(written["dog"], np.asarray(expected)) and np.array_equal(written["1"], written["dog"])
    assert not np.array_equal(written["emu"], written["dog"]) and not np.array_equal(written["none"], written["dog"])


def test_inpaint_with_a_class_label_keeps_the_known_pixels(class_model, files, capsys):
    image, mask, folder = files
    out = folder / "filled.png"
    code, err = run(["inpaint", "--model", class_model, "--image", image, "--mask", mask, "--output", out,
                     "--num_inference_steps", 6, "--jump_length", 2, "--jump_n_sample", 2, "--class_label", "cat"],
                    capsys)
    assert code == 0, err
    before, after = np.asarray(Image.open(image)), np.asarray(Image.open(out))
    assert np.array_equal(after[:4], before[:4]) and not np.array_equal(after, before)


@pytest.mark.parametrize("command, conditional, flags, message", [
    ("img2img", False, ["--class_label", "3"], "--class_label '3' given, but the model in --model has no classes"),
    ("inpaint", False, ["--class_label", "dog"], "--class_label 'dog' given, but the model in --model has no classes"),
    ("img2img", True, ["--class_label", "zebra"], "--class_label 'zebra' is neither a class name nor an id of this "
                                                  r"model; choose a name \('cat', 'dog', 'emu'\) or an id 0..2"),
    ("inpaint", True, ["--class_label", "3"], "--class_label '3' is neither a class name nor an id"),
    ("img2img", True, ["--guidance_scale", "3"], "--guidance_scale needs --class_label"),
    ("img2img", True, ["--class_label", "dog", "--guidance_scale", "-1"], "guidance_scale must be a number >= 0"),
])
def test_bad_class_labels_are_one_line_and_exit_2(model, class_model, files, capsys, command, conditional, flags,
                                                  message):
    image, mask, folder = files
    out = folder / "out.png"
    masks = ["--mask", mask] if command == "inpaint" else []
    code, err = run([command, "--model", class_model if conditional else model, "--image", image, *masks,
                     "--output", out, *flags], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("python -m ddpm_hub.edit: error: "), err
    assert re.search(message, err), err
    assert not out.exists()
