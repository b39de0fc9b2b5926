"""The README.md model card of a trained pipeline folder.

One Jinja template, `model_card_template.md` at the repository root (huggingface_hub's model-card template
style: YAML front matter from `ModelCardData`, then Markdown), rendered with
`huggingface_hub.ModelCard.from_template`. An installed (non-editable) ddpm_hub ships the same file as
`ddpm_hub/templates/model_card_template.md`, a symlink to the root one that the wheel build resolves.

What the card says about the model (UNet class and size, scheduler, number of timesteps, beta schedule,
prediction type) is read back from the saved configs in the folder, not restated from flags, so the card
describes the files it sits next to. Anything whose key names a secret (any key containing "token") is
dropped from the hyperparameter table.
"""

import importlib.metadata
import json
import math
import os
import re
import urllib.parse
from pathlib import Path
from typing import Literal

from .atomic import atomic_write_text
from .errors import InputError

Task = Literal["unconditional-image-generation", "text-to-image", "class-conditional"]
TASKS: tuple[str, ...] = ("unconditional-image-generation", "text-to-image", "class-conditional")
TEMPLATE_NAME = "model_card_template.md"
DEFAULT_PROMPT = "a photo of an astronaut riding a horse"  # the usage snippet's prompt when none was validated

BASE_TAGS = ("ddpm_hub", "diffusers", "diffusers-training", "ddpm")
TASK_TAGS = {
    "unconditional-image-generation": ("unconditional-image-generation",),
    "text-to-image": ("text-to-image", "stable-diffusion"),
    "class-conditional": ("class-conditional-image-generation", "classifier-free-guidance"),
}
# The Hub's pipeline_tag per task. The Hub has no class-conditional task; image generation without a text or image
# input is "unconditional-image-generation" (diffusers' DiT checkpoints are listed there too), and the tags above say
# what conditions it.
PIPELINE_TAGS = {"unconditional-image-generation": "unconditional-image-generation", "text-to-image": "text-to-image",
                 "class-conditional": "unconditional-image-generation"}
LABELS_IN_SNIPPET = 3  # class names the usage snippet asks for

# Hyperparameter keys containing any of these are never written (hub_token, HF_TOKEN, api_key, ...).
_SECRET_KEY_WORDS = ("token", "secret", "password", "api_key", "apikey", "credential")
# ... nor any value that looks like a Hugging Face access token, whatever its key.
_HF_TOKEN_VALUE = re.compile(r"hf_[A-Za-z0-9]{8,}")


def template_path() -> Path:
    """The model-card template: the repository's top-level file when running from a checkout, else the
    copy packaged as `ddpm_hub/templates/model_card_template.md`."""
    package_dir = Path(__file__).resolve().parent
    checkout_root = package_dir.parent
    # Require pyproject.toml too, so an unrelated file of that name in site-packages is never picked up.
    if (checkout_root / TEMPLATE_NAME).is_file() and (checkout_root / "pyproject.toml").is_file():
        return checkout_root / TEMPLATE_NAME
    packaged = package_dir / "templates" / TEMPLATE_NAME
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"{TEMPLATE_NAME} not found next to the package nor in ddpm_hub/templates/ (broken install?)"
    )


def _is_secret(key: str, value) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS) or bool(_HF_TOKEN_VALUE.search(str(value)))


def _cell(value) -> str:
    """One Markdown table cell: single line, `|` escaped."""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _python_str(text: str) -> str:
    """A double-quoted Python string literal (JSON string syntax is valid Python)."""
    return json.dumps(text, ensure_ascii=False)


def _number(value: float | None) -> str:
    if value is None:
        return "not recorded"
    value = float(value)
    return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4g}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _is_hub_dataset_id(name: str) -> bool:
    """A Hub dataset id, not a local image folder (a folder name such as "my_images" is a valid id too)."""
    from .hub import is_repo_id

    return not Path(name).expanduser().exists() and is_repo_id(name)


