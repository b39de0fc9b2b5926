"""Several trained digits folders at one sampler, over several sampling seeds: both feature spaces and the backgrounds.

    python benchmarks/score_folders.py runs/ours-0 runs/example-0 --steps 250 --sampling_seeds 0 1 2
    python benchmarks/score_folders.py runs/cand-* --kind dpm --steps 25
    python benchmarks/score_folders.py runs/ours-0 runs/example-0 --num_samples 1024 --sampling_seeds 0 --by_size
    python benchmarks/score_folders.py dist/round-4 --kind saved --steps 4   # a distilled student, as saved

The tool behind the candidate table in docs/benchmarks.md ("What the DDPM-250 gap is not"): each folder (a
DDPMPipeline of 1-channel 16x16 digits, ours or the example loop's of default_vs_example.py) is sampled exactly as
that benchmark samples a row (`default_vs_example.sample`: --num_samples images per seed in batches of
--batch_size, 256 as the benchmark's, quantised to 8 bits) and scored with its `distances`: the Frechet distance
in the digits CNN's space and in the pixel-PCA space against the 360 held-out digits. One sampling seed moves the
digits distance by about 1.8 at 256 samples, so the table gives each seed and their mean, and each mean's ratio to
the first folder's (the reference, e.g. the defaults' run).

A third column needs no feature space at all: the share of near-black pixels (8-bit level <= 3) in the samples,
next to the held-out digits' share. The real digits' background is exactly black; a model that leaves a faint
grain on it scores a lower share, which the digits CNN sees and pixel-PCA's 32 leading components mostly do not.

--by_size adds, per folder, both distances of the same images at N/4 and N/2 (the mean over the disjoint quarters
and halves) next to N. The Frechet distance of N samples overestimates the distance of the distributions by a term
that shrinks like 1/N and grows with the spread of the generated features (Chong and Forsyth 2020, "Effectively
Unbiased FID and Inception Score and where to find them"), so two models can swap places between N = 256 and
N = 1024; the table shows on the folders' own images whether they do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from default_vs_example import distances, draw, sample  # noqa: E402

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
    first, by_size = None, []
    for folder in args.folders:
        rows = []
        for seed in args.sampling_seeds:
            images = (sample_saved(Path(folder), args.steps, args.num_samples, args.batch_size, seed)
                      if args.kind == "saved" else
                      sample(Path(folder), args.kind, args.steps, args.num_samples, args.batch_size, seed)[0])
            rows.append({**distances(images), "near_black": near_black_share(images)})
            if args.by_size:
                by_size.append((folder, seed, distances_by_size(images)))
        mean = {key: statistics.mean(row[key] for row in rows) for key in ("digits_fd", "pixel_fd", "near_black")}
        first = first or mean
        per_seed = " / ".join(f"{row['digits_fd']:.2f}" for row in rows)
        print(f"| {folder} | {per_seed} | {mean['digits_fd']:.2f} | {mean['digits_fd'] / first['digits_fd']:.2f}x | "
              f"{mean['pixel_fd']:.2f} | {mean['pixel_fd'] / first['pixel_fd']:.2f}x | {mean['near_black']:.3f} |",
              flush=True)
    # the floors depend only on N and the reference draws: the same for every folder and seed
    print(f"| real held-out digits | floor {rows[0]['digits_floor']:.2f} | | | floor {rows[0]['pixel_floor']:.2f} | | "
          f"{near_black_share(held_out_digits()):.3f} |")
    if by_size:
        print_by_size(by_size)


def sample_saved(folder: Path, steps: int, num_samples: int, batch_size: int, seed: int):
    """As `default_vs_example.sample`, with the pipeline and scheduler saved in the folder as stock diffusers loads
    them (e.g. a distilled student's DDIMPipeline, sampled in the steps it was distilled for)."""
    from diffusers import DiffusionPipeline

    return draw(DiffusionPipeline.from_pretrained(folder), steps, num_samples, batch_size, seed)


def distances_by_size(images) -> dict[int, dict]:
    """`distances` at N/4, N/2 and N of the same N images: each the mean over the disjoint subsets of that size."""
    n = images.shape[0]
    table = {}
    for parts in (4, 2, 1):
        size = n // parts
        scores = [distances(images[i * size:(i + 1) * size]) for i in range(parts)]
        table[size] = {key: statistics.mean(score[key] for score in scores) for key in scores[0]}
    return table


def print_by_size(by_size: list) -> None:
    sizes = list(by_size[0][2])
    print("\nthe same images scored at several N (mean over disjoint subsets): digits FD, then pixel-PCA FD\n")
    print("| folder | seed | " + " | ".join(f"digits N={n}" for n in sizes) + " | "
          + " | ".join(f"pixel N={n}" for n in sizes) + " |")
    print("|---|---|" + "---|" * (2 * len(sizes)))
    for folder, seed, table in by_size:
        print(f"| {folder} | {seed} | " + " | ".join(f"{table[n]['digits_fd']:.2f}" for n in sizes) + " | "
              + " | ".join(f"{table[n]['pixel_fd']:.2f}" for n in sizes) + " |")
    table = by_size[0][2]
    print("| real held-out digits (floor) | | " + " | ".join(f"{table[n]['digits_floor']:.2f}" for n in sizes)
          + " | " + " | ".join(f"{table[n]['pixel_floor']:.2f}" for n in sizes) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="DDPMPipeline folders of 1-channel 16x16 digits models")
    p.add_argument("--kind", default="ddpm", choices=("ddpm", "ddim", "dpm", "saved"),
                   help="the sampler; saved: the folder's own pipeline and scheduler (e.g. a distilled DDIMPipeline)")
    p.add_argument("--steps", type=int, default=250, help="sampling steps")
    p.add_argument("--sampling_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num_samples", type=int, default=256, help="images per seed")
    p.add_argument("--batch_size", type=int, default=256,
                   help="images per sampling batch (256 is the benchmark's; larger batches are slower per image here)")
    p.add_argument("--by_size", action="store_true",
                   help="also score each seed's images at N/4 and N/2 (needs --num_samples divisible by 4)")
    args = p.parse_args(argv)
    if args.by_size and args.num_samples % 4:
        p.error(f"--by_size needs --num_samples divisible by 4, got {args.num_samples}")
    return args


if __name__ == "__main__":
    main(parse_args())
