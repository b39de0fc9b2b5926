"""Classifier-free guidance on the digits: a class-conditional model at several guidance scales against an
unconditional model trained at the same budget (the reference, measured in the same run), in two feature spaces.

    accelerate launch --quiet train_ddpm.py --output_dir ddpm-digits-16                     # the reference
    accelerate launch --quiet train_ddpm.py --class_conditional                             # same budget, by class
    python benchmarks/class_conditional.py --model ddpm-digits-16-class-conditional --reference ddpm-digits-16

Every row draws --num_samples images per seed with the same sampler and steps (default DPM-Solver++ 25, the
evaluation's), built from each model's saved scheduler config: the class-conditional rows with balanced classes
(class i % 10 for image i), the reference unconditionally. Scores (averaged over --seeds): class adherence (the digits
classifier's accuracy against the requested class; the reference requests none), the Frechet digits distance and the
pixel-PCA distance (`ddpm_hub.evaluation`), each with its ratio to the reference's. Goal (issue 11): at the default
guidance, adherence >= 0.98 and neither distance worse than the reference's; adherence above guidance 1 beats
guidance 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("adherence", "fd", "fd_floor", "pixel_fd", "pixel_fd_floor", "confidence")


def parse_args() -> argparse.Namespace:
    from ddpm_hub.sampling import SAMPLERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ddpm-digits-16-class-conditional", help="a class-conditional digits folder")
    p.add_argument("--reference", default="ddpm-digits-16", help="an unconditional digits folder, same budget")
    p.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    p.add_argument("--num_samples", type=int, default=512)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--scheduler", default="dpm", choices=SAMPLERS)
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--output", default=None, help="also write the rows as JSON")
    return p.parse_args()


def main(args: argparse.Namespace) -> list[dict]:
    from ddpm_hub import ClassConditionalDDPMPipeline
    from ddpm_hub.evaluation import digits_metrics, load_digits_classifier
    from ddpm_hub.evaluation.class_conditional import guided_sample_metrics
    from ddpm_hub.evaluation.pixel_pca import pixel_metrics
    from ddpm_hub.export import load_pipeline_parts
    from ddpm_hub.pixels import quantize, to_nchw
    from ddpm_hub.sampling import class_conditional_pipeline, generate, sampling_pipeline

    classifier = load_digits_classifier()
    unet, scheduler = load_pipeline_parts(args.reference, "--reference")
    reference = sampling_pipeline(unet, scheduler.config, args.scheduler)
    loaded = ClassConditionalDDPMPipeline.from_pretrained(args.model)
    model = class_conditional_pipeline(loaded.unet.eval(), loaded.scheduler.config, args.scheduler, loaded.id2label)

    def unconditional(seed: int) -> dict:
        images = generate(reference, args.num_samples, num_inference_steps=args.num_inference_steps,
                          batch_size=args.batch_size, seed=seed)
        pixels = quantize(to_nchw(images))
        scores, pixel = digits_metrics(pixels, classifier=classifier, seed=seed), pixel_metrics(pixels, seed=seed)
        return {"adherence": None, "fd": scores["fd"], "fd_floor": scores["fd_floor"], "pixel_fd": pixel["fd"],
                "pixel_fd_floor": pixel["fd_floor"], "confidence": scores["confidence"]}

    rows = [("unconditional (reference)", unconditional)]
    rows += [(f"guidance {scale:g}", lambda seed, scale=scale: guided_sample_metrics(
        model, scale, args.num_samples, args.num_inference_steps, seed, classifier, args.batch_size))
        for scale in args.guidance_scales]
    results = []
    for name, score in rows:
        started = time.perf_counter()
        per_seed = [score(seed) for seed in args.seeds]
        seconds = (time.perf_counter() - started) / len(args.seeds)
        row = {"row": name, "seconds": seconds, "per_seed": per_seed}
        for key in KEYS:
            values = [s[key] for s in per_seed if s[key] is not None]
            row[key] = float(np.mean(values)) if values else None
        row["fd_spread"] = [float(min(s["fd"] for s in per_seed)), float(max(s["fd"] for s in per_seed))]
        results.append(row)
        print(f"  {name}: FD {row['fd']:.2f}, pixel FD {row['pixel_fd']:.2f} in {seconds:.1f}s per seed",
              file=sys.stderr, flush=True)
    print(format_table(results, args))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: list[dict], args: argparse.Namespace) -> str:
    ref = results[0]
    lines = [f"model {args.model} vs reference {args.reference}; {args.num_samples} samples per row and seed, seeds "
             f"{args.seeds}, {args.scheduler} {args.num_inference_steps} steps; floors: digits FD "
             f"{ref['fd_floor']:.2f}, pixel FD {ref['pixel_fd_floor']:.2f}",
             "",
             "| row | class adherence | digits FD | / reference | pixel-PCA FD | / reference | confidence | seconds "
             "per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        adherence = "-" if r["adherence"] is None else f"{r['adherence']:.3f}"
        lines.append(f"| {r['row']} | {adherence} | {r['fd']:.2f} | {r['fd'] / ref['fd']:.2f}x | "
                     f"{r['pixel_fd']:.2f} | {r['pixel_fd'] / ref['pixel_fd']:.2f}x | {r['confidence']:.3f} | "
                     f"{r['seconds']:.1f} |")
    guided = results[1:]
    good = [r for r in guided if r["adherence"] >= 0.98 and r["fd"] <= ref["fd"] and r["pixel_fd"] <= ref["pixel_fd"]]
    lines += ["", "guidance settings with adherence >= 0.98 and both distances no worse than the reference: "
              + (", ".join(r["row"] for r in good) or "none")]
    first = next((r for r in guided if r["row"] == "guidance 1"), None)
    if first is not None:
        above = [r for r in guided if r is not first and r["adherence"] > first["adherence"]]
        beating = ", ".join(r["row"] for r in above) or "none"
        lines.append(f"guidance above 1 beating guidance 1 on adherence: {beating}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(parse_args())
