"""Edit an image with a trained model from the command line: inpainting (RePaint) and image-to-image (SDEdit).

    python -m ddpm_hub.edit inpaint --model ddpm-digits-16 --image digit.png --mask keep.png --output filled.png
    python -m ddpm_hub.edit img2img --model ddpm-digits-16 --image digit.png --strength 0.5 --output edited.png

inpaint (`ddpm_hub.DDPMInpaintPipeline`): the mask is an image of the same size whose white (255) pixels are kept and
whose black (0) pixels are filled in; any other grey level is an error (no thresholding). img2img
(`ddpm_hub.DDPMImg2ImgPipeline`): the image is noised `--strength` of the way (0: unchanged, 1: a fresh sample) and
denoised back with the chosen sampler. The image must have the model's size and channels (grey, PIL mode L, for a
1-channel model; RGB for a 3-channel one). The result is written atomically: a failed run leaves no file and an
earlier one untouched.
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
    from .export import load_pipeline_parts
    from .pipelines import DDPMImg2ImgPipeline, DDPMInpaintPipeline
    from .pipelines.image_inputs import model_image_shape, prepare_image, prepare_mask

    output_format = image_format(args.output)
    if args.command == "img2img" and not 0.0 <= args.strength <= 1.0:
        raise InputError(f"--strength must be in [0, 1], got {args.strength}")
    unet, scheduler = load_pipeline_parts(args.model)
    image = open_image(args.image, "--image")
    checked = prepare_image(image, model_image_shape(unet), name=f"--image {args.image}")
    generator = torch.Generator().manual_seed(args.seed)
    steps = args.num_inference_steps
    if steps is None:
        steps = default_steps(args, scheduler.config.num_train_timesteps)
    if args.command == "inpaint":
        mask = open_image(args.mask, "--mask")
        prepare_mask(mask, checked, name=f"--mask {args.mask}")
        pipeline = DDPMInpaintPipeline(unet=unet, scheduler=scheduler)
        result = pipeline(image, mask, num_inference_steps=steps, jump_length=args.jump_length,
                          jump_n_sample=args.jump_n_sample, generator=generator).images[0]
    else:
        pipeline = DDPMImg2ImgPipeline(unet=unet, scheduler=scheduler)
        result = pipeline(image, strength=args.strength, num_inference_steps=steps,
                          sampler=args.sampler, generator=generator).images[0]
    with atomic_path(args.output) as tmp:
        result.save(tmp, format=output_format)
    print(f"wrote {args.output}")
    return Path(args.output)


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
