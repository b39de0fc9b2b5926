"""Edit an image with a trained model from the command line: inpainting (RePaint) and image-to-image (SDEdit).

    python -m ddpm_hub.edit inpaint --model ddpm-digits-16 --image digit.png --mask keep.png --output filled.png
    python -m ddpm_hub.edit img2img --model ddpm-digits-16 --image digit.png --strength 0.5 --output edited.png
    python -m ddpm_hub.edit img2img --model ddpm-digits-16-cc --image digit.png --class_label 7 --output seven.png

inpaint (`ddpm_hub.DDPMInpaintPipeline`): the mask is an image of the same size whose white (255) pixels are kept and
whose black (0) pixels are filled in; any other grey level is an error (no thresholding). img2img
(`ddpm_hub.DDPMImg2ImgPipeline`): the image is noised `--strength` of the way (0: unchanged, 1: a fresh sample) and
denoised back with the chosen sampler. A class-conditional model (train_ddpm.py --class_conditional) edits toward
`--class_label` (one of its names, else an id) with classifier-free guidance `--guidance_scale`, or without a class
when none is given; its folder's pipeline.py is never run. The image must have the model's size and channels (grey,
PIL mode L, for a 1-channel model; RGB for a 3-channel one). The result is written atomically: a failed run leaves no
file and an earlier one untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import HelpFormatter, OneLineParser, run_cli
from .errors import InputError, one_line
from .sampling import SAMPLERS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ddpm_hub.edit", description=__doc__, formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{inpaint,img2img}")
    inpaint = commands.add_parser("inpaint", help="fill in the masked pixels (RePaint)", formatter_class=HelpFormatter)
    img2img = commands.add_parser("img2img", help="noise the image part of the way and denoise it (SDEdit)",
                                  formatter_class=HelpFormatter)
    for command in (inpaint, img2img):
        command.add_argument("--model", required=True, help="a DDPMPipeline folder (what train_ddpm.py writes)")
        command.add_argument("--image", required=True, help="the image to edit (PNG, ...), the model's size")
        command.add_argument("--output", required=True, help="where the result goes; the extension picks the format")
        command.add_argument("--seed", type=int, default=0, help="seed for the noise")
        command.add_argument("--class_label", default=None,
                             help="class-conditional models: the class to edit toward, a name (the model's id2label) "
                                  "or an id (default: none, the model's 'no class' id)")
        command.add_argument("--guidance_scale", type=float, default=None,
                             help="with --class_label: classifier-free guidance scale s >= 0, 1 the conditional model "
                                  "alone (default: ClassConditionalDDPMPipeline's DEFAULT_GUIDANCE_SCALE)")
    inpaint.add_argument("--mask", required=True, help="same size as the image: white (255) keeps, black (0) fills in")
    inpaint.add_argument("--num_inference_steps", type=int, default=None,
                         help="scheduled timesteps, 1..T (default: 250, or T if smaller)")
    inpaint.add_argument("--jump_length", type=int, default=10, help="levels gone back up per resampling (j)")
    inpaint.add_argument("--jump_n_sample", type=int, default=10, help="resamplings per jump point (r; 1: none)")
    img2img.add_argument("--strength", type=float, default=0.8, help="how far into the noise: 0 (none) to 1 (all)")
    img2img.add_argument("--sampler", default="ddpm", choices=SAMPLERS, help="the sampler that denoises")
    img2img.add_argument("--num_inference_steps", type=int, default=None,
                         help="the sampler's schedule; int(steps * strength) of them run (default: T for ddpm, 25 "
                              "for ddim and dpm)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Path:
    import torch

    from .atomic import atomic_path
    from .pipelines import DDPMImg2ImgPipeline, DDPMInpaintPipeline
    from .pipelines.image_inputs import model_image_shape, prepare_image, prepare_mask

    output_format = image_format(args.output)
    if args.command == "img2img" and not 0.0 <= args.strength <= 1.0:
        raise InputError(f"--strength must be in [0, 1], got {args.strength}")
    if args.guidance_scale is not None and args.class_label is None:
        raise InputError("--guidance_scale needs --class_label: guidance steers the edit toward a class; give both "
                         "or neither")
    pipeline = load_pipeline(DDPMInpaintPipeline if args.command == "inpaint" else DDPMImg2ImgPipeline, args.model)
    conditioning = {"class_labels": class_label(pipeline, args.class_label), "guidance_scale": args.guidance_scale}
    image = open_image(args.image, "--image")
    checked = prepare_image(image, model_image_shape(pipeline.unet), name=f"--image {args.image}")
    generator = torch.Generator().manual_seed(args.seed)
    steps = args.num_inference_steps
    if steps is None:
        steps = default_steps(args, pipeline.scheduler.config.num_train_timesteps)
    if args.command == "inpaint":
        mask = open_image(args.mask, "--mask")
        prepare_mask(mask, checked, name=f"--mask {args.mask}")
        result = pipeline(image, mask, num_inference_steps=steps, jump_length=args.jump_length,
                          jump_n_sample=args.jump_n_sample, generator=generator, **conditioning).images[0]
    else:
        result = pipeline(image, strength=args.strength, num_inference_steps=steps,
                          sampler=args.sampler, generator=generator, **conditioning).images[0]
    with atomic_path(args.output) as tmp:
        result.save(tmp, format=output_format)
    print(f"wrote {args.output}")
    return Path(args.output)


def load_pipeline(pipeline_class, model_dir: str):
    """`pipeline_class.from_pretrained` of the folder --model (plain or class-conditional; nothing from the folder
    runs), checked first to be a pipeline folder; diffusers' bar for loading two components is left off. One-line
    InputError for a folder that does not load."""
    from diffusers.utils import logging as diffusers_logging

    from .export import check_pipeline_folder

    folder = check_pipeline_folder(model_dir)
    bar = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        return pipeline_class.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"--model {model_dir!r} could not be loaded: {one_line(error, 300)}") from None
    finally:
        if bar:
            diffusers_logging.enable_progress_bar()


def class_label(pipeline, text: str | None) -> str | int | None:
    """--class_label as the pipeline takes it: a name of the model's id2label, else an id 0..K-1; None stays None.
    One-line InputError for a model without classes or a label that is neither."""
    if text is None:
        return None
    if not pipeline.id2label:
        raise InputError(f"--class_label {text!r} given, but the model in --model has no classes (an unconditional "
                         "model); drop --class_label")
    if text in pipeline.labels:
        return text
    if text.isdigit() and int(text) in pipeline.id2label:
        return int(text)
    names = ", ".join(repr(name) for name in list(pipeline.labels)[:20]) + (", ..." if len(pipeline.labels) > 20
                                                                             else "")
    raise InputError(f"--class_label {text!r} is neither a class name nor an id of this model; choose a name "
                     f"({names}) or an id 0..{len(pipeline.id2label) - 1}")


def default_steps(args: argparse.Namespace, T: int) -> int:
    """inpaint: diffusers' RePaint default of 250 (at most T); img2img: all T for DDPM, 25 for DDIM and DPM-Solver++
    (the step counts docs/benchmarks.md measured)."""
    if args.command == "inpaint":
        return min(250, T)
    if args.sampler == "ddpm":
        return T
    return min(25, T - 1) if args.sampler == "dpm" else min(25, T)


def image_format(path: str) -> str:
    """PIL's format name for an output path's extension; InputError for one PIL cannot write."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    found = Image.registered_extensions().get(suffix)
    if found is None or found not in Image.SAVE:
        raise InputError(f"--output {path!r}: cannot write images with extension {suffix or '(none)'!r}; "
                         "use .png (lossless) or another image extension")
    return found


def open_image(path: str, flag: str):
    """The image file at `path`, decoded; one-line InputError naming `flag` when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()
    except FileNotFoundError:
        raise InputError(f"{flag} {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"{flag} {path!r} is not a readable image: {one_line(error, 200)}") from None


def cli(argv: list[str] | None = None) -> int:
    """Run main; a user mistake prints one line and exits 2, anything else keeps its traceback."""
    return run_cli("python -m ddpm_hub.edit", main, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
