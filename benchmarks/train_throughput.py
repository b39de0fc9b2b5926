"""Training throughput: our train_ddpm.py loop vs a reference loop written the way diffusers'
examples/unconditional_image_generation/train_unconditional.py trains, in the same run on this machine.

    python benchmarks/train_throughput.py              # default: 60 steps each, 2 rounds, batch 64
    python benchmarks/train_throughput.py --quick      # 15 steps, 1 round

Both loops train the same UNet2DModel config (ddpm_hub's CPU default), the same batch size, on the same data
(the 1437 digits of the built-in train split at 16x16, random flips), with AdamW, EMA, grad clipping at 1.0 and a
cosine LR schedule. The objectives differ as the two scripts' defaults do (the reference: linear betas, epsilon,
plain MSE; ours: cosine betas, v-prediction, min-SNR-5 weights), which costs the same per step to within a few
per-sample multiplications. The reference keeps diffusers' choices: images decoded and transformed per item with PIL in a datasets
`set_transform` (Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize, here without torchvision),
the default (for-loop) AdamW, EMAModel with foreach=False, and `loss.item()` every step. Ours is
`train_ddpm.main` itself. Each loop runs in its own subprocess so its peak memory (ru_maxrss) is its own;
rounds alternate reference/ours. Images/s counts the optimisation loop with data loading, not the start-up,
checkpoints or sampling. Goal (issue 3): ours >= 1.5x the reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reference_loop(steps: int, batch_size: int, seed: int) -> float:
    """diffusers' train_unconditional.py training step, minus the parts it does outside the loop. Returns images/s."""
    import datasets
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from PIL import Image

    from ddpm_hub import DDPMScheduler
    from ddpm_hub.data import load_digits_split
    from ddpm_hub.training.unet import default_unet_config

    torch.manual_seed(seed)
    accelerator = Accelerator()
    model = UNet2DModel.from_config(default_unet_config(16, 1))
    ema_model = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                         model_cls=UNet2DModel, model_config=model.config)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)

    digits = load_digits_split(resolution=8)[0].images[:, 0].numpy()  # the train split, 8x8 uint8, as ours trains
    pil_images = [Image.fromarray(d) for d in digits]
    dataset = datasets.Dataset.from_dict({"image": pil_images}).cast_column("image", datasets.Image())

    def augment(image: Image.Image) -> torch.Tensor:  # Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize
        image = image.resize((16, 16), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
        return (tensor - 0.5) / 0.5

    def transform_images(examples):
        return {"input": [augment(image.convert("L")) for image in examples["image"]]}

    dataset.set_transform(transform_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=100, num_training_steps=steps)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema_model.to(accelerator.device)

    done, images, started = 0, 0, time.perf_counter()
    while done < steps:
        for batch in loader:
            clean_images = batch["input"]
            noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
            bsz = clean_images.shape[0]
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,),
                                      device=clean_images.device).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                model_output = model(noisy_images, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                ema_model.step(model.parameters())
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}  # noqa: F841
            done, images = done + 1, images + bsz
            if done >= steps:
                break
    return images / (time.perf_counter() - started)


def ours_loop(steps: int, batch_size: int, seed: int) -> float:
    """train_ddpm.main with checkpoints, sample grids and export pushed past the end. Returns images/s."""
    import train_ddpm

    with tempfile.TemporaryDirectory() as tmp:
        args = train_ddpm.parse_args([
            "--output_dir", tmp, "--max_train_steps", str(steps), "--train_batch_size", str(batch_size),
            "--seed", str(seed), "--logger", "none", "--checkpointing_steps", str(10 * steps),
            "--save_images_epochs", "1000", "--save_model_epochs", "1000", "--eval_batch_size", "1",
            "--ddpm_num_inference_steps", "1", "--random_flip"])
        return train_ddpm.main(args).images_per_second


def run_one(which: str, steps: int, batch_size: int) -> None:
    """Child process: run one loop and print a JSON line with images/s and peak RSS."""
    loop = reference_loop if which == "reference" else ours_loop
    images_per_second = loop(steps, batch_size, seed=0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": which, "images_per_second": images_per_second, "peak_rss_mib": peak_mib}))


def measure(which: str, steps: int, batch_size: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", which, "--steps", str(steps),
                             "--batch_size", str(batch_size)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per loop (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=64, help="batch size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="15 steps, 1 round")
    parser.add_argument("--child", choices=("reference", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.steps, args.batch_size)
        return
    if args.quick:
        args.steps, args.rounds = 15, 1

    import torch

    results = {"reference": [], "ours": []}
    for _ in range(args.rounds):
        for which in ("reference", "ours"):
            results[which].append(measure(which, args.steps, args.batch_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds; UNet: ddpm_hub default at 16x16, 1 channel")
    print(f"{'loop':<40} {'images/s (median)':>18} {'peak RSS MiB':>13} {'ratio':>7}")
    reference = statistics.median(r["images_per_second"] for r in results["reference"])
    names = {"reference": "reference (train_unconditional.py style)", "ours": "ours (train_ddpm.py)"}
    for which in ("reference", "ours"):
        speed = statistics.median(r["images_per_second"] for r in results[which])
        peak = max(r["peak_rss_mib"] for r in results[which])
        print(f"{names[which]:<40} {speed:>18.1f} {peak:>13.0f} {speed / reference:>6.2f}x")


if __name__ == "__main__":
    main()
