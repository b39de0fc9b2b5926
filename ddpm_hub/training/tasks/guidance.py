"""The classifier-free guidance flags the conditional tasks share (text-to-image, class-conditional).

Two tasks cannot each add the same flag to one parser, and the flags mean the same in both: the share of conditions
dropped during training, and the guidance scale the grids (and evaluations) sample at. So they live in this mixin,
which both tasks inherit; `ddpm_hub.training.tasks.add_task_arguments` adds each class's flags once, and
`Task.own_flags` finds them in both tasks' bases, so the other tasks still refuse them.
"""

from __future__ import annotations

import argparse

from ...errors import InputError


class ClassifierFreeGuidance:
    """Mixin for a `Task` trained for classifier-free guidance (Ho & Salimans 2022): --conditioning_dropout_prob and
    --guidance_scale, whose default is each task's (`Task.defaults`)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("classifier-free guidance (--task text-to-image and class-conditional)")
        group.add_argument("--conditioning_dropout_prob", type=float, default=0.1,
                           help="share of conditions dropped in training (captions -> '', classes -> 'no class'), so "
                                "that the model also learns the unconditional prediction guidance needs")
        group.add_argument("--guidance_scale", type=float, default=None,
                           help="classifier-free guidance scale of the validation grids and the evaluation (None: "
                                "the task's, listed in its group)")

    def check_args(self) -> None:
        args = self.args
        if not 0.0 <= args.conditioning_dropout_prob <= 1.0:
            raise InputError(f"--conditioning_dropout_prob must be between 0 and 1, got "
                             f"{args.conditioning_dropout_prob}")
        if not args.guidance_scale >= 1.0:
            raise InputError(f"--guidance_scale must be >= 1 (1: no guidance), got {args.guidance_scale}")
        super().check_args()
