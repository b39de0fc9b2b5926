"""Benchmark: a full 1000-step DDPM sampling loop with `ddpm_hub.DDPMScheduler` vs `diffusers.DDPMScheduler`.

What it measures
    The wall time of one sampling loop, timed with `time.perf_counter`:

        scheduler.set_timesteps(1000)
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x, generator=g).prev_sample

    with the trivial model `model = lambda x, t: 0.1 * x`. The model costs the same for both schedulers, so the
    ratio ours/diffusers measures the schedulers. A second row per batch times the loop without `set_timesteps`
    (`for t in reversed(range(1000))`, Python int timesteps), because diffusers takes a different (cheaper)
    path there: it finds the previous timestep as `t - 1` instead of searching `self.timesteps`.

    Batches: "small" 4 x 3 x 16 x 16 (per-step Python/dispatch overhead dominates) and "large" 64 x 3 x 32 x 32
    (the per-step noise draw dominates). Both schedulers use the default config (linear betas, fixed_small
    variance, epsilon prediction, clip_sample=True).

How it measures
    Each scheduler runs once as a warm-up, then `--repeats` times (default 5), alternating ours/diffusers
    within every repeat and swapping which goes first on each repeat, so machine noise hits both alike.
    The table reports the median, and "spread" = (max - min) / median over the repeats (the worse of the two
    schedulers); a spread above 20% means the machine was busy (another process on the cores): re-run.
    torch's thread count is left at its default and printed in the header. The large batch runs torch's
    multi-threaded kernels, so it is the row most disturbed when another process shares the cores.

Correctness
    With the same seed (same start x, fresh generator per loop), the final x of ours and diffusers must be
    equal: torch.equal, or max |diff| <= 1e-6. The worst difference over all runs is printed in the table and
    the script exits 1 if any row fails; otherwise it exits 0 (missing a speed goal does not fail the run).

Goals
    ours <= 0.5x diffusers' time on the small batch; ours never slower (<= 1.0x) than diffusers on the
    large batch. The table marks each row "met" or "MISSED".

Run
    python benchmarks/scheduler_step.py             # default: 5 repeats
    python benchmarks/scheduler_step.py --quick     # 1 repeat, for smoke runs
    python benchmarks/scheduler_step.py --repeats 11
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

# run from a checkout without installing: `python benchmarks/scheduler_step.py` puts benchmarks/ on sys.path,
# not the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffusers  # noqa: E402
from diffusers import DDPMScheduler as DiffusersDDPMScheduler  # noqa: E402

from ddpm_hub import DDPMScheduler  # noqa: E402

NUM_STEPS = 1000
TOLERANCE = 1e-6
SEED = 0
CASES: dict[str, tuple[int, ...]] = {"small": (4, 3, 16, 16), "large": (64, 3, 32, 32)}
GOALS: dict[str, float] = {"small": 0.5, "large": 1.0}  # max ratio ours/diffusers
NOISY_SPREAD = 0.2  # (max - min) / median of the repeats above which the timings are flagged as noisy
LOOPS = ("set_timesteps", "no set_timesteps")

Scheduler = DDPMScheduler | DiffusersDDPMScheduler


def model(x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """The trivial 'model': the same cost for both schedulers."""
    return 0.1 * x


def sample_loop(scheduler: Scheduler, x: torch.Tensor, generator: torch.Generator, use_set_timesteps: bool
                ) -> torch.Tensor:
    """The sampling loop being timed; returns the final x."""
    if use_set_timesteps:
        scheduler.set_timesteps(NUM_STEPS)
        timesteps = scheduler.timesteps
    else:
        timesteps = reversed(range(NUM_STEPS))
    for t in timesteps:
        x = scheduler.step(model(x, t), t, x, generator=generator).prev_sample
    return x


def timed_loop(scheduler: Scheduler, shape: tuple[int, ...], use_set_timesteps: bool) -> tuple[float, torch.Tensor]:
    """One loop from a seeded start: (seconds, final x). Setup (start x, generator) is outside the timing."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(shape, generator=generator)
    start = time.perf_counter()
    x = sample_loop(scheduler, x, generator, use_set_timesteps)
    return time.perf_counter() - start, x


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.0 if torch.equal(a, b) else float((a - b).abs().max())


