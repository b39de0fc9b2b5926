"""Training: the loop every task shares (`loop`), the tasks (`tasks`), the objective (`objectives`), the pixel-space
U-Net (`unet`), EMA (`ema`), crash-safe checkpoints (`checkpointing`) and the run's set-up (`setup`).

Kept free of imports so that `ddpm_hub.vae` can use the checkpoints without loading the tasks."""
