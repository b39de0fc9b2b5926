"""Train a DDPM with accelerate and write a diffusers pipeline folder you can load and share.

    accelerate launch --quiet train_ddpm.py                 # built-in digits, CPU-sized model, ~10 minutes
    accelerate launch --quiet train_ddpm.py --train_data_dir my_images --resolution 32 --output_dir my-ddpm
    accelerate launch --quiet train_ddpm.py --task text-to-image   # built-in captioned shapes, latent text-to-image
    accelerate launch --quiet train_ddpm.py --class_conditional    # digits by class, classifier-free guidance

--quiet: a mistake ends on our one-line message, not on accelerate's launcher traceback.

Flags follow diffusers' examples/unconditional_image_generation/train_unconditional.py where they overlap, and
for --task text-to-image its examples/text_to_image/train_text_to_image.py.
The result loads with stock diffusers: `DDPMPipeline.from_pretrained(output_dir)(batch_size=8)`, or for
text-to-image `StableDiffusionPipeline.from_pretrained(output_dir, safety_checker=None)("a red circle")`, for
class-conditional `DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)(class_labels=[3, 7])`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ddpm_hub.cli import HelpFormatter, OneLineParser, run_cli
from ddpm_hub.errors import InputError
from ddpm_hub.sampling import SAMPLERS
from ddpm_hub.scheduling_ddpm import BETA_SCHEDULES, PREDICTION_TYPES
from ddpm_hub.training.objectives import LOSS_TYPES
from ddpm_hub.training.tasks import TASKS, add_task_arguments, flag_owners, foreign_flags, selected_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the task's own defaults filled in where a flag was not given (`args.given_flags` names those
    that were), and `args.foreign_flags` naming the flags of other tasks."""
    p = OneLineParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--task", default="unconditional", choices=tuple(TASKS),
                   help="; ".join(f"{name}: {task.help}" for name, task in TASKS.items()))
    data = p.add_argument_group("data")
    data.add_argument("--dataset_name", default=None,
                      help="a hub dataset id, a local dataset saved with save_to_disk, or the built-in data ('digits', "
                           "text-to-image 'shapes'; the default when --train_data_dir is not given)")
    data.add_argument("--dataset_config_name", default=None, help="the dataset's config name")
    data.add_argument("--train_data_dir", default=None, help="a folder of images, scanned recursively")
    data.add_argument("--image_column", default=None, help="the image column of a datasets dataset (default: 'image')")
    data.add_argument("--cache_dir", default=None, help="where datasets caches downloads")
    data.add_argument("--resolution", type=int, default=None,
                      help="training resolution (pixels, square); None: the task's (16; text-to-image 32, or a "
                           "pretrained pipeline's)")
    data.add_argument("--num_channels", type=int, default=None, choices=(1, 3),
                      help="1 or 3; default follows the data (1 for grayscale, 3 for colour)")
    data.add_argument("--center_crop", action="store_true", help="center-crop instead of random-crop")
    data.add_argument("--random_flip", action="store_true", help="random horizontal flips")
    data.add_argument("--data_cache_dir", default=None,
                      help="where a folder's or dataset's images are decoded once (on every core) into a store that "
                           "every process of this and later runs memory-maps; rebuilt when a file or a setting "
                           "changes (default: ddpm_hub-decoded in datasets' cache, $HF_DATASETS_CACHE or "
                           "$HF_HOME/datasets)")
    data.add_argument("--no_data_cache", action="store_true",
                      help="decode the images into each process's own memory at every run instead (one thread, "
                           "the same pixels)")
    data.add_argument("--streaming", action="store_true",
                      help="read --dataset_name as a stream, decoded as it arrives, for a dataset too large for the "
                           "disk; needs --max_train_steps; a resumed run is not exact")

    model = p.add_argument_group("model and diffusion")
    model.add_argument("--model_config_name_or_path", default=None,
                       help="a U-Net config JSON (file or folder with config.json); default: a CPU-sized U-Net")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the number of diffusion steps")
    model.add_argument("--ddpm_beta_schedule", default="squaredcos_cap_v2",
                       help="linear, scaled_linear, squaredcos_cap_v2, sigmoid")
    model.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                       help="saved in the scheduler config: how fewer-than-T sampling steps are spread, also for "
                            "DDIM/DPM-Solver swapped in from it. Default: trailing (starts at t = T-1) for v and "
                            "sample prediction; leading (diffusers' default) for epsilon, whose x0 = (x_t - "
                            "sqrt(1-abar) eps) / sqrt(abar) blows up at t = T-1 of the cosine schedule")
    model.add_argument("--prediction_type", default="v_prediction", help="epsilon, sample or v_prediction")
    model.add_argument("--loss_type", default="simple", help="simple (L_simple) or hybrid (L_simple + lambda L_vlb "
                                                             "with a learned_range variance, Improved DDPM)")
    model.add_argument("--snr_gamma", type=float, default=5.0,
                       help="min-SNR-gamma loss weighting, Hang et al. 2023 (0 turns it off)")
    model.add_argument("--noise_offset", type=float, default=0.0, help="noise offset (e.g. 0.05)")

    train = p.add_argument_group("optimisation")
    train.add_argument("--output_dir", default=None, help="where the pipeline, checkpoints, samples go (None: the "
                                                          "task's, ddpm-digits-16 or ldm-shapes-32)")
    train.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier run in output_dir")
    train.add_argument("--train_batch_size", type=int, default=64, help="batch size per process")
    train.add_argument("--num_epochs", type=int, default=45, help="passes over the data (unless --max_train_steps)")
    train.add_argument("--max_train_steps", type=int, default=None, help="optimizer steps; overrides --num_epochs")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    train.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate")
    train.add_argument("--lr_scheduler", default="cosine", help="a diffusers get_scheduler name (cosine, linear, "
                                                                "constant, constant_with_warmup, ...)")
    train.add_argument("--lr_warmup_steps", type=int, default=100, help="linear warm-up steps")
    train.add_argument("--adam_beta1", type=float, default=0.95)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-6)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0 disables)")
    train.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True,
                       help="keep an exponential moving average of the weights and export it")
    train.add_argument("--ema_inv_gamma", type=float, default=1.0,
                       help="EMA warm-up: decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)")
    train.add_argument("--ema_power", type=float, default=3 / 4,
                       help="EMA warm-up power (higher: a longer average sooner)")
    train.add_argument("--ema_max_decay", type=float, default=0.999, help="the EMA decay's upper bound")
    train.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"),
                       help="autocast precision (bf16 is fast on CPUs with AMX)")
    train.add_argument("--seed", type=int, default=0, help="seed for data order, noise and sample grids")

    ev = p.add_argument_group("evaluation (ddpm_hub.evaluation; logged to tensorboard and the model card)")
    ev.add_argument("--eval_epochs", type=int, default=15,
                    help="evaluate every N epochs and after the last (0: never): for the unconditional task bits/dim, "
                         "and for the built-in digits the Frechet digits distance to held-out digits, its floor, "
                         "confidence, coverage; for text-to-image on the built-in shapes, prompt adherence; "
                         "class-conditional: class adherence and the distances at each --eval_guidance_scales")
    ev.add_argument("--eval_num_samples", type=int, default=256, help="images (or prompts) sampled for the evaluation")
    ev.add_argument("--eval_scheduler", default="dpm", choices=SAMPLERS,
                    help="sampler for the evaluation (and text-to-image's grids; dpm: DPM-Solver++ 2M)")
    ev.add_argument("--eval_inference_steps", type=int, default=25,
                    help="sampling steps for the evaluation (at most --ddpm_num_steps)")

    out = p.add_argument_group("logging, checkpoints, hub")
    out.add_argument("--logger", default="tensorboard", choices=("tensorboard", "wandb", "none"))
    out.add_argument("--logging_dir", default="logs", help="tensorboard folder, relative to output_dir")
    out.add_argument("--save_model_epochs", type=int, default=15, help="export the pipeline every N epochs")
    out.add_argument("--checkpointing_steps", type=int, default=500, help="full training state every N steps")
    out.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most N checkpoints")
    out.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint path, or 'latest'")
    out.add_argument("--push_to_hub", action="store_true", help="upload the pipeline folder to the Hugging Face Hub")
    out.add_argument("--hub_model_id", default=None, help="repo id (default: output_dir's name)")
    out.add_argument("--hub_token", default=None, help="token for the upload (used, never written anywhere)")
    out.add_argument("--hub_private_repo", action="store_true", help="create the repo private")
    add_task_arguments(p)  # each task's own flags, in groups of their own

    args = p.parse_args(argv)
    unset = object()
    probe = p.parse_args(argv, namespace=argparse.Namespace(**{name: unset for name in vars(args)}))
    args.given_flags = frozenset(name for name, value in vars(probe).items() if value is not unset)
    args.task = selected_task(args)  # --class_conditional is --task class-conditional
    for name, value in TASKS[args.task].defaults.items():
        if name not in args.given_flags:
            setattr(args, name, value)
    if args.timestep_spacing is None:
        args.timestep_spacing = "leading" if args.prediction_type == "epsilon" else "trailing"
    args.foreign_flags = foreign_flags(args.task)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check, and flags that contradict each other: one InputError each."""
    positive = ("train_batch_size", "num_epochs", "gradient_accumulation_steps", "ddpm_num_steps",
                "save_model_epochs", "checkpointing_steps", "resolution", "eval_inference_steps")
    for name in positive:  # (a None resolution is the task's to set: distill takes the teacher's)
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name, low in (("eval_epochs", 0), ("eval_num_samples", 2)):
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be an integer >= {low}, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise InputError(f"--max_train_steps must be a positive integer, got {args.max_train_steps}")
    if args.eval_inference_steps > args.ddpm_num_steps:
        raise InputError(f"--eval_inference_steps {args.eval_inference_steps} exceeds --ddpm_num_steps "
                         f"{args.ddpm_num_steps}")
    if args.eval_scheduler == "dpm" and args.timestep_spacing == "leading" and \
            args.eval_inference_steps == args.ddpm_num_steps:
        raise InputError(f"--eval_scheduler dpm cannot take all --ddpm_num_steps {args.ddpm_num_steps} steps with "
                         f"--timestep_spacing leading (diffusers indexes past its sigmas): lower "
                         f"--eval_inference_steps to {args.ddpm_num_steps - 1}")
    for name, allowed in (("prediction_type", PREDICTION_TYPES), ("ddpm_beta_schedule", BETA_SCHEDULES[:4]),
                          ("loss_type", LOSS_TYPES)):
        if getattr(args, name) not in allowed:
            raise InputError(f"--{name} {getattr(args, name)!r} is not supported; choose one of {', '.join(allowed)}")
    if args.learning_rate <= 0:
        raise InputError(f"--learning_rate must be positive, got {args.learning_rate}")
    check_data_args(args)
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise InputError("--overwrite_output_dir and --resume_from_checkpoint contradict each other: replace the "
                         "earlier run, or continue it; give one")
    for name, why in TASKS[args.task].unused_flags.items():
        if name in args.given_flags:
            raise InputError(f"--{name} has no effect with --task {args.task}: {why}; drop it")
    for name in sorted(args.foreign_flags & args.given_flags):
        owners = flag_owners(name)
        raise InputError(f"--{name} is a --task {' or '.join(owners)} flag; --task {args.task} does not use it: drop "
                         f"it, or add --task {owners[0]}")
    if args.logger == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise InputError("--logger wandb needs the wandb package (pip install wandb); or use --logger tensorboard")


def check_data_args(args: argparse.Namespace) -> None:
    """--data_cache_dir, --no_data_cache and --streaming against each other and the flags a stream cannot honour."""
    if args.no_data_cache and args.data_cache_dir is not None:
        raise InputError(f"--no_data_cache and --data_cache_dir {args.data_cache_dir!r} contradict each other: keep "
                         "the decoded images in memory, or store them in that folder; give one")
    if not args.streaming:
        return
    why_not = TASKS[args.task].no_streaming
    if why_not:
        raise InputError(f"--streaming is not supported by --task {args.task}: {why_not}")
    for name in ("train_data_dir", "data_cache_dir"):
        if getattr(args, name) is not None:
            raise InputError(f"--streaming and --{name} contradict each other: --streaming reads a --dataset_name as "
                             f"a stream and stores nothing; drop one")
    if args.no_data_cache:
        raise InputError("--streaming and --no_data_cache contradict each other: a stream is decoded as it arrives, "
                         "--no_data_cache decodes the whole dataset into memory first; drop one")
    if args.dataset_name is None or args.dataset_name in ("digits", "shapes"):
        raise InputError("--streaming needs --dataset_name (a Hub id or a dataset folder): the built-in data is "
                         "generated in memory")
    if args.max_train_steps is None:
        raise InputError("--streaming needs --max_train_steps: a stream's length is unknown, so --num_epochs cannot "
                         "be turned into steps")
    if "num_epochs" in args.given_flags:
        raise InputError("--streaming and --num_epochs contradict each other: a stream's length is unknown; give "
                         "--max_train_steps only")


def main(args: argparse.Namespace, hub_api=None):
    """Train and export; returns the run's `TrainingSummary`. `hub_api` replaces huggingface_hub.HfApi (the network
    boundary) for --push_to_hub."""
    from ddpm_hub.training.loop import train
    from ddpm_hub.training.setup import make_accelerator, prepare_output_dir
    from ddpm_hub.training.tasks import all_artifacts

    # 1. the task, and every flag checked before anything slow
    task = TASKS[args.task](args)
    check_args(args)
    task.check_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)

    # 2. accelerate (processes, precision, logger) and the output folder (an earlier run is resumed or replaced)
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(output_dir, args)
    prepare_output_dir(output_dir, args, accelerator, all_artifacts())

    # 3. the loop: the task's data and models, AdamW, EMA, checkpoints and resume; grids, evaluations and the
    #    exported pipeline folder with its model card on their epochs
    summary = train(task, accelerator, args)

    # 4. share
    if accelerator.is_main_process and args.push_to_hub:
        from ddpm_hub.hub import push_to_hub

        url = push_to_hub(output_dir, args.hub_model_id or output_dir.resolve().name, token=args.hub_token,
                          private=args.hub_private_repo, api=hub_api)
        accelerator.print(f"pushed to {url}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    """Run main; a user mistake prints one line and exits 2, anything else keeps its traceback."""
    return run_cli("train_ddpm.py", main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
