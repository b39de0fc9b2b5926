"""Class-conditional DDPM with classifier-free guidance: the pipeline (guidance against a hand-written loop, labels,
loading without ddpm_hub), the labelled data, and train_ddpm.py --class_conditional end to end (exact resume, two
processes, the card, bad input)."""

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
from conftest import TINY_UNET, cold_environment, rank_weight_digests, tensorboard_scalars  # noqa: E402

from ddpm_hub import ClassConditionalDDPMPipeline  # noqa: E402
from ddpm_hub.errors import InputError  # noqa: E402

NAMES = {0: "cat", 1: "dog", 2: "emu"}


def class_unet(num_classes: int = 3, channels: int = 1, learned_variance: bool = False, seed: int = 0):
    """A UNet2DModel of a few thousand parameters with num_classes + 1 class embeddings (the last: "no class")."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels * (2 if learned_variance else 1),
                       block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=num_classes + 1).eval()


def pipeline(scheduler=None, id2label=None, **unet_kwargs) -> ClassConditionalDDPMPipeline:
    from diffusers import DDPMScheduler

    pipe = ClassConditionalDDPMPipeline(class_unet(**unet_kwargs), scheduler or DDPMScheduler(num_train_timesteps=10),
                                        id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("config") / "tiny_unet.json"
    path.write_text(json.dumps(TINY_UNET))
    return str(path)


def _args(output_dir, tiny_config, *extra: str) -> list[str]:
    return ["--class_conditional", "--output_dir", str(output_dir), "--model_config_name_or_path", tiny_config,
            "--train_batch_size", "32", "--eval_batch_size", "2", "--ddpm_num_inference_steps", "3", "--logger",
            "none", "--max_train_steps", "2", "--eval_epochs", "0", *extra]


def _class_folder(root: Path, classes=("emu", "cat", "dog"), per_class: int = 4, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "diffusion_pytorch_model.safetensors")


# ----------------------------------------------------------------------------------------------- the pipeline
def _hand_loop(unet, scheduler, labels: list[int], steps: int, seed: int, guidance_scale: float = 1.0,
               channels_to_scheduler: int | None = None) -> torch.Tensor:
    """Classifier-free guidance written out (Ho & Salimans 2022, eq. 6): x_T from the generator, then at each t the
    conditional and (for s != 1) unconditional outputs from two separate forward passes, eps_u + s (eps_c - eps_u)
    on the first C channels, and the scheduler's step. Returns [B x C x H x W] in [0, 1]."""
    from diffusers.utils.torch_utils import randn_tensor

    generator = torch.Generator().manual_seed(seed)
    C, size = unet.config.in_channels, unet.config.sample_size
    x = randn_tensor((len(labels), C, size, size), generator=generator)
    y = torch.tensor(labels)
    null = torch.full_like(y, unet.config.num_class_embeds - 1)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        with torch.no_grad():
            conditional = unet(x, t, class_labels=y).sample
            output = conditional
            if guidance_scale != 1.0:
                unconditional = unet(x, t, class_labels=null).sample
                output = conditional.clone()
                output[:, :C] = unconditional[:, :C] + guidance_scale * (conditional[:, :C] - unconditional[:, :C])
        x = scheduler.step(output[:, :channels_to_scheduler], t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


def test_guidance_1_is_the_conditional_model_alone_in_one_pass_per_step():
    from diffusers import DDPMScheduler

    pipe = pipeline()
    batches = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    images = pipe([0, 2, 1], guidance_scale=1.0, num_inference_steps=4, output_type="pt",
                  generator=torch.Generator().manual_seed(3)).images
    assert batches == [3] * 4  # no unconditional pass
    expected = _hand_loop(pipe.unet, DDPMScheduler(num_train_timesteps=10), [0, 2, 1], steps=4, seed=3)
    assert torch.equal(images, expected)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("learned_variance", [False, True])
def test_guidance_matches_the_written_out_formula_for_any_sampler(sampler, learned_variance):
    """Guided sampling equals eps_u + s (eps_c - eps_u) computed from two separate passes, for DDPM (which reads a
    learned variance from the conditional pass's extra channels), DDIM and DPM-Solver++ (which get the mean only)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    variance = "learned_range" if learned_variance else "fixed_small"
    config = DDPMScheduler(num_train_timesteps=10, variance_type=variance).config
    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    pipe = pipeline(scheduler=classes[sampler].from_config(config), learned_variance=learned_variance)
    images = pipe([1, 0], guidance_scale=3.0, num_inference_steps=4, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    reads_variance = sampler == "ddpm" and learned_variance
    expected = _hand_loop(pipe.unet, classes[sampler].from_config(config), [1, 0], steps=4, seed=0,
                          guidance_scale=3.0, channels_to_scheduler=None if reads_variance else 1)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    unguided = pipe([1, 0], guidance_scale=1.0, num_inference_steps=4, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images
    assert not torch.allclose(images, unguided, atol=1e-3)  # the guidance term does something


def test_labels_by_name_and_id_and_bad_labels():
    pipe = pipeline(id2label={"0": "cat", "1": "dog", "2": "emu"})  # string keys, as JSON gives them
    assert pipe.id2label == NAMES and pipe.labels == {"cat": 0, "dog": 1, "emu": 2}
    assert pipe.get_label_ids(["emu", "cat"]) == [2, 0] and pipe.get_label_ids("dog") == [1]
    assert pipe.class_ids(["dog", 2, torch.tensor(0).item()]).tolist() == [1, 2, 0]
    by_name = pipe(["dog", "emu"], num_inference_steps=2, output_type="np", generator=torch.manual_seed(1)).images
    by_id = pipe(torch.tensor([1, 2]), num_inference_steps=2, output_type="np", generator=torch.manual_seed(1)).images
    assert np.array_equal(by_name, by_id)
    with pytest.raises(ValueError, match="class label 'wolf' is not a label of this model; choose one of 'cat'"):
        pipe(["cat", "wolf"], num_inference_steps=2)
    with pytest.raises(ValueError, match=r"class id 3 is out of range: this model has classes 0..2"):
        pipe([3], num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        pipe([0], guidance_scale=-1.0, num_inference_steps=2)
    with pytest.raises(ValueError, match="id2label must name each class id 0..2 once"):
        pipeline(id2label={0: "cat", 1: "dog"})
    with pytest.raises(ValueError, match="unet must have class embeddings"):
        from diffusers import DDPMScheduler

        from conftest import tiny_unet

        ClassConditionalDDPMPipeline(tiny_unet(in_channels=1), DDPMScheduler())


def test_the_folder_loads_with_stock_classes_and_carries_the_module_itself(tmp_path):
    """The export: pipeline.py is the package module byte for byte, model_index.json names it the Hub's way and
    keeps id2label, unet/ and scheduler/ load with stock diffusers classes; both loading routes give the same
    pipeline, and ddpm_hub's own class runs nothing from the folder."""
    from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

    import ddpm_hub.pipelines.class_conditional as module
    from ddpm_hub.export import save_class_conditional_pipeline

    unet = class_unet()
    save_class_conditional_pipeline(tmp_path, unet, dict(DDPMScheduler(num_train_timesteps=10).config), NAMES)
    assert (tmp_path / "pipeline.py").read_bytes() == Path(module.__file__).read_bytes()
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "ClassConditionalDDPMPipeline"]
    assert index["id2label"] == {"0": "cat", "1": "dog", "2": "emu"}
    assert UNet2DModel.from_pretrained(tmp_path, subfolder="unet").config.num_class_embeds == 4
    assert DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler").config.num_train_timesteps == 10
    assert not list(tmp_path.glob(".tmp*"))

    (tmp_path / "pipeline.py").write_text("raise RuntimeError('the folder code ran')\n")  # ours must not run it
    ours = ClassConditionalDDPMPipeline.from_pretrained(tmp_path)
    assert type(ours) is ClassConditionalDDPMPipeline and ours.id2label == NAMES
    (tmp_path / "pipeline.py").write_bytes(Path(module.__file__).read_bytes())
    remote = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(remote).__module__.startswith("diffusers_modules") and remote.id2label == NAMES
    for pipe in (ours, remote):
        pipe.set_progress_bar_config(disable=True)
    a = ours(["dog", "cat"], num_inference_steps=3, output_type="np", generator=torch.manual_seed(0)).images
    b = remote(["dog", "cat"], num_inference_steps=3, output_type="np", generator=torch.manual_seed(0)).images
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tmp_path)  # diffusers' rule: the folder's code runs only when allowed


