"""Pictures of the forward process q(x_t|x_0) (notes 001/002), for README and for learners.

    python -m ddpm_hub.visualize --output_dir pictures

writes `forward_process.png`: one built-in digit at t = 0, 100, ..., 1000, each panel labelled with the notes'
sqrt(abar_t) (how much of x_0 is left) and SNR(t) = abar_t / (1 - abar_t).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .scheduling_ddpm import DDPMScheduler


def forward_process_figure(image: torch.Tensor, scheduler: DDPMScheduler, timesteps: list[int], path: str | Path,
                           seed: int = 0) -> Path:
    """Save x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) z for each t (one shared z), labelled, as a PNG.

    Args: image: x_0, (C, H, W) in [-1, 1]; timesteps: 0-based diffusers timesteps ("t=1000" is t index 999).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(1, len(timesteps), figsize=(1.4 * len(timesteps), 2.0))
    for ax, t in zip(axes, timesteps):
        x_t = scheduler.add_noise(image[None], noise[None], torch.tensor([t]))[0]
        pixels = ((x_t.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1)
        abar = float(scheduler.alphas_cumprod[t])
        ax.set_title(f"t={t + 1}\n√ᾱ={abar ** 0.5:.3f}\nSNR={float(scheduler.snr(torch.tensor(t))):.2g}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="pictures", help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--beta_schedule", default="linear", help="scheduler beta_schedule (default: %(default)s)")
    parser.add_argument("--index", type=int, default=0, help="which built-in digit to show (default: %(default)s)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    from .data import load_image_dataset

    dataset = load_image_dataset("digits", resolution=32)
    scheduler = DDPMScheduler(beta_schedule=args.beta_schedule)
    os.makedirs(args.output_dir, exist_ok=True)
    timesteps = [0] + [t - 1 for t in range(100, 1001, 100)]
    path = forward_process_figure(dataset[args.index], scheduler, timesteps,
                                  Path(args.output_dir) / "forward_process.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(parse_args())
