"""Progressive distillation of a digits model: its students (every round's, from --distill_start_steps / 2 down to 1
DDIM step; 16, 8, 4, 2, 1 from the default start of 32) against the teacher's own samplers (DDPM 1000 and 250,
DPM-Solver++ 25 and 10, undistilled DDIM at the first round's teacher's step count and at 16, 8 and 4), all scored in
the same run on the same number of samples from the same sampling seeds, with sampling seconds and the
distillation's wall time. The reference is the teacher with 1000-step DDPM.

    accelerate launch --quiet train_ddpm.py --output_dir ddpm-digits-16             # the teacher: the default model
    python benchmarks/distillation.py --teacher ddpm-digits-16 --output_dir ddpm-digits-16-distilled
    python benchmarks/distillation.py --teacher ddpm-digits-16 --distilled ddpm-digits-16-distilled  # score only

The distillation is train_ddpm.py --task distill with its defaults except --distill_steps 1 (so also the 2- and
1-step students) and no evaluation during the run (this script scores every model itself). Rounds are independent of
the ones after them, so the default run, which stops at 4 steps, is this run up to the end of its 4-step round: its
wall time is read there. Students are loaded as a user loads them, `DiffusionPipeline.from_pretrained(round-N)` (a
stock DDIMPipeline), and sampled with `num_inference_steps=N`.
Goals (issue 16): the 4-step student within 10% of the teacher's DDPM-1000 Frechet distance, the 8-step within 5%,
the default distillation under 30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENT_STEPS = (16, 8, 4, 2, 1)
# (label, sampler, steps) of the teacher, with its saved scheduler config
TEACHER_ROWS = [("DDPM", "ddpm", 1000), ("DDPM", "ddpm", 250), ("DPM-Solver++", "dpm", 25),
                ("DPM-Solver++", "dpm", 10), ("DDIM", "ddim", 16), ("DDIM", "ddim", 8), ("DDIM", "ddim", 4)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="ddpm-digits-16", help="a 1-channel 16x16 DDPMPipeline folder")
    p.add_argument("--output_dir", default=None, help="where the distillation writes (default: TEACHER-distilled)")
    p.add_argument("--distilled", default=None, help="score this finished distillation instead of running one")
    p.add_argument("--distill_flags", default="", help="more train_ddpm.py flags for the distillation, one string")
    p.add_argument("--start_steps", type=int, default=None,
                   help="with --distilled: the --distill_start_steps it was made with (its teacher's DDIM row; "
                        "default: train_ddpm.py's)")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="sampling seeds: each row is scored once per seed and the table gives mean +- std (at 256 "
                        "samples one seed's digits FD varies by about 1.8 from seed to seed)")
    p.add_argument("--output", default=None, help="also write the rows as JSON")
    return p.parse_args()


def distill(args: argparse.Namespace) -> tuple[Path, dict]:
    """Run the distillation to 1 step; returns its folder and timings (wall seconds to the end of each round)."""
    import train_ddpm

    output_dir = Path(args.output_dir or f"{Path(args.teacher).resolve().name}-distilled")
    argv = ["--task", "distill", "--teacher", args.teacher, "--output_dir", str(output_dir), "--distill_steps", "1",
            "--eval_epochs", "0", "--overwrite_output_dir", *args.distill_flags.split()]
    flags = train_ddpm.parse_args(argv)
    summary = train_ddpm.main(flags)
    rounds = [flags.distill_start_steps >> k for k in range(1, len(summary.phase_seconds) + 1)]
    timings = {"wall_seconds": summary.wall_seconds, "round_seconds": dict(zip(rounds, summary.phase_seconds)),
               "start_steps": flags.distill_start_steps, "round_steps": flags.distill_round_steps}
    return output_dir, timings


def default_start_steps() -> int:
    """train_ddpm.py's default --distill_start_steps, read from its parser rather than repeated here."""
    import train_ddpm

    return train_ddpm.parse_args(["--task", "distill", "--teacher", "unused"]).distill_start_steps


def score(pipeline, steps: int, args: argparse.Namespace, classifier) -> dict:
    """Digits metrics and pixel-PCA distance of --num_samples images per sampling seed, each averaged over
    --seeds (with their standard deviation as `fd_std`, `pixel_fd_std`), and the mean sampling seconds."""
    runs = [score_one(pipeline, steps, args.num_samples, seed, classifier) for seed in args.seeds]
    mean = {key: statistics.mean(run[key] for run in runs) for key in runs[0] if key != "classes_covered"}
    std = {f"{key}_std": statistics.stdev(run[key] for run in runs) if len(runs) > 1 else 0.0
           for key in ("fd", "pixel_fd")}
    return {**mean, **std, "steps": steps, "classes_covered": min(run["classes_covered"] for run in runs),
            "per_seed_fd": [run["fd"] for run in runs], "per_seed_pixel_fd": [run["pixel_fd"] for run in runs]}


