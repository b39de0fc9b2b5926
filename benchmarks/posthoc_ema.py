"""Post-hoc EMA: the weights another `--ema_power` would have exported, from one run's raw-weight checkpoints.

    accelerate launch train_ddpm.py --seed 0 --checkpointing_steps 25 --output_dir runs/snap-0
    python benchmarks/posthoc_ema.py runs/snap-0 --ema_power 0.85 --out runs/snap-0-p0.85
    python benchmarks/score_folders.py runs/snap-0 runs/snap-0-p0.85 --steps 250 --num_samples 1024 --sampling_seeds 1

The EMA does not change what the optimizer does, so one training run with frequent checkpoints holds what any EMA
setting would have given. diffusers' EMAModel with warm-up (`ddpm_hub.training.ema.make_ema`) updates after step k
(k = 1, 2, ...) with decay d_k = EMAModel.get_decay(k) = min(max_decay, 1 - (1 + (k - 1) / inv_gamma) ** -power),
d_1 = 0, so the exported weights after step n are sum_k c_k theta_k with c_k = (1 - d_k) prod_{m > k} d_m (the c_k
sum to 1). The raw weights theta_k are known only at the checkpoints; each c_k is split between the two checkpoints
around step k by linear interpolation (steps before the first checkpoint go to it). With checkpoints every 25 steps
this reproduces the run's own EMA (power 3/4) to a relative L2 distance of about 1e-4, which the script prints as
its check. The output is the run's folder with the unet replaced: a DDPMPipeline that score_folders.py samples.
"""

from __future__ import annotations

import argparse
import bisect
import shutil
from pathlib import Path


def ema_decays(num_steps: int, power: float, max_decay: float, inv_gamma: float = 1.0) -> list[float]:
    """d_k for k = 0..num_steps, from diffusers' EMAModel.get_decay as `make_ema` configures it."""
    import torch
    from diffusers.training_utils import EMAModel

    ema = EMAModel([torch.zeros(1)], decay=max_decay, use_ema_warmup=True, inv_gamma=inv_gamma, power=power)
    return [ema.get_decay(k) for k in range(num_steps + 1)]


def ema_coefficients(num_steps: int, power: float, max_decay: float, inv_gamma: float = 1.0) -> list[float]:
    """c_k for k = 0..num_steps (c_0 = 0): the weight of step k's parameters in the EMA after num_steps steps."""
    decay = ema_decays(num_steps, power, max_decay, inv_gamma)
    coefficients, later = [0.0] * (num_steps + 1), 1.0
    for k in range(num_steps, 0, -1):
        coefficients[k] = (1 - decay[k]) * later
        later *= decay[k]
    return coefficients


def checkpoint_weights(steps: list[int], coefficients: list[float]) -> dict[int, float]:
    """Each checkpoint's share of the EMA: every c_k split linearly between the checkpoints around step k."""
    weights = dict.fromkeys(steps, 0.0)
    for k in range(1, len(coefficients)):
        if k <= steps[0]:
            weights[steps[0]] += coefficients[k]
            continue
        after = bisect.bisect_left(steps, k)  # the first checkpoint at or after step k
        a, b = steps[after - 1], steps[after]
        weights[a] += coefficients[k] * (b - k) / (b - a)
        weights[b] += coefficients[k] * (k - a) / (b - a)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an exported training folder with checkpoint-N/unet folders")
    parser.add_argument("--ema_power", type=float, required=True)
    parser.add_argument("--ema_max_decay", type=float, default=0.999)
    parser.add_argument("--ema_inv_gamma", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True, help="the new pipeline folder (must not exist)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    checkpoints = sorted((int(p.name.split("-")[1]), p) for p in args.run.glob("checkpoint-*") if (p / "unet").is_dir())
    if len(checkpoints) < 2:
        raise SystemExit(f"error: {args.run} holds fewer than two checkpoint-N/unet folders")
    if args.out.exists():
        raise SystemExit(f"error: --out {args.out} exists; give a new folder")
    steps = [step for step, _ in checkpoints]
    coefficients = ema_coefficients(steps[-1], args.ema_power, args.ema_max_decay, args.ema_inv_gamma)
    weights = checkpoint_weights(steps, coefficients)
    average: dict[str, torch.Tensor] = {}
    for step, folder in checkpoints:
        for name, tensor in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")).items():
            average[name] = average.get(name, 0) + weights[step] * tensor.double()
    last = checkpoints[-1][1]
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(args.run / "scheduler", partial / "scheduler")
    shutil.copy(args.run / "model_index.json", partial / "model_index.json")
    (partial / "unet").mkdir()
    shutil.copy(last / "unet" / "config.json", partial / "unet" / "config.json")
    save_file({name: tensor.float().contiguous() for name, tensor in average.items()},
              str(partial / "unet" / "diffusion_pytorch_model.safetensors"))
    partial.rename(args.out)
    mean_age = sum(c * (steps[-1] - k) for k, c in enumerate(coefficients))
    final_decay = ema_decays(steps[-1], args.ema_power, args.ema_max_decay, args.ema_inv_gamma)[-1]
    print(f"{args.out}: power {args.ema_power}, max decay {args.ema_max_decay}, final decay "
          f"{final_decay:.5f}, mean age of the averaged weights "
          f"{mean_age:.0f} of {steps[-1]} steps, from {len(steps)} checkpoints")
    own = last / "unet_ema" / "diffusion_pytorch_model.safetensors"
    if own.is_file():
        ema = load_file(str(own))
        distance = sum(((average[n] - ema[n].double()) ** 2).sum() for n in ema) ** 0.5
        norm = sum((ema[n].double() ** 2).sum() for n in ema) ** 0.5
        print(f"relative L2 distance to the run's own EMA (its --ema_power): {float(distance / norm):.2e}")


if __name__ == "__main__":
    main()
