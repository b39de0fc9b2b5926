"""Latent vs pixel space for text-to-image on the built-in shapes: training images/s, sampling time and prompt
adherence of the latent model (UNet2DConditionModel on 4x8x8 VAE latents) vs a pixel-space conditional U-Net
(the same kind of UNet2DConditionModel on 3x32x32 pixels), both trained here in the same run, the same way.

    accelerate launch train_ddpm.py --task text-to-image                # writes ldm-shapes-32 (its VAE is reused)
    python benchmarks/latent_vs_pixel.py --vae ldm-shapes-32            # ~12 min on 2 cores
    python benchmarks/latent_vs_pixel.py --vae ldm-shapes-32 --minutes 1 --num_prompts 30   # a quick look

Both models start from scratch with a fresh CLIP text encoder (tokenizer from the captions, trained jointly), the
same loss (ddpm_hub.text_to_image.text_to_image_loss: 10% caption dropout, v-prediction, cosine schedule, min-SNR
5), AdamW 1e-3, batch 64, and the same wall-clock budget (--minutes each). The pixel U-Net gets one more level so
that its innermost resolution (4x4 -> 2x2) matches the latent one. The latent side reuses a trained VAE (--vae):
its stage (about 5 minutes in the default run) is paid once, and its cost per training image is one cached
posterior sample. Sampling: the same classifier-free-guidance loop (DPM-Solver++ 25 steps, guidance 5) for
both, plus the VAE decoder for the latent model. Reference: the pixel model, measured in the same run; ratios
are latent / pixel.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default="ldm-shapes-32", help="a text-to-image output folder (or a VAE folder)")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget per model")
    p.add_argument("--num_images", type=int, default=5000)
    p.add_argument("--num_prompts", type=int, default=90, help="prompts for the adherence score")
    p.add_argument("--guidance_scale", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def pixel_unet_config(cross_attention_dim: int) -> dict:
    """The latent default with one more (plain) level in front: 32x32 -> 16 -> 8 -> 4 -> 2 ... as 8x8 -> 4 -> 2."""
    from ddpm_hub.text_to_image import default_conditional_unet_config

    config = default_conditional_unet_config(32, 3, cross_attention_dim)
    config["block_out_channels"] = (32, 32, 64, 64)
    config["down_block_types"] = ("DownBlock2D", *config["down_block_types"])
    config["up_block_types"] = (*config["up_block_types"], "UpBlock2D")
    return config


def train(name: str, unet, text_encoder, tokenizer, batches, scheduler, minutes: float) -> dict:
    """Train unet + text_encoder for `minutes` of wall time on an endless stream of (x0, captions) batches."""
    from ddpm_hub.text_to_image import text_to_image_loss
    from ddpm_hub.training.objectives import LossConfig

    loss_config = LossConfig("v_prediction", 5.0)
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.95, 0.999), weight_decay=1e-6, foreach=True)
    unet.train(), text_encoder.train()
    images, steps, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < minutes * 60:
        x0, captions = next(batches)
        loss = text_to_image_loss(unet, text_encoder, tokenizer, x0, captions, scheduler, loss_config, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        images, steps = images + x0.shape[0], steps + 1
    seconds = time.perf_counter() - started
    print(f"  {name}: {steps} steps, {images / seconds:.1f} images/s, last loss {loss.item():.4f}", file=sys.stderr)
    return {"steps": steps, "images_per_second": images / seconds}


@torch.no_grad()
def sample(unet, text_encoder, tokenizer, prompts, shape, scheduler_config, guidance: float, vae=None, seed=0):
    """Classifier-free guidance with DPM-Solver++ (25 steps): eps = u + w (c - u) on the model's v output."""
    from diffusers import DPMSolverMultistepScheduler

    from ddpm_hub.text_encoder import encode_prompts

    unet.eval(), text_encoder.eval()
    sampler = DPMSolverMultistepScheduler.from_config(scheduler_config)
    sampler.set_timesteps(25)
    states = encode_prompts(tokenizer, text_encoder, [*prompts, *[""] * len(prompts)], warn_truncation=False)
    x = torch.randn((len(prompts), *shape), generator=torch.Generator().manual_seed(seed))
    for t in sampler.timesteps:
        cond, uncond = unet(torch.cat([x, x]), t, encoder_hidden_states=states).sample.chunk(2)
        x = sampler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    if vae is not None:
        x = vae.decode(x / vae.config.scaling_factor).sample
    return x.clamp(-1, 1)


