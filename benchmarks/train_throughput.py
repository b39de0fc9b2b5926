"""Training throughput: our train_ddpm.py loop vs a reference loop written the way diffusers'
examples/unconditional_image_generation/train_unconditional.py trains, in the same run on this machine.

    python benchmarks/train_throughput.py              # default: 60 steps each, 2 rounds, batch 64
    python benchmarks/train_throughput.py --quick      # 15 steps, 1 round

Both loops train the same UNet2DModel config (ddpm_hub's CPU default), the same batch size, on the same data
(the 1437 digits of the built-in train split at 16x16), with AdamW, EMA, grad clipping at 1.0 and a cosine LR
schedule, and both log every step to tensorboard as they do by default. The reference is the diffusers-example-style
loop of benchmarks/default_vs_example.py: images decoded and transformed per item with PIL in a datasets
`set_transform`, linear betas, epsilon, plain MSE, the default (for-loop) AdamW, `accelerator.log` (which flushes
the event file) every step. Ours is `train_ddpm.main` itself (cosine betas, v-prediction, min-SNR-5 weights: a
few per-sample multiplications more). Each loop runs in its own subprocess so its peak memory (ru_maxrss) is its
own; rounds alternate reference/ours. Images/s counts the optimisation loop with data loading, not the start-up,
checkpoints or sampling. Goal (issue 15): ours >= the reference at the same batch size, with default logging on.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def reference_loop(steps: int, batch_size: int, seed: int, mixed_precision: str) -> float:
    """The diffusers-example-style loop of benchmarks/default_vs_example.py for `steps` steps, logging every step to
    tensorboard through accelerate as the example does (mixed precision: fp32 only, as the example's default).
    Returns images/s while training."""
    from default_vs_example import example_loop

    with tempfile.TemporaryDirectory() as tmp:
        return example_loop(None, Path(tmp), seed, "tensorboard", max_steps=steps,
                            batch_size=batch_size)["images_per_second"]


def ours_loop(steps: int, batch_size: int, seed: int, mixed_precision: str) -> float:
    """train_ddpm.main with its default logging (tensorboard, every step), checkpoints, sample grids, evaluation and
    export pushed past the end. Returns images/s while training."""
    import train_ddpm

    with tempfile.TemporaryDirectory() as tmp:
        args = train_ddpm.parse_args([
            "--output_dir", tmp, "--max_train_steps", str(steps), "--train_batch_size", str(batch_size),
            "--seed", str(seed), "--checkpointing_steps", str(10 * steps), "--eval_epochs", "0",
            "--save_images_epochs", "1000", "--save_model_epochs", "1000", "--eval_batch_size", "1",
            "--ddpm_num_inference_steps", "1", "--mixed_precision", mixed_precision])
        return train_ddpm.main(args).images_per_second


def run_one(which: str, steps: int, batch_size: int, mixed_precision: str) -> None:
    """Child process: run one loop and print a JSON line with images/s and peak RSS."""
    loop = reference_loop if which == "reference" else ours_loop
    images_per_second = loop(steps, batch_size, 0, mixed_precision if which == "ours" else "no")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": which, "images_per_second": images_per_second, "peak_rss_mib": peak_mib}))


def measure(which: str, steps: int, batch_size: int, mixed_precision: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", which, "--steps", str(steps),
                             "--batch_size", str(batch_size), "--mixed_precision", mixed_precision],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per loop (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=64, help="batch size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="15 steps, 1 round")
    parser.add_argument("--mixed_precision", default="no", choices=("no", "bf16"),
                        help="autocast precision of ours (the reference runs fp32, as the example's default)")
    parser.add_argument("--child", choices=("reference", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.steps, args.batch_size, args.mixed_precision)
        return
    if args.quick:
        args.steps, args.rounds = 15, 1

    import torch

    results = {"reference": [], "ours": []}
    for _ in range(args.rounds):
        for which in ("reference", "ours"):
            results[which].append(measure(which, args.steps, args.batch_size, args.mixed_precision))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds; ours in {args.mixed_precision.replace('no', 'fp32')}; "
          "UNet: ddpm_hub default at 16x16, 1 channel")
    print(f"{'loop':<40} {'images/s (median)':>18} {'peak RSS MiB':>13} {'ratio':>7}")
    reference = statistics.median(r["images_per_second"] for r in results["reference"])
    names = {"reference": "reference (train_unconditional.py style)", "ours": "ours (train_ddpm.py)"}
    for which in ("reference", "ours"):
        speed = statistics.median(r["images_per_second"] for r in results[which])
        peak = max(r["peak_rss_mib"] for r in results[which])
        print(f"{names[which]:<40} {speed:>18.1f} {peak:>13.0f} {speed / reference:>6.2f}x")


if __name__ == "__main__":
    main()