def _describe_model(
    output_dir: Path, task: str, hyperparameters: dict, base_model: str | None
) -> tuple[str, int | None]:
    """A one-paragraph description from the saved configs; also returns num_train_timesteps if known."""
    unet = _read_json(output_dir / "unet" / "config.json")
    scheduler = _read_json(output_dir / "scheduler" / "scheduler_config.json")

    unet_class = unet.get("_class_name", "UNet2DConditionModel" if task == "text-to-image" else "UNet2DModel")
    unet_bits = []
    if "sample_size" in unet:
        size = unet["sample_size"]
        unet_bits.append(f"sample size {size}×{size}" if isinstance(size, int) else f"sample size {size}")
    if "block_out_channels" in unet:
        unet_bits.append(f"block channels {tuple(unet['block_out_channels'])}")
    unet_text = f"`{unet_class}`" + (f" ({', '.join(unet_bits)})" if unet_bits else "")

    # Scheduler facts: the saved config wins; the flags of train_unconditional.py are the fallback.
    scheduler_class = scheduler.get("_class_name", "DDPMScheduler")
    steps = scheduler.get("num_train_timesteps", hyperparameters.get("ddpm_num_steps"))
    beta_schedule = scheduler.get("beta_schedule", hyperparameters.get("ddpm_beta_schedule"))
    prediction_type = scheduler.get("prediction_type", hyperparameters.get("prediction_type"))
    scheduler_bits = []
    if steps is not None:
        scheduler_bits.append(f"{steps} timesteps")
    if beta_schedule is not None:
        scheduler_bits.append(f"`{beta_schedule}` β schedule")
    if prediction_type is not None:
        scheduler_bits.append(f"predicting `{prediction_type}`")
    scheduler_text = f"`{scheduler_class}`" + (f" ({', '.join(scheduler_bits)})" if scheduler_bits else "")

    base_link = f"fine-tuned from [{base_model}](https://huggingface.co/{base_model})" if base_model else None
    if task == "class-conditional":
        classes = unet.get("num_class_embeds")
        embeds = f" with {classes - 1} class embeddings and a 'no class' one" if isinstance(classes, int) else ""
        text = (
            f"A class-conditional denoising diffusion probabilistic model (DDPM, Ho et al., 2020) sampled with "
            f"classifier-free guidance (Ho & Salimans, 2022): a {unet_text} denoiser{embeds}, trained from scratch "
            f"with a share of its labels dropped to 'no class', paired with a {scheduler_text}."
        )
    elif task == "text-to-image":
        fine_tuned = base_model or hyperparameters.get("pretrained_model_name_or_path")
        origin = base_link or ("fine-tuned" if fine_tuned else "trained from scratch")
        text = (
            f"A Stable Diffusion text-to-image pipeline whose denoiser, a {unet_text}, was {origin} with the DDPM "
            f"noise-prediction objective (Ho et al., 2020), trained with the {scheduler_text} noise schedule."
        )
    else:
        origin = base_link or "trained from scratch"
        text = (
            f"A denoising diffusion probabilistic model (DDPM, Ho et al., 2020) for unconditional image generation: "
            f"a {unet_text} denoiser {origin}, paired with a {scheduler_text}."
        )
    return text, int(steps) if isinstance(steps, int) else None


