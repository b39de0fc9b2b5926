"""Sample quality vs sampling steps: DDPM 1000/250/100, DDIM 50/25, DPM-Solver++ 25/10 on one trained model,
scored with the offline digits metrics (ddpm_hub.evaluation.digits_metrics), with wall time; the reference is
DDPM with all 1000 steps (the exported pipeline's own sampler), measured in the same run.

    accelerate launch train_ddpm.py                                   # the default model, ddpm-digits-16
    python benchmarks/sampling_quality.py --model ddpm-digits-16      # 512 samples per row, ~15 min on 2 cores
    python benchmarks/sampling_quality.py --model ddpm-digits-16 --num_samples 128 --quick   # few-step rows only

Each row samples --num_samples images from the same seed with the sampler built from the model's saved scheduler
config, the way a user swaps it in (`DDIMScheduler.from_config(pipe.scheduler.config)`), so with the saved
timestep_spacing (train_ddpm.py saves "trailing": steps end at t = T - 1, as Lin et al. 2024 recommend for few
steps); the rows marked "leading" override it with diffusers' default, whose last step starts at T - T/n.
Goal (issue 4): some sampler at <= 25 steps within 10% of DDPM-1000's Frechet distance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, sampler, steps, timestep_spacing or None for the saved config's)
ROWS = [
    ("DDPM", "ddpm", 1000, None),
    ("DDPM", "ddpm", 250, None),
    ("DDPM", "ddpm", 100, None),
    ("DDIM", "ddim", 50, None),
    ("DDIM", "ddim", 25, None),
    ("DDIM leading", "ddim", 25, "leading"),
    ("DPM-Solver++", "dpm", 25, None),
    ("DPM-Solver++", "dpm", 10, None),
    ("DPM-Solver++ leading", "dpm", 25, "leading"),
    ("DPM-Solver++ leading", "dpm", 10, "leading"),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ddpm-digits-16", help="a 1-channel 16x16 DDPMPipeline folder")
    p.add_argument("--num_samples", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="skip DDPM 1000 and 250 (the reference becomes DDPM 100)")
    p.add_argument("--output", default=None, help="also write the rows as JSON")
    return p.parse_args()


def main(args: argparse.Namespace) -> list[dict]:
    from ddpm_hub.evaluation import digits_metrics, load_digits_classifier
    from ddpm_hub.export import load_pipeline_parts
    from ddpm_hub.pixels import quantize, to_nchw
    from ddpm_hub.sampling import generate, sampling_pipeline

    unet, scheduler = load_pipeline_parts(args.model)
    classifier = load_digits_classifier()
    rows = [row for row in ROWS if not (args.quick and row[1] == "ddpm" and row[2] > 100)]
    results = []
    for label, kind, steps, spacing in rows:
        config = dict(scheduler.config) if spacing is None else {**scheduler.config, "timestep_spacing": spacing}
        pipeline = sampling_pipeline(unet, config, kind)
        started = time.perf_counter()
        images = generate(pipeline, args.num_samples, num_inference_steps=steps, batch_size=args.batch_size,
                          seed=args.seed)
        seconds = time.perf_counter() - started
        scores = digits_metrics(quantize(to_nchw(images)), classifier=classifier, seed=args.seed)
        results.append({"sampler": label, "steps": steps, "seconds": seconds,
                        "timestep_spacing": pipeline.scheduler.config.timestep_spacing, **scores})
        print(f"  {label} {steps}: FD {scores['fd']:.2f} in {seconds:.1f}s", file=sys.stderr, flush=True)
    print(format_table(results, args))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: list[dict], args: argparse.Namespace) -> str:
    reference = results[0]
    ref_name = f"{reference['sampler']} {reference['steps']}"
    lines = [f"model {args.model} (saved timestep_spacing {results[0]['timestep_spacing']!r}), {args.num_samples} "
             f"samples per row, seed {args.seed}; digits FD floor "
             f"{reference['fd_floor']:.2f} ({reference['floor_reference']}); reference: {ref_name}",
             "",
             f"| sampler | steps | FD | FD / {ref_name} | FD / floor | confidence | classes | smallest share "
             f"| seconds | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['fd']:.2f} | {r['fd'] / reference['fd']:.2f}x | "
                     f"{r['fd_ratio']:.2f}x | {r['confidence']:.3f} | {r['classes_covered']}/10 | "
                     f"{r['smallest_class_share']:.3f} | {r['seconds']:.1f} | "
                     f"{reference['seconds'] / r['seconds']:.0f}x |")
    few = [r for r in results if r["steps"] <= 25]
    best = min(few, key=lambda r: r["fd"])
    verdict = "met" if best["fd"] <= 1.1 * reference["fd"] else "missed"
    lines += ["", f"goal (some sampler at <= 25 steps within 10% of {ref_name}'s FD): {verdict}; best "
                  f"{best['sampler']} {best['steps']}: {best['fd'] / reference['fd']:.2f}x"]
    return "\n".join(lines)


if __name__ == "__main__":
    main(parse_args())
