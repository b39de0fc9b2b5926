"""Pictures of the forward process q(x_t|x_0) and the reverse process p_theta(x_{t-1}|x_t) (notes 001/002/004).

    python -m ddpm_hub.visualize --output_dir pictures                      # forward process only
    python -m ddpm_hub.visualize --output_dir pictures --model ddpm-digits-16

writes `forward_process.png`: one built-in digit x_0 and x_t at t = T/10, ..., T, each panel labelled with the
notes' sqrt(abar_t) (how much of x_0 is left) and SNR(t) = abar_t / (1 - abar_t); with --model, the forward process
is the model's own (its saved schedule, at its resolution and channels), and `reverse_process.png` shows, for a few
seeds, x_T (pure noise) denoised step by step to x_0 by the trained model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .cli import HelpFormatter, OneLineParser, run_cli
from .errors import InputError
from .scheduling_ddpm import DDPMScheduler


def _pixels(x: torch.Tensor):
    """(C, H, W) in [-1, 1] -> an (H, W) or (H, W, C) array in [0, 1] for imshow."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).squeeze(-1).numpy()


def _save_panels(rows: list[list[tuple[torch.Tensor, str]]], path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a grid of labelled image panels (rows of (image (C, H, W) in [-1, 1], title)) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.4 * ncols, 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                image, title = row[c]
                pixels = _pixels(image)
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def forward_process_figure(image: torch.Tensor, scheduler: DDPMScheduler, timesteps: list[int], path: str | Path,
                           seed: int = 0) -> Path:
    """x_0, then x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) z for each t (one shared z), labelled, as a PNG.

    Args: image: x_0, (C, H, W) in [-1, 1]; timesteps: 0-based diffusers timesteps (index 999 is the notes' t=1000).
    """
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    panels = [(image, "x_0\n√ᾱ=1\nSNR=∞")]
    for t in timesteps:
        x_t = scheduler.add_noise(image[None], noise[None], torch.tensor([t]))[0]
        abar = float(scheduler.alphas_cumprod[t])
        panels.append((x_t, f"t={t + 1}\n√ᾱ={abar ** 0.5:.3f}\nSNR={float(scheduler.snr(torch.tensor(t))):.2g}"))
    return _save_panels([panels], path)


@torch.no_grad()
def reverse_process_figure(unet, scheduler: DDPMScheduler, path: str | Path, seeds: tuple[int, ...] = (0, 1, 2, 3),
                           num_panels: int = 11) -> Path:
    """For each seed, the DDPM reverse chain (note 004) from x_T ~ N(0, I) to x_0, shown at num_panels steps."""
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    shown = set(torch.linspace(0, len(scheduler.timesteps) - 1, num_panels - 1).round().long().tolist())
    size = unet.config.sample_size
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]  # one stream per row, batched
    x = torch.cat([torch.randn(1, unet.config.in_channels, size, size, generator=g) for g in generators])
    rows = [[(x[r], f"x_T\nseed {seed}")] for r, seed in enumerate(seeds)]
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(unet(x, t).sample, t, x, generator=generators).prev_sample
        if i in shown:
            for r, row in enumerate(rows):
                row.append((x[r], f"x_{int(scheduler.previous_timestep(t)) + 1}"))
    return _save_panels(rows, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ddpm_hub.visualize", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="pictures", help="where the PNGs go")
    parser.add_argument("--beta_schedule", default=None,
                        help="forward-process beta_schedule without --model (default: linear, the notes' DDPM); "
                             "with --model the model's own schedule is drawn")
    parser.add_argument("--resolution", type=int, default=None,
                        help="size of the digit without --model (default: 32); with --model the model's")
    parser.add_argument("--index", type=int, default=0, help="which built-in digit to show")
    parser.add_argument("--model", default=None, help="a DDPMPipeline folder: its forward and reverse process")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[Path]:
    from .data import load_image_dataset
    from .export import load_pipeline_parts

    for name in ("beta_schedule", "resolution"):
        if args.model is not None and getattr(args, name) is not None:
            raise InputError(f"--{name} contradicts --model: the model's own {name.replace('_', ' ')} is drawn; "
                             "drop one of them")
    unet, scheduler = load_pipeline_parts(args.model) if args.model is not None else \
        (None, DDPMScheduler(beta_schedule=args.beta_schedule or "linear"))
    resolution = int(unet.config.sample_size) if unet is not None else args.resolution or 32
    channels = unet.config.in_channels if unet is not None else 1
    dataset = load_image_dataset("digits", resolution=resolution, num_channels=channels)
    if not 0 <= args.index < len(dataset):
        raise InputError(f"--index {args.index} must be between 0 and {len(dataset) - 1}")
    T = scheduler.config.num_train_timesteps
    timesteps = sorted({max(round(T * k / 10), 1) - 1 for k in range(1, 11)})
    os.makedirs(args.output_dir, exist_ok=True)
    written = [forward_process_figure(dataset[args.index], scheduler, timesteps,
                                      Path(args.output_dir) / "forward_process.png")]
    if unet is not None:
        written.append(reverse_process_figure(unet, scheduler, Path(args.output_dir) / "reverse_process.png"))
    for path in written:
        print(f"wrote {path}")
    return written


def cli(argv: list[str] | None = None) -> int:
    """Run main; a user mistake prints one line and exits 2, anything else keeps its traceback."""
    return run_cli("python -m ddpm_hub.visualize", main, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