def render_model_card(
    output_dir: str | os.PathLike,
    *,
    task: Task = "unconditional-image-generation",
    repo_id: str | None = None,
    dataset_name: str | None = None,
    dataset_description: str | None = None,
    license: str = "apache-2.0",
    hyperparameters: dict,
    final_loss: float | None,
    sample_grid: str | None,
    metrics: dict | None = None,
    validation_prompts: list[str] | None = None,
    base_model: str | None = None,
    labels: dict[int, str] | None = None,
    guidance_scale: float | None = None,
    description: str | None = None,
    sampling_steps: int | None = None,
    sample_caption: str | None = None,
) -> Path:
    """Write `output_dir/README.md` (atomically) describing the trained pipeline in `output_dir`.

    `sample_grid` is a path relative to `output_dir` (e.g. "samples/final.png") and must exist.
    `dataset_name` is a Hub dataset id (linked, and tagged in the metadata) or a local folder; data that is neither
    (the built-in digits or shapes) is described in words by `dataset_description` instead.
    `hyperparameters` go into a table, minus any key containing "token" (and other secret-looking entries).
    `labels` (class-conditional): the class names by id, listed in a table and used by the usage snippet, which
    samples at `guidance_scale`. `sample_caption` says how the grid was drawn (default: per task).
    `description` replaces the paragraph read from the configs; `sampling_steps` marks a distilled DDIMPipeline
    made for exactly that many steps (the usage snippet says so); `sample_caption` replaces the grid's caption.
    Returns the README path.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise InputError(f"output_dir {output_dir} does not exist or is not a directory")
    if task not in TASKS:
        raise InputError(f"task {task!r} is not supported; allowed: {', '.join(TASKS)}")
    if sample_grid is not None:
        grid = Path(sample_grid)
        if grid.is_absolute() or ".." in grid.parts:
            raise InputError(
                f"sample_grid {sample_grid!r} must be a path relative to output_dir, e.g. 'samples/final.png'"
            )
        if not (output_dir / grid).is_file():
            raise InputError(f"sample_grid {sample_grid!r} not found in output_dir {output_dir}")
    validation_prompts = [" ".join(p.split()) for p in validation_prompts or []]

    hub_dataset = dataset_name if dataset_name and _is_hub_dataset_id(dataset_name) else None
    card_data = ModelCardData(
        library_name="diffusers",
        license=license,
        tags=[*BASE_TAGS, *TASK_TAGS[task]],
        pipeline_tag=PIPELINE_TAGS[task],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=base_model,
    )

    described, num_train_timesteps = _describe_model(output_dir, task, hyperparameters, base_model)
    description = description or described
    if hub_dataset:
        dataset_sentence = f"Trained on the [{hub_dataset}](https://huggingface.co/datasets/{hub_dataset}) dataset."
    elif dataset_description:
        dataset_sentence = f"Trained on {dataset_description}."
    elif dataset_name:
        dataset_sentence = f"Trained on a local image folder (`{Path(dataset_name).name}`)."
    else:
        dataset_sentence = ""

    # The usage snippet: DDPMPipeline's default is 1000 inference steps, which fails for a schedule with fewer.
    ddpm_steps = num_train_timesteps or 1000
    ddpm_chain = f"{num_train_timesteps} network evaluations" if num_train_timesteps else "one network call per step"
    model_ref = repo_id if repo_id else Path(output_dir).as_posix()
    title = (repo_id or output_dir.resolve().name).split("/")[-1]
    kwargs = dict(
        title=title,
        description=description,
        task=task,
        sample_grid=urllib.parse.quote(Path(sample_grid).as_posix()) if sample_grid else None,
        sample_caption=sample_caption or (
            f"Images generated from the prompts {', '.join(repr(p) for p in validation_prompts)}."
            if task == "text-to-image" and validation_prompts
            else "Samples drawn with the full DDPM reverse process at the end of training."
        ),
        sampling_steps=sampling_steps,
        model_ref=_python_str(model_ref),
        prompt_literal=_python_str(validation_prompts[0] if validation_prompts else DEFAULT_PROMPT),
        ddpm_chain=ddpm_chain,
        ddpm_steps_arg="" if ddpm_steps == 1000 else f", num_inference_steps={ddpm_steps}",
        fast_steps=min(25, ddpm_steps - 1),  # DPM-Solver++ fails at all T steps with 'leading' spacing
        dataset_sentence=dataset_sentence,
        hyperparameters=[(_cell(k), _cell(v)) for k, v in hyperparameters.items() if not _is_secret(k, v)],
        final_loss=_number(final_loss),
        metrics=[
            (_cell(k), _number(v) if isinstance(v, (int, float)) else _cell(v)) for k, v in (metrics or {}).items()
        ],
        validation_prompts=[_cell(p) for p in validation_prompts],
        labels=[(str(i), _cell(name)) for i, name in sorted((labels or {}).items())],
        class_ids_literal=repr(sorted(labels or {})[:LABELS_IN_SNIPPET]),
        label_names_literal="[" + ", ".join(_python_str(name) for _, name in sorted((labels or {}).items())[
            :LABELS_IN_SNIPPET]) + "]",
        guidance_scale=f"{guidance_scale:g}" if guidance_scale is not None else "1",
        ddpm_hub_version=__version__,
        diffusers_version=importlib.metadata.version("diffusers"),
    )
    card = ModelCard.from_template(card_data, template_path=str(template_path()), **kwargs)
    text = re.sub(r"\n{3,}", "\n\n", str(card)).rstrip("\n") + "\n"

    readme = output_dir / "README.md"
    atomic_write_text(readme, text)
    return readme
