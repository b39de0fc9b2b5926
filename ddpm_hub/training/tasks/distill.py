"""Progressive distillation of a trained DDPM into few-step students (Salimans & Ho 2022, Algorithm 2), each exported
as a stock diffusers `DDIMPipeline` folder.

A run is a sequence of rounds, one loop phase each. The teacher's deterministic DDIM sampler at
--distill_start_steps steps is halved round after round down to --distill_steps: in the round of an N-step student,
the student (initialised from the teacher) learns to take in one DDIM step what the teacher takes in two
(`ddpm_hub.distillation`); at the round's end its EMA weights become the next round's teacher and student. Each
round's student is written to `round-N/` with its model card, and the output folder itself holds the latest.

The teacher is any unconditional UNet2DModel pipeline folder: an epsilon, sample or v-prediction model is read
through its own prediction type (and its scheduler's clip_sample) for the teacher's steps, and the student always
predicts v (sec. 4). A learned-variance teacher (2C output channels) is distilled through its mean channels, which
are all a deterministic DDIM step reads; the student keeps the first C filters of its output layer and drops the
variance channels. The data are the ones the teacher was trained on (the common data flags; the built-in digits by
default), at the teacher's resolution and channels.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ...atomic import atomic_write_text
from ...data import DIGITS, load_image_dataset
from ...distillation import (SCHEDULE_KEYS, Teacher, alpha_sigma, distillation_grid, distillation_loss,
                             distillation_target, student_scheduler_config, teacher_two_steps)
from ...errors import InputError, one_line
from ...export import save_ddim_pipeline
from ...model_card import render_model_card
from ...sampling import generate, sampling_pipeline
from ...scheduling_ddpm import PREDICTION_TYPES, DDPMScheduler
from .base import CardInputs, Phase, Task, TrainingParts
from .unconditional import DIGITS_DESCRIPTION

DEFAULTS = {"learning_rate": 2e-4, "lr_scheduler": "linear", "lr_warmup_steps": 0, "adam_weight_decay": 0.0,
            "eval_epochs": 1000, "save_model_epochs": 1000}
TEACHER_STATE = "distill_state.json"
SCHEDULE_FLAG = "the noise schedule is the teacher's"
BUDGET_FLAG = "each round trains --distill_round_steps steps"


class DistillTask(Task):
    name = "distill"
    help = ("progressive distillation of a trained --teacher pipeline into DDIMPipeline students of fewer and fewer "
            "steps (Salimans & Ho 2022)")
    defaults = DEFAULTS
    artifacts = ("unet", "scheduler", "round-*")
    unused_flags = {
        "model_config_name_or_path": "the student is the teacher's UNet2DModel",
        "ddpm_num_steps": SCHEDULE_FLAG, "ddpm_beta_schedule": SCHEDULE_FLAG,
        "timestep_spacing": "students sample with trailing timesteps",
        "prediction_type": "students predict v (Salimans & Ho 2022, sec. 4)",
        "loss_type": "the loss is the paper's truncated-SNR distillation loss",
        "snr_gamma": "the loss is the paper's truncated-SNR distillation loss",
        "noise_offset": "the teacher's two steps set the target",
        "num_epochs": BUDGET_FLAG, "max_train_steps": BUDGET_FLAG,
        "eval_scheduler": "each round is evaluated with its own DDIM sampler",
        "eval_inference_steps": "each round is evaluated at its own step count",
    }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "distill (--task distill; ddpm_hub.distillation)",
            cls.defaults_line(" (grids, evaluations and exports at the end of each round)")
            + " --output_dir defaults to TEACHER-distilled.")
        group.add_argument("--teacher", default=None,
                           help="the pipeline folder to distill: a DDPMPipeline (what train_ddpm.py writes) or another "
                                "folder with an unconditional UNet2DModel and its scheduler")
        group.add_argument("--distill_start_steps", type=int, default=32,
                           help="the teacher's DDIM step count that the first round halves (at most T): students "
                                "reproduce it, so start where the teacher's DDIM is best (32 on the default digits "
                                "model: its DDIM 16 and 64 are worse, docs/benchmarks.md#starting-at-ddim-32-stop-29)")
        group.add_argument("--distill_steps", type=int, default=4,
                           help="the last student's step count: --distill_start_steps divided by a power of two")
        group.add_argument("--distill_round_steps", type=int, default=400, help="optimizer updates per round")
        group.add_argument("--distill_reference_steps", type=int, default=1000,
                           help="the evaluation's reference: the teacher with this many DDPM steps, scored once (0: "
                                "none)")
        group.add_argument("--distill_grid_images", type=int, default=16, help="images per round's sample grid")

    def __init__(self, args: argparse.Namespace):
        if args.output_dir is None:
            teacher = Path(args.teacher).resolve().name if args.teacher else "teacher"
            args.output_dir = f"{teacher}-distilled"
        super().__init__(args)

    # ------------------------------------------------------------------------------------------- flags
    def check_args(self) -> None:
        """The teacher folder (read, not loaded), the step counts against its T, and the data flags against it."""
        args = self.args
        if args.teacher is None:
            raise InputError("--task distill needs --teacher DIR: the pipeline folder to distill (e.g. what "
                             "train_ddpm.py wrote)")
        unet_config, scheduler_config = read_teacher_configs(args.teacher)
        T = scheduler_config.get("num_train_timesteps", 1000)
        start, steps = args.distill_start_steps, args.distill_steps
        for name in ("distill_start_steps", "distill_steps", "distill_round_steps", "distill_grid_images"):
            if getattr(args, name) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(args, name)}")
        if start > T:
            raise InputError(f"--distill_start_steps {start} exceeds the teacher's {T} diffusion steps")
        if start % steps or (start // steps) & (start // steps - 1) or start == steps:
            halvings = ", ".join(str(start >> k) for k in range(1, 4) if start >> k and start % (1 << k) == 0)
            raise InputError(f"--distill_steps {steps} must be --distill_start_steps {start} divided by a power of "
                             f"two (2, 4, 8, ...): each round halves the steps" + (f"; e.g. {halvings}" if halvings
                                                                                 else ""))
        if not 0 <= args.distill_reference_steps <= T:
            raise InputError(f"--distill_reference_steps must be between 0 (none) and the teacher's T = {T}, got "
                             f"{args.distill_reference_steps}")
        given = getattr(args, "given_flags", frozenset())
        size, channels = unet_config.get("sample_size"), unet_config.get("in_channels", 3)
        if isinstance(size, list) and len(set(size)) == 1:
            size = size[0]
        for flag, value in (("resolution", size), ("num_channels", channels)):
            if flag in given and getattr(args, flag) != value:
                raise InputError(f"--{flag} {getattr(args, flag)} contradicts the teacher's {value} (its UNet's "
                                 f"{'sample_size' if flag == 'resolution' else 'in_channels'}); drop --{flag}")
        if not isinstance(size, int):
            raise InputError(f"--teacher {args.teacher!r} has a non-square sample_size {size}; distillation trains on "
                             "square images")
        args.resolution, args.num_channels = size, channels

    @property
    def student_steps(self) -> list[int]:
        """Each round's student step count: --distill_start_steps halved down to --distill_steps."""
        steps, counts = self.args.distill_start_steps // 2, []
        while steps >= self.args.distill_steps:
            counts.append(steps)
            steps //= 2
        return counts

    @property
    def grid_epochs(self) -> int:
        """Grids come with the exports: at the end of each round (and every --save_model_epochs)."""
        return self.args.save_model_epochs

    def phases(self, updates_per_epoch: int) -> list[Phase]:
        counts = self.student_steps
        return [Phase(f"round {k + 1}/{len(counts)}: {2 * n}->{n} steps", self.args.distill_round_steps)
                for k, n in enumerate(counts)]

    # --------------------------------------------------------------------------------------- the run
    def setup(self, accelerator) -> TrainingParts:
        args = self.args
        self.device = accelerator.device
        teacher, teacher_config = load_teacher(args.teacher)
        channels = teacher.config.in_channels
        self.dataset = load_image_dataset(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column, args.resolution,
            args.center_crop, args.random_flip, channels, args.cache_dir)
        if teacher.config.out_channels == 2 * channels:
            accelerator.print(f"the teacher has a learned variance ({2 * channels} output channels): distilling its "
                              f"mean channels; the students output {channels}")
        # the forward process (add_noise) and the alphas_cumprod of the teacher's schedule, ours
        self.scheduler = DDPMScheduler(**{key: teacher_config[key] for key in SCHEDULE_KEYS if key in teacher_config})
        self.teacher_config = teacher_config
        self.student_config = student_scheduler_config(teacher_config)
        self.grids = [distillation_grid(self.student_config, n) for n in self.student_steps]
        self.original_teacher = teacher.to(self.device)
        self._use_teacher(self.original_teacher, teacher_config.get("prediction_type", "epsilon"),
                          teacher_config.get("clip_sample_range", 1.0) if teacher_config.get("clip_sample", True)
                          else None)
        self.round, self.reference, self.round_metrics = 0, None, {}
        return TrainingParts(dataset=self.dataset, train_data=self.dataset, models={"unet": student_from(teacher)})

    def _use_teacher(self, unet, prediction_type: str, clip_range: float | None) -> None:
        """Make `unet` the teacher of the current round (its first C output channels: the mean of a learned
        variance)."""
        channels = unet.config.in_channels
        self.teacher_unet = unet.eval().requires_grad_(False)
        self.teacher = Teacher(network=lambda z, t: self.teacher_unet(z, t).sample[:, :channels],
                               prediction_type=prediction_type, clip_range=clip_range)

    def begin_phase(self, index: int, finished: dict | None) -> dict | None:
        """Round `index`: after the first, the finished student becomes the teacher (v-prediction, no clipping: its
        own DDIM sampler) and the new student starts from its weights."""
        self.round = index
        if finished is None:
            return None
        self._use_teacher(copy.deepcopy(finished["unet"]).to(self.device), "v_prediction", None)
        return {"unet": self.teacher_unet.state_dict()}

    def save_state(self, folder: Path) -> None:
        """The current teacher as a loadable UNet2DModel folder (`teacher/`), how it is read, and the figures."""
        self.teacher_unet.save_pretrained(folder / "teacher", safe_serialization=True)
        state = {"round": self.round, "teacher_prediction_type": self.teacher.prediction_type,
                 "teacher_clip_range": self.teacher.clip_range, "reference": self.reference,
                 "round_metrics": self.round_metrics}
        atomic_write_text(folder / TEACHER_STATE, json.dumps(state, indent=2) + "\n")

    def load_state(self, folder: Path, phase: int) -> None:
        from diffusers import UNet2DModel

        state = json.loads((folder / TEACHER_STATE).read_text())
        self.round, self.reference = phase, state["reference"]
        self.round_metrics = {int(n): metrics for n, metrics in state["round_metrics"].items()}
        teacher = UNet2DModel.from_pretrained(folder / "teacher").to(self.device)
        self._use_teacher(teacher, state["teacher_prediction_type"], state["teacher_clip_range"])

    @property
    def steps_now(self) -> int:
        """The current round's student step count."""
        return self.student_steps[self.round]

    def loss(self, batch: torch.Tensor, models: dict) -> torch.Tensor:
        """Algorithm 2 on a batch x (B, C, H, W): draw eps and one of the round's N student steps t -> s per image
        (global RNG), z_t = add_noise(x, eps, t); the teacher's two DDIM steps give z'', hence the target x_tilde;
        the student's v at z_t is scored by the truncated-SNR x-space error."""
        grid = self.grids[self.round]
        noise = torch.randn_like(batch)
        index = torch.randint(0, len(grid.timesteps), (batch.shape[0],), device=batch.device)
        t, midpoint, previous = (table.to(batch.device)[index] for table in
                                 (grid.timesteps, grid.midpoints, grid.previous))
        z_t = self.scheduler.add_noise(batch, noise, t)
        z_teacher = teacher_two_steps(self.teacher, self.scheduler, z_t, t, midpoint, previous)
        alpha_t, sigma_t = alpha_sigma(self.scheduler, t, z_teacher)
        x_target = distillation_target(z_t.double(), z_teacher, alpha_t, sigma_t,
                                       *alpha_sigma(self.scheduler, previous, z_teacher))
        v_hat = models["unet"](z_t, t).sample
        return distillation_loss(v_hat, z_t, x_target, alpha_t, sigma_t)

    # ------------------------------------------------------------------------- grids, evaluation, export
    def _student_images(self, unet, count: int, steps: int | None = None) -> torch.Tensor:
        """`count` images [N x H x W x C] in [0, 1] from the student's own sampler: DDIM with its saved config."""
        pipeline = sampling_pipeline(unet, self.student_config, "ddim")
        return generate(pipeline, count, num_inference_steps=steps or self.steps_now, batch_size=min(count, 128),
                        seed=self.args.seed)

    def sample_grid(self, models: dict) -> tuple[torch.Tensor, int | None]:
        """--distill_grid_images images of the round's student in its N DDIM steps."""
        return self._student_images(models["unet"], self.args.distill_grid_images), None

    def evaluate(self, models: dict, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Built-in 16x16 digits: --eval_num_samples images of the round's student (DDIM, N steps) scored by the
        digits metrics and the pixel-PCA distance, next to the teacher's DDPM at --distill_reference_steps (scored
        once) and its undistilled DDIM at N steps. Other data: no evaluation (these metrics are the digits')."""
        args = self.args
        if not (self._builtin_digits() and self.dataset.num_channels == 1 and args.resolution == 16):
            return {}, {}
        steps = self.steps_now
        if self.reference is None and args.distill_reference_steps:
            print(f"scoring the teacher once: {args.eval_num_samples} DDPM samples of {args.distill_reference_steps} "
                  "steps (minutes)", flush=True)
            self.reference = self._score(sampling_pipeline(self.original_teacher, self.teacher_config, "ddpm"),
                                         args.distill_reference_steps)
        student = self._score(sampling_pipeline(models["unet"], self.student_config, "ddim"), steps)
        undistilled = self._score(sampling_pipeline(self.original_teacher, self.teacher_config, "ddim"), steps)
        scalars = {"student_steps": steps, "fd": student["fd"], "fd_floor": student["fd_floor"],
                   "fd_ratio": student["fd_ratio"], "pixel_fd": student["pixel_fd"],
                   "confidence": student["confidence"], "classes_covered": student["classes_covered"],
                   "sampling_seconds": student["seconds"], "teacher_ddim_fd": undistilled["fd"]}
        if self.reference:
            scalars["fd_vs_teacher"] = student["fd"] / self.reference["fd"]
            scalars["pixel_fd_vs_teacher"] = student["pixel_fd"] / self.reference["pixel_fd"]
        self.round_metrics[steps] = {"step": step, "student": student, "teacher_ddim": undistilled}
        return scalars, self._card_rows(steps)

    def _score(self, pipeline, steps: int) -> dict[str, float]:
        """Digits metrics and pixel-PCA distance of --eval_num_samples images of `pipeline` in `steps` steps."""
        from ...evaluation import digits_metrics
        from ...evaluation.pixel_pca import pixel_metrics
        from ...pixels import quantize, to_nchw

        started = time.perf_counter()
        images = quantize(to_nchw(generate(pipeline, self.args.eval_num_samples, num_inference_steps=steps,
                                           batch_size=128, seed=self.args.seed)))
        seconds = time.perf_counter() - started
        digits, pixels = digits_metrics(images, seed=self.args.seed), pixel_metrics(images, seed=self.args.seed)
        return {"steps": steps, "seconds": seconds, "pixel_fd": pixels["fd"], "pixel_fd_floor": pixels["fd_floor"],
                **{key: digits[key] for key in ("fd", "fd_floor", "fd_ratio", "confidence", "classes_covered")}}

    def _card_rows(self, steps: int) -> dict[str, Any]:
        """The model card's Evaluation rows of the `steps`-step student."""
        n, figures = self.args.eval_num_samples, self.round_metrics[steps]
        student, undistilled, reference = figures["student"], figures["teacher_ddim"], self.reference
        rows: dict[str, Any] = {"evaluated at step": figures["step"]}
        rows[f"Frechet digits distance ({n} samples, this model, DDIM {steps} steps)"] = \
            f"{student['fd']:.4g} (floor {student['fd_floor']:.4g})"
        if reference:
            rows[f"the teacher, DDPM {reference['steps']} steps"] = \
                f"{reference['fd']:.4g} (this model: {student['fd'] / reference['fd']:.2f}x)"
        rows[f"the teacher undistilled, DDIM {steps} steps"] = f"{undistilled['fd']:.4g}"
        rows["pixel-PCA Frechet distance (this model / teacher DDPM)"] = f"{student['pixel_fd']:.4g}" + (
            f" / {reference['pixel_fd']:.4g}" if reference else "")
        rows["classifier confidence / classes covered"] = f"{student['confidence']:.3f} / " \
                                                           f"{student['classes_covered']}/10"
        rows[f"sampling seconds ({n} images)"] = f"{student['seconds']:.2f}"
        return rows

    def export(self, models: dict, card: CardInputs) -> None:
        """`round-N/` (this round's student, its grid and card) and the output folder itself (the latest student,
        with a card listing every round)."""
        steps = self.steps_now
        folder = self.output_dir / f"round-{steps}"
        save_ddim_pipeline(folder, models["unet"], self.student_config)
        grid = None
        if card.sample_grid:
            shutil.copyfile(self.output_dir / card.sample_grid, folder / "samples.png")
            grid = "samples.png"
        rows = self._card_rows(steps) if steps in self.round_metrics else {}
        self._card(folder, steps, card, grid, rows)
        save_ddim_pipeline(self.output_dir, models["unet"], self.student_config)
        summary = {f"round-{n}/ ({n} steps)": self._summary(n) for n in sorted(self.round_metrics, reverse=True)}
        self._card(self.output_dir, steps, card, card.sample_grid, summary)

    def _summary(self, steps: int) -> str:
        student, reference = self.round_metrics[steps]["student"], self.reference
        versus = f" ({student['fd'] / reference['fd']:.2f}x the teacher's DDPM {reference['steps']})" if reference \
            else ""
        return f"FD {student['fd']:.4g}{versus}, pixel FD {student['pixel_fd']:.4g}, confidence " \
               f"{student['confidence']:.3f}"

    def _card(self, folder: Path, steps: int, card: CardInputs, grid: str | None, metrics: dict) -> None:
        args = self.args
        teacher = Path(args.teacher).resolve().name
        builtin = self._builtin_digits()
        description = (
            f"A {steps}-step student of `{teacher}`, made by progressive distillation (Salimans & Ho, 2022): round "
            f"after round, a copy of the teacher learned to take in one deterministic DDIM step what the teacher takes "
            f"in two, from the teacher's {args.distill_start_steps}-step DDIM sampler down to {steps} steps. It "
            f"predicts v and samples with a `DDIMScheduler` (trailing timesteps, no clipping) in exactly {steps} "
            f"step{'s' if steps > 1 else ''}.")
        render_model_card(folder, repo_id=card.repo_id,
                          dataset_name=None if builtin else args.dataset_name or args.train_data_dir,
                          dataset_description=DIGITS_DESCRIPTION.format(resolution=args.resolution) if builtin
                          else None,
                          hyperparameters=card.hyperparameters, final_loss=card.final_loss, sample_grid=grid,
                          metrics=metrics or None, description=description, sampling_steps=steps,
                          sample_caption=f"Samples drawn in {steps} DDIM step{'s' if steps > 1 else ''} at the end "
                                         "of its round.")

    def _builtin_digits(self) -> bool:
        return self.args.train_data_dir is None and self.args.dataset_name in (None, DIGITS)


def read_teacher_configs(folder: str) -> tuple[dict, dict]:
    """(unet config, scheduler config) of a teacher folder, read from its JSON files; one-line InputError for a
    folder that is not an unconditional UNet2DModel pipeline with a scheduler distillation can read."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"--teacher {folder!r} is not a folder: give a diffusion pipeline folder (what train_ddpm.py "
                         "writes)")
    missing = [name for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
               if not (path / name).is_file()]
    if missing:
        raise InputError(f"--teacher {folder!r} is not a diffusion pipeline folder: it lacks {', '.join(missing)}")
    try:
        unet, scheduler = (json.loads((path / name).read_text()) for name in
                           ("unet/config.json", "scheduler/scheduler_config.json"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"--teacher {folder!r} has an unreadable config: {one_line(error, 200)}") from None
    if unet.get("_class_name") != "UNet2DModel":
        raise InputError(f"--teacher {folder!r} has a {unet.get('_class_name')} denoiser; distillation takes an "
                         "unconditional UNet2DModel pipeline")
    if unet.get("num_class_embeds") or unet.get("class_embed_type"):
        raise InputError(f"--teacher {folder!r} is class-conditional; distillation takes an unconditional model")
    channels, out = unet.get("in_channels", 3), unet.get("out_channels", 3)
    if out not in (channels, 2 * channels):
        raise InputError(f"--teacher {folder!r} maps {channels} to {out} channels; expected {channels} (or "
                         f"{2 * channels} with a learned variance)")
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise InputError(f"--teacher {folder!r} predicts {prediction!r}; distillation reads {', '.join(PREDICTION_TYPES)}")
    if scheduler.get("thresholding"):
        raise InputError(f"--teacher {folder!r} samples with dynamic thresholding, which distillation does not "
                         "reproduce; save its scheduler with thresholding false")
    return unet, scheduler


def load_teacher(folder: str):
    """(UNet2DModel in eval mode, scheduler config dict) of a teacher folder `read_teacher_configs` accepted."""
    from diffusers import UNet2DModel

    _, scheduler_config = read_teacher_configs(folder)
    try:
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"--teacher {folder!r} could not be loaded: {one_line(error, 300)}") from None
    return unet.eval(), scheduler_config


def student_from(teacher):
    """The first student: the teacher's UNet2DModel and weights with C output channels (a learned-variance teacher's
    output layer keeps its first C filters, the mean)."""
    from diffusers import UNet2DModel

    channels = teacher.config.in_channels
    student = UNet2DModel.from_config({**teacher.config, "out_channels": channels})
    weights = {name: tensor[:channels] if name.startswith("conv_out.") else tensor
               for name, tensor in teacher.state_dict().items()}
    student.load_state_dict(weights)
    return student.train()