def test_a_hub_repo_is_downloaded_without_its_code(tmp_path, monkeypatch):
    """ClassConditionalDDPMPipeline.from_pretrained on a repo id downloads unet/, scheduler/ and model_index.json
    only (huggingface_hub.snapshot_download is the network boundary, replaced here)."""
    import huggingface_hub
    from diffusers import DDPMScheduler

    from ddpm_hub.export import save_class_conditional_pipeline

    save_class_conditional_pipeline(tmp_path, class_unet(), dict(DDPMScheduler(num_train_timesteps=10).config), NAMES)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kwargs: (calls.append((repo_id, kwargs)), str(tmp_path))[1])
    pipe = ClassConditionalDDPMPipeline.from_pretrained("alice/animals", revision="v1")
    [(repo_id, kwargs)] = calls
    assert repo_id == "alice/animals" and kwargs["revision"] == "v1"
    assert sorted(kwargs["allow_patterns"]) == ["model_index.json", "scheduler/*", "unet/*"]
    assert pipe.id2label == NAMES
    with pytest.raises(TypeError, match="unexpected arguments: device_map"):
        ClassConditionalDDPMPipeline.from_pretrained(tmp_path, device_map="auto")


BLOCKED_LOAD = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ddpm_hub" or name.startswith("ddpm_hub."):
            raise ImportError("ddpm_hub is not installed here")