def main(args: argparse.Namespace) -> None:
    from ddpm_hub.data import load_captioned_dataset
    from ddpm_hub.scheduling_ddpm import DDPMScheduler
    from ddpm_hub.data.shapes import score_prompt_adherence
    from ddpm_hub.text_encoder import build_clip_tokenizer, build_text_encoder
    from ddpm_hub.text_to_image import (LatentDataset, adherence_prompts, build_conditional_unet,
                                        default_conditional_unet_config, sample_latents)
    from ddpm_hub.vae import load_pretrained_vae

    torch.manual_seed(args.seed)
    data = load_captioned_dataset("shapes", num_images=args.num_images, seed=args.seed)
    vae = load_pretrained_vae(args.vae)
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                              timestep_spacing="trailing")
    latents = LatentDataset(data, vae)
    prompts = adherence_prompts(args.num_prompts)
    generator = torch.Generator().manual_seed(args.seed)

    def stream(kind: str):
        while True:
            order = torch.randperm(len(data), generator=generator)
            for start in range(0, len(order) - 63, 64):
                index = order[start:start + 64].tolist()
                if kind == "pixel":
                    batch = data.__getitems__(index)
                    yield batch["pixel_values"], batch["captions"]
                else:
                    batch = latents.__getitems__(index)
                    yield sample_latents(batch, vae), batch["captions"]

    rows = {}
    for kind in ("pixel", "latent"):
        tokenizer = build_clip_tokenizer(data.captions)
        text_encoder = build_text_encoder(tokenizer, seed=args.seed)
        dim = text_encoder.config.hidden_size
        config = pixel_unet_config(dim) if kind == "pixel" else default_conditional_unet_config(8, 4, dim)
        unet = build_conditional_unet(config, seed=args.seed)
        params = sum(p.numel() for p in unet.parameters())
        row = {"params": params, **train(kind, unet, text_encoder, tokenizer, stream(kind), scheduler, args.minutes)}
        shape = (3, 32, 32) if kind == "pixel" else (4, 8, 8)
        started = time.perf_counter()
        images = sample(unet, text_encoder, tokenizer, prompts, shape, scheduler.config, args.guidance_scale,
                        vae=vae if kind == "latent" else None, seed=args.seed)
        row["sampling_seconds_per_image"] = (time.perf_counter() - started) / len(prompts)
        row["adherence"] = score_prompt_adherence(images, prompts).accuracy
        rows[kind] = row
        print(f"  {kind}: adherence {row['adherence']:.3f}", file=sys.stderr)

    pixel, latent = rows["pixel"], rows["latent"]
    print(f"shapes 32x32, {args.num_images} images, {args.minutes:g} min of training each, adherence on "
          f"{args.num_prompts} prompts at guidance {args.guidance_scale:g} (DPM-Solver++ 25 steps); reference: pixel\n")
    print("| model | U-Net params | train steps | train images/s | sampling s/image | adherence |")
    print("|---|---|---|---|---|---|")
    for kind, row in rows.items():
        print(f"| {kind} | {row['params'] / 1e6:.2f}M | {row['steps']} | {row['images_per_second']:.1f} | "
              f"{row['sampling_seconds_per_image']:.3f} | {row['adherence']:.3f} |")
    print(f"\nlatent / pixel: training images/s {latent['images_per_second'] / pixel['images_per_second']:.2f}x, "
          f"sampling time {latent['sampling_seconds_per_image'] / pixel['sampling_seconds_per_image']:.2f}x, "
          f"adherence {latent['adherence']:.3f} vs {pixel['adherence']:.3f}")


if __name__ == "__main__":
    main(parse_args())
