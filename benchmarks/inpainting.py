"""Inpainting held-out digits: the lower half of each digit masked and filled in by RePaint, scored by the digits
classifier's accuracy against the true label. Ours (`ddpm_hub.DDPMInpaintPipeline`) next to diffusers' deprecated
`RePaintPipeline` on the same schedule (so the same network evaluations per image), on the default v-prediction
model and on an epsilon model, at 1x, 5x and 10x resampling. References measured in the same run: the floor, the
same masked digits with the lower half left as background, and the ceiling, the real digits.

    accelerate launch --quiet train_ddpm.py --output_dir ddpm-digits-16                 # the default (v-prediction)
    accelerate launch --quiet train_ddpm.py --prediction_type epsilon --output_dir ddpm-digits-16-epsilon
    python benchmarks/inpainting.py --model ddpm-digits-16 --epsilon_model ddpm-digits-16-epsilon

Both implementations run with diffusers' default jump length (10) on --steps scheduled timesteps (50: a fifth of the
paper's 250, for a 2-core CPU) and eta=1 for diffusers (DDPM, as in the RePaint paper; its default eta=0 is DDIM).
Each row draws its noise from one generator seeded with --seed. Ours steps on the model's own timestep_spacing,
diffusers' on its fixed "leading"-like spacing (t = k * T / steps). Goal (issue 12): ours far above the floor, at
least diffusers' accuracy on the epsilon model (where RePaint is valid), and not broken on the v-prediction model
(where diffusers' RePaintScheduler reads v as eps).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPLEMENTATIONS = ("ours", "diffusers")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ddpm-digits-16", help="the default (v-prediction) 16x16 digits folder")
    p.add_argument("--epsilon_model", default=None, help="a 16x16 digits folder trained with --prediction_type "
                                                         "epsilon (rows skipped without it)")
    p.add_argument("--num_images", type=int, default=200, help="held-out digits inpainted (a seeded sample)")
    p.add_argument("--steps", type=int, default=50, help="scheduled timesteps (num_inference_steps)")
    p.add_argument("--jump_length", type=int, default=10)
    p.add_argument("--resamplings", type=int, nargs="+", default=[1, 5, 10], help="jump_n_sample values")
    p.add_argument("--batch_size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also write the rows as JSON")
    return p.parse_args()


def held_out_sample(num_images: int, seed: int):
    """(digits [N x 1 x 16 x 16] in [-1, 1], labels [N]): a seeded sample of the 360 held-out digits."""
    import torch

    from ddpm_hub.data import load_digits_split
    from ddpm_hub.pixels import from_uint8

    held_out = load_digits_split(resolution=16)[1]
    index = torch.randperm(len(held_out.labels), generator=torch.Generator().manual_seed(seed))[:num_images]
    return from_uint8(held_out.images[index]), held_out.labels[index]


def lower_half_mask():
    """[1 x 1 x 16 x 16] bool: True (kept) on the top 8 rows, False (filled in) on the bottom 8."""
    import torch

    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :8] = True
    return mask


def make_pipeline(implementation: str, model_dir: str):
    """Our DDPMInpaintPipeline or diffusers' RePaintPipeline over the folder's UNet and scheduler config."""
    from diffusers import RePaintPipeline, RePaintScheduler

    from ddpm_hub import DDPMInpaintPipeline
    from ddpm_hub.export import load_pipeline_parts

    unet, scheduler = load_pipeline_parts(model_dir)
    if implementation == "ours":
        return DDPMInpaintPipeline(unet=unet, scheduler=scheduler)
    known = set(RePaintScheduler.from_config({}).config)  # RePaint's config keys: no prediction or variance type
    config = {key: value for key, value in scheduler.config.items() if key in known}
    return RePaintPipeline(unet=unet, scheduler=RePaintScheduler.from_config(config))


def inpaint(pipeline, implementation: str, images, mask, args: argparse.Namespace, resamplings: int, label: str):
    """The inpainted digits [N x 1 x 16 x 16] in [-1, 1], quantized to 8 bits as a saved PNG would be; chunks of
    --batch_size share one generator seeded with --seed."""
    import torch

    from ddpm_hub.pixels import quantize, to_nchw

    generator = torch.Generator().manual_seed(args.seed)
    extra = {"eta": 1.0} if implementation == "diffusers" else {}
    chunks = []
    for start in range(0, len(images), args.batch_size):
        pipeline.set_progress_bar_config(desc=f"{label} r={resamplings} [{start}:]", unit="move", leave=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # diffusers' deprecation of its preprocessing
            out = pipeline(images[start:start + args.batch_size], mask.float(), num_inference_steps=args.steps,
                           jump_length=args.jump_length, jump_n_sample=resamplings, generator=generator,
                           output_type="np", **extra).images
        chunks.append(quantize(to_nchw(out)))
    return torch.cat(chunks)


def prediction_type(model_dir: str) -> str:
    from ddpm_hub.export import load_pipeline_parts

    return load_pipeline_parts(model_dir)[1].config.prediction_type


def accuracy(classifier, images, labels) -> float:
    import torch

    with torch.no_grad():
        return float((classifier(images).argmax(dim=1) == labels).float().mean())


def main(args: argparse.Namespace) -> list[dict]:
    from ddpm_hub.evaluation import load_digits_classifier
    from ddpm_hub.pipelines.inpaint import network_evaluations

    images, labels = held_out_sample(args.num_images, args.seed)
    mask = lower_half_mask()
    classifier = load_digits_classifier()
    floor_images = images.masked_fill(~mask, -1.0)  # the lower half as background (black, -1)
    rows = [{"implementation": "real digits (ceiling)", "model": "-", "accuracy": accuracy(classifier, images, labels)},
            {"implementation": "lower half blank (floor)", "model": "-",
             "accuracy": accuracy(classifier, floor_images, labels)}]
    models = [(f"default ({prediction_type(args.model)})", args.model)]
    if args.epsilon_model:
        models.append((prediction_type(args.epsilon_model), args.epsilon_model))
    for model_label, model_dir in models:
        for implementation in IMPLEMENTATIONS:
            pipeline = make_pipeline(implementation, model_dir)
            for resamplings in args.resamplings:
                filled = inpaint(pipeline, implementation, images, mask, args, resamplings,
                                 f"{implementation} {model_label}")
                if implementation == "ours":
                    assert (filled[:, :, :8] == images[:, :, :8]).all(), "known pixels changed"
                rows.append({"implementation": implementation, "model": model_label, "resamplings": resamplings,
                             "network_evaluations": network_evaluations(args.steps, args.jump_length, resamplings),
                             "accuracy": accuracy(classifier, filled, labels)})
                print(f"  {implementation} {model_label} r={resamplings}: accuracy {rows[-1]['accuracy']:.3f}",
                      file=sys.stderr, flush=True)
    print(format_table(rows, args))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    """Markdown: accuracy with its binomial standard error, as a share of the ceiling, and the share of the
    floor-to-ceiling gap it closes."""
    ceiling, floor = rows[0]["accuracy"], rows[1]["accuracy"]
    lines = [f"{args.num_images} held-out digits, lower half filled in; {args.steps} scheduled timesteps, jump length "
             f"{args.jump_length}, seed {args.seed}", "",
             "| implementation | model | resampling | network evaluations / image | accuracy | / ceiling | gap closed |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        p = row["accuracy"]
        error = math.sqrt(p * (1 - p) / args.num_images)
        gap = (p - floor) / (ceiling - floor) if ceiling > floor else float("nan")
        resampling = f"{row['resamplings']}x" if "resamplings" in row else "-"
        lines.append(f"| {row['implementation']} | {row['model']} | {resampling} | {row.get('network_evaluations', '-')} "
                     f"| {p:.3f} ± {error:.3f} | {p / ceiling:.2f}x | {gap:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(parse_args())