sys.meta_path.insert(0, Blocker())
try:
    import ddpm_hub
    raise SystemExit("ddpm_hub was importable")
except ImportError:
    pass

import numpy as np
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
images = pipe(class_labels=pipe.get_label_ids(["dog", "cat"]), guidance_scale=2.0, num_inference_steps=3,
              output_type="np", generator=torch.manual_seed(0)).images
np.save(sys.argv[2], images)
assert not any(name.startswith("ddpm_hub") for name in sys.modules)
print(type(pipe).__module__, type(pipe).__name__, pipe.id2label)
"""


def test_loads_and_samples_where_ddpm_hub_is_not_installed(tmp_path):
    from diffusers import DDPMScheduler

    from ddpm_hub.export import save_class_conditional_pipeline

    folder = tmp_path / "model"
    unet = class_unet()
    save_class_conditional_pipeline(folder, unet, dict(DDPMScheduler(num_train_timesteps=10).config), NAMES)
    env = cold_environment(tmp_path / "home")
    result = subprocess.run([sys.executable, "-I", "-c", BLOCKED_LOAD, str(folder), str(tmp_path / "images.npy")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "diffusers_modules.local.pipeline ClassConditionalDDPMPipeline {0: 'cat', 1: 'dog', 2: 'emu'}" in \
        result.stdout
    ours = ClassConditionalDDPMPipeline.from_pretrained(folder)
    ours.set_progress_bar_config(disable=True)
    expected = ours(["dog", "cat"], guidance_scale=2.0, num_inference_steps=3, output_type="np",
                    generator=torch.manual_seed(0)).images
    assert np.array_equal(np.load(tmp_path / "images.npy"), expected)


# --------------------------------------------------------------------------------------------------- the data
def test_labels_of_the_digits_and_of_class_folders(tmp_path):
    from ddpm_hub.data import load_digits_split, load_labelled_dataset

    digits = load_labelled_dataset(resolution=16)
    assert torch.equal(digits.labels, load_digits_split(16)[0].labels) and digits.label_names == list("0123456789")
    batch = digits.__getitems__([0, 5])
    assert batch["pixel_values"].shape == (2, 1, 16, 16) and batch["class_labels"].tolist() == digits.labels[
        [0, 5]].tolist()

    folder = _class_folder(tmp_path / "animals", classes=("emu", "cat", "dog"), per_class=2)
    (folder / "cat" / "broken.png").write_bytes(b"garbage")
    data = load_labelled_dataset(train_data_dir=str(folder), resolution=16)
    assert data.id2label == NAMES  # sorted folder names, as datasets' imagefolder numbers them
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2] and len(data.skipped) == 1
    assert "3 classes from the class subfolders' names" in data.summary()


def test_labels_from_a_datasets_label_column(tmp_path):
    """ClassLabel keeps its ids and names, integers are the ids, strings are numbered by sorted name; a missing
    label is a skipped row."""
    import datasets

    from ddpm_hub.data import load_labelled_dataset

    images = [Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee"]),
                                  "number": datasets.Value("int64"), "word": datasets.Value("string"),
                                  "score": datasets.Value("float32")})
    datasets.Dataset.from_dict({"image": images, "label": [1, 0, 1, -1], "number": [7, 2, 2, None],
                                "word": ["yak", "ox", None, "yak"], "score": [0.5] * 4},
                               features=features).save_to_disk(str(tmp_path / "saved"))
    name = str(tmp_path / "saved")
    by_class = load_labelled_dataset(name, resolution=16)
    assert by_class.label_names == ["ant", "bee"] and by_class.labels.tolist() == [1, 0, 1]
    assert by_class.skipped == [("row 3", "no label")]
    by_number = load_labelled_dataset(name, label_column="number", resolution=16)
    assert by_number.label_names == [str(i) for i in range(8)] and by_number.labels.tolist() == [7, 2, 2]
    by_word = load_labelled_dataset(name, label_column="word", resolution=16)
    assert by_word.label_names == ["ox", "yak"] and by_word.labels.tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="--label_column 'score' of --dataset_name .* holds float32 values; class "
                                         "labels must be integers, strings or a ClassLabel"):
        load_labelled_dataset(name, label_column="score", resolution=16)
    with pytest.raises(InputError, match="--label_column 'kind' is not a column of .*; available columns: image, "
                                         "label, number, word, score"):
        load_labelled_dataset(name, label_column="kind", resolution=16)


# ------------------------------------------------------------------------------------------- the training task
def test_dropout_always_draws_and_drops_its_share():
    from ddpm_hub.training.tasks.class_conditional import drop_class_labels

    labels = torch.arange(4000) % 10
    for probability in (0.0, 0.1, 1.0):
        torch.manual_seed(5)
        dropped = drop_class_labels(labels, probability, null_class_id=10)
        after = torch.rand(1)
        torch.manual_seed(5)
        torch.rand(4000)
        assert torch.equal(after, torch.rand(1))  # exactly one draw of B, whatever the probability
        share = float((dropped == 10).double().mean())
        assert share == pytest.approx(probability, abs=0.02)
        kept = dropped != 10
        assert torch.equal(dropped[kept], labels[kept])


def test_train_writes_a_class_conditional_folder_whose_card_snippets_run(tmp_path, tiny_config):
    """--class_conditional on the digits: the folder, grids of one row per class, the evaluation at each guidance
    scale in tensorboard and the card, and the card's code blocks run as written."""
    import re

    out = tmp_path / "run"
    summary = train_ddpm.main(train_ddpm.parse_args(_args(
        out, tiny_config, "--ddpm_num_steps", "8", "--eval_epochs", "1", "--eval_num_samples", "10",
        "--eval_inference_steps", "2", "--eval_bpd_timesteps", "3", "--eval_bpd_images", "4",
        "--eval_guidance_scales", "1", "3", "--logger", "tensorboard", "--max_train_steps", "1")))
    assert summary.steps == 1 and (out / "pipeline.py").is_file()
    grid = Image.open(out / "samples" / "latest.png")
    assert grid.size[1] / grid.size[0] == pytest.approx(10 / 2, rel=0.1)  # 10 class rows of 2 images

    scalars = tensorboard_scalars(out / "logs")
    for scale in ("1", "3"):
        for metric in ("adherence", "fd", "fd_ratio", "pixel_fd", "pixel_fd_ratio"):
            assert f"eval/guidance_{scale}/{metric}" in scalars
    assert "eval/bits_per_dim" in scalars

    card = (out / "README.md").read_text()
    assert "| guidance 1 | " in card and "| guidance 3 | " in card and "| 9 | 9 |" in card
    assert "pipeline_tag: unconditional-image-generation" in card and "class-conditional-image-generation" in card
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 3 and "trust_remote_code=True" in blocks[0]
    namespace: dict = {}
    for block in blocks:  # as a reader pastes them, in order
        exec(block, namespace)  # noqa: S102
        assert len(namespace["images"]) == 3 and namespace["images"][0].size == (16, 16)


