"""Evaluate a trained DDPMPipeline folder: sample, score the samples, bound the likelihood, write JSON.

    python -m ddpm_hub.evaluate --model ddpm-digits-16                       # 256 DDPM samples, 1000 steps
    python -m ddpm_hub.evaluate --model ddpm-digits-16 --scheduler ddim --num_inference_steps 50
    python -m ddpm_hub.evaluate --model my-ddpm --inception_weights pt_inception-2015-12-05-6726825d.pth \\
        --reference_data_dir my_images                                      # FID for other data

1-channel 16x16 models get the digits metrics (ddpm_hub.evaluation.digits_metrics: Frechet distance in a small
digits classifier's feature space against held-out digits, its real-vs-real floor, confidence, class coverage),
the same distance in a second feature space with no learned network (ddpm_hub.evaluation.pixel_pca: 32 principal
components of the train split's pixels) and bits/dim on held-out digits. Any model gets FID when a local Inception
file and real images are given.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli import HelpFormatter, OneLineParser, full_or_count, run_cli
from .sampling import SAMPLERS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m ddpm_hub.evaluate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="a DDPMPipeline folder (what train_ddpm.py writes)")
    p.add_argument("--num_samples", type=int, default=256, help="images to generate and score")
    p.add_argument("--num_inference_steps", type=int, default=1000, help="sampling steps")
    p.add_argument("--scheduler", default="ddpm", choices=SAMPLERS,
                   help="sampler built from the model's scheduler config: ddpm (its own), ddim (eta 0) or dpm "
                        "(DPM-Solver++ multistep)")
    p.add_argument("--batch_size", type=int, default=64, help="images sampled per batch")
    p.add_argument("--bpd_timesteps", type=full_or_count, default=100,
                   help="bits/dim: 'full' (all T terms) or K >= 3 for the unbiased K-term estimate (K >= T: full)")
    p.add_argument("--bpd_images", type=int, default=64, help="held-out images for bits/dim (one batch)")
    p.add_argument("--inception_weights", default=None,
                   help="a local Inception file (pt_inception-2015-12-05) to also compute FID; needs torch-fidelity")
    p.add_argument("--reference_data_dir", default=None,
                   help="a folder of real images for FID and bits/dim (needed for a model that is not 1-channel 16x16; "
                        "default for digits models: the held-out digits)")
    p.add_argument("--cache_dir", default=None,
                   help="where the digits classifier is cached (default: $DDPM_HUB_CACHE or ~/.cache/ddpm_hub)")
    p.add_argument("--output", default=None, help="write the metrics here as JSON (default: print only)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, reference subsets and bits/dim")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    """Evaluate and return the metrics dict (also written to --output)."""
    from .atomic import atomic_write_text
    from .errors import InputError
    from .evaluation import (classifier_cache_path, digits_metrics, frechet_distance, held_out_digits,
                             heldout_bits_per_dim, inception_features, load_digits_classifier, load_inception)
    from .evaluation.pixel_pca import pixel_metrics
    from .export import load_pipeline_parts
    from .pixels import quantize, to_nchw
    from .sampling import generate, sampling_pipeline

    # 1. check the flags, the model and the FID inputs before anything slow
    _check_args(args)
    unet, scheduler = load_pipeline_parts(args.model)
    channels, size = unet.config.in_channels, _size(unet.config.sample_size)
    is_digits_model = channels == 1 and size == (16, 16)
    if not is_digits_model and args.inception_weights is None:
        raise InputError(f"the digits metrics need a 1-channel 16x16 model, and {args.model!r} is {channels}-channel "
                         f"{size[0]}x{size[1]}: for other data compute FID with --inception_weights PATH "
                         "--reference_data_dir DIR")
    if not is_digits_model and args.reference_data_dir is None:
        raise InputError(f"{args.model!r} is not a 1-channel 16x16 digits model: FID and bits/dim need real images "
                         "of its kind, pass --reference_data_dir DIR")
    reference = _reference_images(args.reference_data_dir, channels, size) if args.reference_data_dir else None
    if reference is None:  # the digits held-out split, which the classifier and the model never trained on
        reference = held_out_digits()
    if args.bpd_images > len(reference):
        raise InputError(f"--bpd_images {args.bpd_images} exceeds the {len(reference)} reference images")
    T = scheduler.config.num_train_timesteps
    if args.num_inference_steps > T:
        raise InputError(f"--num_inference_steps {args.num_inference_steps} exceeds the model's {T} diffusion steps")
    inception = load_inception(args.inception_weights) if args.inception_weights is not None else None
    classifier = None
    if is_digits_model:
        if not classifier_cache_path(args.cache_dir).is_file():
            print(f"training the digits classifier once (seconds); cached at {classifier_cache_path(args.cache_dir)}")
        classifier = load_digits_classifier(args.cache_dir)
    pipeline = sampling_pipeline(unet, scheduler.config, args.scheduler)

    # 2. sample (quantised to 8 bits, as saved images and the real ones are)
    started = time.perf_counter()
    images = quantize(to_nchw(generate(pipeline, args.num_samples, num_inference_steps=args.num_inference_steps,
                                       batch_size=args.batch_size, seed=args.seed, progress=True)))
    seconds = time.perf_counter() - started

    # 3. score: sample quality, then the likelihood bound on real images
    metrics: dict = {
        "model": str(args.model),
        "sampling": {"num_samples": args.num_samples, "num_inference_steps": args.num_inference_steps,
                     "scheduler": args.scheduler, "seed": args.seed, "seconds": round(seconds, 2)},
    }
    if classifier is not None:
        metrics["digits"] = digits_metrics(images, classifier=classifier, seed=args.seed)
        metrics["pixel_pca"] = pixel_metrics(images, seed=args.seed)
    if inception is not None:
        metrics["fid"] = {"fid": frechet_distance(inception_features(inception, images),
                                                  inception_features(inception, reference)),
                          "reference": args.reference_data_dir or "digits held-out split",
                          "num_reference": len(reference)}
    metrics["bits_per_dim"] = heldout_bits_per_dim((unet, scheduler), num_images=args.bpd_images,
                                                   num_timesteps=args.bpd_timesteps, seed=args.seed,
                                                   images=reference, progress=True)

    # 4. report
    print(format_table(metrics))
    if args.output is not None:
        atomic_write_text(args.output, json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.output}")
    return metrics


def format_table(metrics: dict) -> str:
    """The metrics as a small two-column table."""
    rows = [("model", metrics["model"])]
    sampling = metrics["sampling"]
    rows.append(("samples", f"{sampling['num_samples']} x {sampling['num_inference_steps']} {sampling['scheduler']} "
                            f"steps ({sampling['seconds']:.1f}s)"))
    if "digits" in metrics:
        d = metrics["digits"]
        floor = "n/a" if d["fd_floor"] is None else f"{d['fd_floor']:.3f}, ratio {d['fd_ratio']:.2f}x"
        rows += [("digits FD (floor)", f"{d['fd']:.3f} ({floor}; {d['floor_reference']}; mean of "
                                       f"{d['num_draws']} reference draws)"),
                 ("classifier confidence", f"{d['confidence']:.3f}"),
                 ("classes covered", f"{d['classes_covered']}/10 (smallest share {d['smallest_class_share']:.3f})"),
                 ("class histogram", " ".join(str(c) for c in d["class_histogram"]))]
    if "pixel_pca" in metrics:
        p = metrics["pixel_pca"]
        rows.append(("pixel-PCA FD (floor)", f"{p['fd']:.3f} ({p['fd_floor']:.3f}, ratio {p['fd_ratio']:.2f}x)"))
    if "fid" in metrics:
        rows.append(("FID", f"{metrics['fid']['fid']:.3f} vs {metrics['fid']['reference']}"))
    b = metrics["bits_per_dim"]
    terms = f"{b['num_timesteps']} timesteps" + (" sampled" if b["num_timesteps"] < b["num_train_timesteps"] else "")
    rows += [("bits/dim", f"{b['mean']:.4f} +- {b['standard_error']:.4f} ({b['num_images']} images, {terms})"),
             ("  prior / decoder", f"{b['prior']:.2e} / {b['decoder']:.4f}")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------- helpers
def _check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check; one InputError each."""
    from .errors import InputError
    from .likelihood import check_num_timesteps

    for name, low in (("num_samples", 2), ("num_inference_steps", 1), ("batch_size", 1), ("bpd_images", 2)):
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be an integer >= {low}, got {getattr(args, name)}")
    check_num_timesteps(args.bpd_timesteps, "--bpd_timesteps")
    if args.output is not None and Path(args.output).is_dir():
        raise InputError(f"--output {args.output!r} is a folder: give a file name such as metrics.json")
    if args.reference_data_dir is not None and args.inception_weights is None:
        raise InputError("--reference_data_dir is used for FID: give --inception_weights PATH with it")


def _size(sample_size) -> tuple[int, int]:
    return (sample_size, sample_size) if isinstance(sample_size, int) else (int(sample_size[0]), int(sample_size[1]))


def _reference_images(folder: str, channels: int, size: tuple[int, int]):
    """Real images from a folder at the model's resolution (center crop), [M x C x H x W] in [-1, 1]."""
    from .data import load_image_dataset
    from .errors import InputError

    if size[0] != size[1]:
        raise InputError(f"--reference_data_dir needs a square model, this one samples {size[0]}x{size[1]}")
    dataset = load_image_dataset(train_data_dir=folder, resolution=size[0], center_crop=True, num_channels=channels)
    print(dataset.summary().replace("loaded", "reference:", 1))
    return dataset.__getitems__(list(range(len(dataset))))  # the whole set as one float batch


def cli(argv: list[str] | None = None) -> int:
    """Run main; a user mistake prints one line and exits 2, anything else keeps its traceback."""
    return run_cli("python -m ddpm_hub.evaluate", main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