@dataclass
class Row:
    case: str
    shape: tuple[int, ...]
    loop: str
    diffusers_s: float
    ours_s: float
    max_diff: float
    spread: float

    @property
    def ratio(self) -> float:
        return self.ours_s / self.diffusers_s

    @property
    def correct(self) -> bool:
        return self.max_diff <= TOLERANCE  # nan compares False

    @property
    def goal_met(self) -> bool:
        return self.ratio <= GOALS[self.case]


def relative_spread(times: list[float]) -> float:
    """(max - min) / median: 0 for a single repeat."""
    return (max(times) - min(times)) / statistics.median(times)


def bench_case(case: str, shape: tuple[int, ...], loop: str, repeats: int) -> Row:
    """Warm up both schedulers, then `repeats` alternating runs; medians and the worst max |diff|."""
    use_set_timesteps = loop == "set_timesteps"
    runners: dict[str, Callable[[], tuple[float, torch.Tensor]]] = {
        name: (lambda s=scheduler: timed_loop(s, shape, use_set_timesteps))
        for name, scheduler in (("ours", DDPMScheduler()), ("diffusers", DiffusersDDPMScheduler()))
    }
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    worst = 0.0
    for repeat in range(repeats + 1):  # repeat 0 is the warm-up (checked, not timed)
        order = ("ours", "diffusers") if repeat % 2 == 0 else ("diffusers", "ours")
        results = {name: runners[name]() for name in order}
        diff = max_abs_diff(results["ours"][1], results["diffusers"][1])
        worst = diff if diff != diff else max(worst, diff)  # keep a nan
        if repeat > 0:
            for name in order:
                times[name].append(results[name][0])
    return Row(case, shape, loop, statistics.median(times["diffusers"]), statistics.median(times["ours"]), worst,
               max(relative_spread(times["diffusers"]), relative_spread(times["ours"])))


def print_header(repeats: int) -> None:
    print(f"DDPM sampling loop, {NUM_STEPS} steps, model = 0.1 * x; median of {repeats} repeat(s) after 1 warm-up")
    print(f"torch {torch.__version__}  diffusers {diffusers.__version__}  "
          f"torch.get_num_threads() = {torch.get_num_threads()}  python {sys.version.split()[0]}")
    print(f"goals: ours/diffusers <= {GOALS['small']:.2f}x on 'small', <= {GOALS['large']:.2f}x on 'large'; "
          f"correctness: max |diff| <= {TOLERANCE:g}")
    print()


def print_table(rows: list[Row]) -> None:
    header = (f"{'case':<6} {'batch shape':<11} {'loop':<16} {'diffusers ms':>12} {'ours ms':>8} "
              f"{'ours/diffusers':>14} {'diffusers us/step':>17} {'ours us/step':>12} {'max |diff|':>10} "
              f"{'spread':>6} goal")
    print(header)
    print("-" * (len(header) + len(" MISSED") + 2))
    for r in rows:
        shape = "x".join(map(str, r.shape))
        goal = f"<={GOALS[r.case]:.2f} {'met' if r.goal_met else 'MISSED'}"
        print(f"{r.case:<6} {shape:<11} {r.loop:<16} {r.diffusers_s * 1e3:>12.1f} {r.ours_s * 1e3:>8.1f} "
              f"{r.ratio:>13.3f}x {r.diffusers_s * 1e6 / NUM_STEPS:>17.1f} {r.ours_s * 1e6 / NUM_STEPS:>12.1f} "
              f"{r.max_diff:>10.2e} {r.spread:>6.0%} {goal}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per scheduler (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 repeat: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args.repeats)
    rows = [bench_case(case, shape, loop, args.repeats) for case, shape in CASES.items() for loop in LOOPS]
    print_table(rows)
    noisy = [f"{r.case}/{r.loop}" for r in rows if r.spread > NOISY_SPREAD]
    if noisy:
        print(f"\nnote: timings noisy (spread > {NOISY_SPREAD:.0%}) in {', '.join(noisy)}: the cores were probably "
              f"shared with another process; re-run on an idle machine")
    failed = [r for r in rows if not r.correct]
    if failed:
        print(f"\nFAIL: final x differs from diffusers' by more than {TOLERANCE:g} in "
              f"{', '.join(f'{r.case}/{r.loop}' for r in failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