def score_one(pipeline, steps: int, num_samples: int, seed: int, classifier) -> dict:
    """Digits metrics and pixel-PCA distance of num_samples images from one sampling seed, with the seconds."""
    from ddpm_hub.evaluation import digits_metrics
    from ddpm_hub.evaluation.pixel_pca import pixel_metrics
    from ddpm_hub.pixels import quantize, to_nchw
    from ddpm_hub.sampling import generate

    started = time.perf_counter()
    images = quantize(to_nchw(generate(pipeline, num_samples, num_inference_steps=steps, batch_size=256, seed=seed)))
    seconds = time.perf_counter() - started
    digits, pixels = digits_metrics(images, classifier=classifier, seed=seed), pixel_metrics(images, seed=seed)
    return {"seconds": seconds, "pixel_fd": pixels["fd"], "pixel_fd_floor": pixels["fd_floor"],
            **{key: digits[key] for key in ("fd", "fd_floor", "fd_ratio", "confidence", "classes_covered")}}


def main(args: argparse.Namespace) -> list[dict]:
    from diffusers import DiffusionPipeline

    from ddpm_hub.evaluation import load_digits_classifier
    from ddpm_hub.export import load_pipeline_parts
    from ddpm_hub.sampling import sampling_pipeline

    unet, scheduler = load_pipeline_parts(args.teacher, "--teacher")  # checks the teacher before the long run
    timings = {}
    distilled = Path(args.distilled) if args.distilled else None
    if distilled is None:
        distilled, timings = distill(args)
    classifier = load_digits_classifier()
    rows = []
    start = timings.get("start_steps") or args.start_steps or default_start_steps()
    # the start's own DDIM row (32, the default start) where TEACHER_ROWS lacks it
    start_row = [] if ("DDIM", "ddim", start) in TEACHER_ROWS else [("DDIM", "ddim", start)]
    for label, kind, steps in [*TEACHER_ROWS[:4], *start_row, *TEACHER_ROWS[4:]]:
        rows.append({"model": "teacher", "sampler": label, **score(sampling_pipeline(unet, scheduler.config, kind),
                                                                    steps, args, classifier)})
        print(f"  teacher {label} {steps}: FD {rows[-1]['per_seed_fd']} in {rows[-1]['seconds']:.1f}s", file=sys.stderr)
        save_rows(rows, timings, args)
    for steps in STUDENT_STEPS:
        folder = distilled / f"round-{steps}"
        if not folder.is_dir():
            continue
        pipeline = DiffusionPipeline.from_pretrained(folder)  # stock diffusers: a DDIMPipeline
        pipeline.set_progress_bar_config(disable=True)
        rows.append({"model": f"round-{steps}", "sampler": "distilled DDIM", **score(pipeline, steps, args,
                                                                                      classifier)})
        print(f"  student {steps}: FD {rows[-1]['per_seed_fd']} in {rows[-1]['seconds']:.1f}s", file=sys.stderr)
        save_rows(rows, timings, args)
    print(format_table(rows, timings, args))
    return rows


def save_rows(rows: list[dict], timings: dict, args: argparse.Namespace) -> None:
    """--output (if given) with the rows so far: a long run that stops early keeps what it scored."""
    if args.output:
        from ddpm_hub.atomic import atomic_write_text

        atomic_write_text(Path(args.output), json.dumps({"rows": rows, "timings": timings}, indent=2) + "\n")


def format_table(rows: list[dict], timings: dict, args: argparse.Namespace) -> str:
    reference = rows[0]
    lines = [(f"teacher {args.teacher}, {args.num_samples} samples per row, sampling seeds {args.seeds} "
              "(mean ± std over them); digits FD floor "
              f"{reference['fd_floor']:.2f}, pixel-PCA FD floor {reference['pixel_fd_floor']:.2f}; reference: "
              "teacher DDPM 1000"), "",
             ("| model | sampler | steps | FD | FD / DDPM 1000 | FD / floor | pixel FD | pixel FD / DDPM 1000 | "
              "confidence | classes | seconds | speed-up |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['fd']:.2f} ± {r['fd_std']:.2f} | "
                     f"{r['fd'] / reference['fd']:.2f}x | {r['fd_ratio']:.2f}x | "
                     f"{r['pixel_fd']:.2f} ± {r['pixel_fd_std']:.2f} | {r['pixel_fd'] / reference['pixel_fd']:.2f}x | "
                     f"{r['confidence']:.3f} | {r['classes_covered']}/10 | {r['seconds']:.2f} | "
                     f"{reference['seconds'] / r['seconds']:.0f}x |")
    students = {r["steps"]: r for r in rows if r["model"].startswith("round-")}
    lines.append("")
    for steps, limit in ((4, 1.10), (8, 1.05)):
        if steps in students:
            ratio = students[steps]["fd"] / reference["fd"]
            lines.append(f"goal: {steps}-step student within {limit - 1:.0%} of DDPM 1000's FD: "
                         f"{'met' if ratio <= limit else 'missed'} ({ratio:.2f}x; pixel-PCA "
                         f"{students[steps]['pixel_fd'] / reference['pixel_fd']:.2f}x)")
    if timings:
        rounds = timings["round_seconds"]
        lines.append(f"distillation: {timings['start_steps']} -> 1 steps, {timings['round_steps']} updates per round, "
                     f"{timings['wall_seconds'] / 60:.1f} min in all; rounds ended at "
                     + ", ".join(f"{n} steps {s / 60:.1f} min" for n, s in rounds.items()))
        if 4 in rounds:
            lines.append(f"goal: the default distillation (to 4 steps) under 30 minutes: "
                         f"{'met' if rounds[4] < 1800 else 'missed'} ({rounds[4] / 60:.1f} min)")
    return "\n".join(lines)


if __name__ == "__main__":
    main(parse_args())