def test_resume_with_labels_continues_exactly(tmp_path, tiny_config):
    """Interrupted at a checkpoint and resumed, a class-conditional run (class folders, random flips, half the
    labels dropped) ends with the weights of the uninterrupted one."""
    data = _class_folder(tmp_path / "images", per_class=7)
    common = ("--train_data_dir", str(data), "--random_flip", "--train_batch_size", "8", "--max_train_steps", "8",
              "--checkpointing_steps", "4", "--save_images_epochs", "100", "--seed", "7",
              "--conditioning_dropout_prob", "0.5")
    full = train_ddpm.main(train_ddpm.parse_args(_args(tmp_path / "full", tiny_config, *common))).output_dir
    interrupted = train_ddpm.main(train_ddpm.parse_args(_args(tmp_path / "cut", tiny_config, *common))).output_dir
    for name in ("checkpoint-8", "unet", "scheduler", "model_index.json", "pipeline.py"):
        subprocess.run(["rm", "-rf", str(interrupted / name)], check=True)
    train_ddpm.main(train_ddpm.parse_args(_args(tmp_path / "cut", tiny_config, *common, "--resume_from_checkpoint",
                                                "latest")))
    for folder in ("unet", "checkpoint-8/unet", "checkpoint-8/unet_ema"):
        a, b = _unet_weights(full / folder), _unet_weights(interrupted / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    assert json.loads((interrupted / "model_index.json").read_text())["id2label"] == {"0": "cat", "1": "dog",
                                                                                     "2": "emu"}


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on Linux CI")
def test_two_processes_end_identical(tmp_path, tiny_config):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29527",
               str(ROOT / "train_ddpm.py"), *_args(out, tiny_config, "--max_train_steps", "3",
                                                   "--checkpointing_steps", "3", "--train_batch_size", "16")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = rank_weight_digests(result.stdout + result.stderr)
    assert sorted(digests) == [0, 1] and digests[0] == digests[1]
    assert (out / "checkpoint-3" / "random_states_1.pkl").is_file() and (out / "pipeline.py").is_file()
    assert json.loads((out / "checkpoint-3" / "training_state.json").read_text())["global_step"] == 3


# -------------------------------------------------------------------------------------------------- bad input
def _saved_dataset(root: Path) -> str:
    import datasets

    images = [Image.fromarray(np.zeros((16, 16), dtype=np.uint8))] * 2
    datasets.Dataset.from_dict({"image": images, "score": [0.5, 1.5]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "score": datasets.Value("float64")})
                               ).save_to_disk(str(root))
    return str(root)


