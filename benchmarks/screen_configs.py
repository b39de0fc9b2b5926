"""Screen training configurations of train_ddpm.py at a fixed step budget each, scored as users sample them.

    python benchmarks/screen_configs.py --config current:"" \
        --config eps-linear:"--ddpm_beta_schedule linear --prediction_type epsilon --snr_gamma 0" --steps 2000

Each --config NAME:"FLAGS" (optionally NAME:"FLAGS":STEPS to give it its own step count, e.g. the steps a batch
size fits into the same CPU time) trains `train_ddpm.py FLAGS --max_train_steps STEPS` with evaluation off and the grid (10 DDPM steps,
it changes nothing in the weights) and export only at the end, then samples --num_samples images from sampling seed 0 with each of --rows and scores them
in both feature spaces against the 360 held-out digits (ddpm_hub.evaluation.digits_metrics: the digits CNN;
ddpm_hub.evaluation.pixel_pca.pixel_metrics: pixel PCA, no learned network), each next to its real-vs-real floor.
The first config is the reference of the ratio columns. Training runs one after the other; trained folders and
scores are kept in --work_dir, so a rerun only does what is missing. Quality only: the seconds printed are not a
timing measurement unless the machine was otherwise idle.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from default_vs_example import cached, score  # noqa: E402

ROW_CHOICES = {"ddpm1000": ("ddpm", 1000), "ddpm250": ("ddpm", 250), "ddpm100": ("ddpm", 100),
               "dpm25": ("dpm", 25), "ddim50": ("ddim", 50)}


def parse_config(text: str, default_steps: int) -> tuple[str, list[str], int]:
    name, _, rest = text.partition(":")
    flags, _, steps = rest.rpartition(":") if rest.count(":") else (rest, "", "")
    return name, shlex.split(flags), int(steps) if steps else default_steps


def train(folder: Path, flags: list[str], steps: int, seed: int) -> dict:
    command = [sys.executable, str(ROOT / "train_ddpm.py"), *flags, "--max_train_steps", str(steps), "--seed",
               str(seed), "--output_dir", str(folder), "--eval_epochs", "0", "--save_images_epochs", "100000",
               "--save_model_epochs", "100000", "--logger", "none", "--ddpm_num_inference_steps", "10"]
    print(f"  {shlex.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"train_ddpm.py failed:\n{result.stderr[-3000:]}")
    return {"flags": flags, "steps": steps, "seconds": time.perf_counter() - started}


def main(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(text, args.steps) for text in args.config]
    table = []
    for name, flags, steps in configs:
        folder = work / f"{name}-s{args.seed}"
        run = cached(work / f"{name}-s{args.seed}.json", lambda: train(folder, flags, steps, args.seed))
        scores = {}
        for row in args.rows:
            kind, n = ROW_CHOICES[row]
            scores[row] = cached(work / f"{name}-s{args.seed}-{row}.json",
                                 lambda: score(folder, kind, n, args.num_samples, args.batch_size))
            print(f"  {name} {row}: digits {scores[row]['digits_fd']:.3f} pixels {scores[row]['pixel_fd']:.3f}",
                  file=sys.stderr, flush=True)
        table.append((name, run, scores))
    reference = table[0][2]
    header = " | ".join(f"{row} digits | {row} pixels" for row in args.rows)
    lines = [f"seed {args.seed}, {args.num_samples} samples, sampling seed 0; ratios against {table[0][0]}", "",
             f"| config | steps | {header} |", "|---|---|" + "---|---|" * len(args.rows)]
    for name, run, scores in table:
        cells = " | ".join(f"{scores[r]['digits_fd']:.3f} ({scores[r]['digits_fd'] / reference[r]['digits_fd']:.2f}x)"
                           f" | {scores[r]['pixel_fd']:.3f} ({scores[r]['pixel_fd'] / reference[r]['pixel_fd']:.2f}x)"
                           for r in args.rows)
        lines.append(f"| {name} `{shlex.join(run['flags'])}` | {run['steps']} | {cells} |")
    floors = " | ".join(f"{reference[r]['digits_floor']:.3f} | {reference[r]['pixel_floor']:.3f}" for r in args.rows)
    lines.append(f"| real-vs-real floor | | {floors} |")
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True, help='NAME:"FLAGS" or NAME:"FLAGS":STEPS')
    p.add_argument("--steps", type=int, default=2000, help="default step budget of a config")
    p.add_argument("--rows", nargs="+", default=["ddpm250", "dpm25"], choices=tuple(ROW_CHOICES))
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default="screen-configs")
    return p.parse_args()


if __name__ == "__main__":
    main(parse_args())
