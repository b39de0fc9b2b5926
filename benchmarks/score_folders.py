"""Several trained digits folders at one sampler, over several sampling seeds: both feature spaces and the backgrounds.

    python benchmarks/score_folders.py runs/ours-0 runs/example-0 --steps 250 --sampling_seeds 0 1 2
    python benchmarks/score_folders.py runs/cand-* --kind dpm --steps 25

The tool behind the candidate table in docs/benchmarks.md ("What the DDPM-250 gap is not"): each folder (a
DDPMPipeline of 1-channel 16x16 digits, ours or the example loop's of default_vs_example.py) is sampled exactly as
that benchmark samples a row (`default_vs_example.sample`: --num_samples images in one batch per seed, quantised to
8 bits) and scored with its `distances`: the Frechet distance in the digits CNN's space and in the pixel-PCA space
against the 360 held-out digits. One sampling seed moves the digits distance by about 1.8 at 256 samples, so the
table gives each seed and their mean, and each mean's ratio to the first folder's (the reference, e.g. the
defaults' run).

A third column needs no feature space at all: the share of near-black pixels (8-bit level <= 3) in the samples,
next to the held-out digits' share. The real digits' background is exactly black; a model that leaves a faint
grain on it scores a lower share, which the digits CNN sees and pixel-PCA's 32 leading components mostly do not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from default_vs_example import distances, sample  # noqa: E402

NEAR_BLACK_LEVEL = 3


def near_black_share(images) -> float:
    """Share of pixels at 8-bit level <= NEAR_BLACK_LEVEL, for images in [-1, 1] (any shape)."""
    levels = ((images.float() + 1) * 127.5).round()
    return (levels <= NEAR_BLACK_LEVEL).float().mean().item()


def main(args: argparse.Namespace) -> None:
    from ddpm_hub.evaluation import held_out_digits

    print(f"{args.kind} {args.steps} steps, {args.num_samples} samples per sampling seed {args.sampling_seeds}\n")
    print("| folder | digits FD per seed | digits FD mean | / first | pixel-PCA FD mean | / first | near-black share |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for folder in args.folders:
        rows = []
        for seed in args.sampling_seeds:
            images, _ = sample(Path(folder), args.kind, args.steps, args.num_samples, args.num_samples, seed)
            rows.append({**distances(images), "near_black": near_black_share(images)})
        mean = {key: statistics.mean(row[key] for row in rows) for key in ("digits_fd", "pixel_fd", "near_black")}
        first = first or mean
        per_seed = " / ".join(f"{row['digits_fd']:.2f}" for row in rows)
        print(f"| {folder} | {per_seed} | {mean['digits_fd']:.2f} | {mean['digits_fd'] / first['digits_fd']:.2f}x | "
              f"{mean['pixel_fd']:.2f} | {mean['pixel_fd'] / first['pixel_fd']:.2f}x | {mean['near_black']:.3f} |",
              flush=True)
    # the floors depend only on N and the reference draws: the same for every folder and seed
    print(f"| real held-out digits | floor {rows[0]['digits_floor']:.2f} | | | floor {rows[0]['pixel_floor']:.2f} | | "
          f"{near_black_share(held_out_digits()):.3f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="DDPMPipeline folders of 1-channel 16x16 digits models")
    p.add_argument("--kind", default="ddpm", choices=("ddpm", "ddim", "dpm"), help="the sampler")
    p.add_argument("--steps", type=int, default=250, help="sampling steps")
    p.add_argument("--sampling_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num_samples", type=int, default=256, help="images per seed (sampled in one batch)")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