@pytest.mark.parametrize("make_flags,message", [
    (lambda tmp: ["--train_data_dir", str(_flat_folder(tmp))],
     "has no class subfolders: class-conditional training reads one subfolder per class"),
    (lambda tmp: ["--train_data_dir", str(_with_loose_file(_class_folder(tmp / "mixed")))],
     "has files outside its class subfolders (loose.png): move each into the subfolder of its class"),
    (lambda tmp: ["--dataset_name", _saved_dataset(tmp / "saved")],
     "--label_column 'label' is not a column of --dataset_name"),
    (lambda tmp: ["--dataset_name", _saved_dataset(tmp / "saved"), "--label_column", "score"],
     "holds float64 values; class labels must be integers, strings or a ClassLabel"),
    (lambda tmp: ["--label_column", "digit"],
     "--label_column applies to a --dataset_name dataset; the built-in digits carry their own labels"),
    (lambda tmp: ["--task", "text-to-image"],
     "--class_conditional and --task text-to-image contradict each other: --class_conditional means --task "
     "class-conditional; give one"),
    (lambda tmp: ["--eval_guidance_scales", "1", "-2"], "--eval_guidance_scales must be >= 0"),
    (lambda tmp: ["--guidance_scale", "0.5"], "--guidance_scale must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_config, capsys, make_flags, message):
    flags = make_flags(tmp_path)
    capsys.readouterr()  # what making the data printed (datasets' progress bars)
    code = train_ddpm.cli(_args(tmp_path / "run", tiny_config, *flags))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err


def _flat_folder(tmp: Path) -> Path:
    """Images, but no class subfolders."""
    folder = tmp / "flat"
    folder.mkdir()
    Image.new("L", (16, 16)).save(folder / "a.png")
    return folder


def _with_loose_file(folder: Path) -> Path:
    Image.new("L", (16, 16)).save(folder / "loose.png")
    return folder


def test_a_user_unet_config_with_other_class_embeddings_is_refused(tmp_path, capsys):
    config = tmp_path / "unet.json"
    config.write_text(json.dumps({**TINY_UNET, "num_class_embeds": 5}))
    assert train_ddpm.cli(_args(tmp_path / "run", str(config))) == 2
    assert ("sets num_class_embeds 5, but the data has 10 classes (+1 'no class' id for guidance): set it to 11"
            in capsys.readouterr().err)


def test_class_conditional_flags_with_other_tasks_are_an_error(tmp_path, capsys):
    assert train_ddpm.cli(["--output_dir", str(tmp_path / "a"), "--label_column", "y"]) == 2
    assert "--label_column is a --task class-conditional flag; --task unconditional does not use it" in \
        capsys.readouterr().err
    assert train_ddpm.cli(["--output_dir", str(tmp_path / "b"), "--guidance_scale", "3"]) == 2
    assert ("--guidance_scale is a --task text-to-image or class-conditional flag; --task unconditional does not "
            "use it" in capsys.readouterr().err)
    from ddpm_hub.pipelines.class_conditional import DEFAULT_GUIDANCE_SCALE

    args = train_ddpm.parse_args(["--class_conditional"])
    assert (args.task, args.output_dir, args.guidance_scale) == ("class-conditional",
                                                                 "ddpm-digits-16-class-conditional",
                                                                 DEFAULT_GUIDANCE_SCALE)
    assert not {"guidance_scale", "conditioning_dropout_prob", "ddpm_num_inference_steps"} & args.foreign_flags
    assert train_ddpm.parse_args(["--task", "class-conditional", "--class_conditional"]).task == "class-conditional"
    assert train_ddpm.parse_args(["--task", "text-to-image"]).guidance_scale == 5.0


def test_bits_per_dim_is_given_each_image_its_own_class():
    """The evaluation's bits/dim conditions image i on label i: equal to the bound of a model function that passes
    the labels by hand, and different from the same images given shuffled labels."""
    from diffusers import DDPMScheduler as DiffusersDDPMScheduler

    from ddpm_hub import DDPMScheduler, bits_per_dim
    from ddpm_hub.evaluation.class_conditional import WithClassLabels
    from ddpm_hub.evaluation.likelihood import heldout_bits_per_dim

    unet = class_unet(num_classes=3, seed=1)
    with torch.no_grad():  # a strong class embedding, so the class changes the prediction
        unet.class_embedding.weight.mul_(50)
    scheduler = DDPMScheduler.from_config(DiffusersDDPMScheduler(num_train_timesteps=10).config)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 1])
    ours = heldout_bits_per_dim((WithClassLabels(unet, labels), scheduler), num_images=4, images=images, seed=0)
    by_hand = bits_per_dim(lambda x, t: unet(x, t, class_labels=labels), scheduler, images,
                           generator=torch.Generator().manual_seed(0))
    assert ours["mean"] == pytest.approx(by_hand.mean(), rel=1e-6)
    shuffled = heldout_bits_per_dim((WithClassLabels(unet, labels.flip(0)), scheduler), num_images=4, images=images,
                                    seed=0)
    assert shuffled["mean"] != pytest.approx(ours["mean"], rel=1e-4)


def test_tools_for_unconditional_folders_refuse_a_class_conditional_one(tmp_path):
    from diffusers import DDPMScheduler

    from ddpm_hub.export import load_pipeline_parts, save_class_conditional_pipeline

    save_class_conditional_pipeline(tmp_path, class_unet(), dict(DDPMScheduler(num_train_timesteps=10).config), NAMES)
    with pytest.raises(InputError, match="--model .* holds a class-conditional model .*score a class-conditional "
                                         "one with benchmarks/class_conditional.py"):
        load_pipeline_parts(tmp_path)
