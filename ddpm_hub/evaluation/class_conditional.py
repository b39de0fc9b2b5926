"""A class-conditional model's evaluation as train_ddpm.py runs it: at each guidance scale, class adherence and the
two Frechet distances on the digits; bits/dim given the true class.

Class adherence is the share of images the digits classifier (`ddpm_hub.evaluation.digits`, 98.6% on held-out real
digits) reads as the class they were sampled for: the number guidance raises. The distances say what guidance costs:
the Frechet digits distance in that classifier's feature space, and the pixel-PCA distance
(`ddpm_hub.evaluation.pixel_pca`), which has no learned network, so a default guidance is never chosen by one
network's view alone. Every scale samples the same classes (balanced: class i % K for image i) from the same seed,
so the scales differ by guidance only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from ..pixels import quantize, to_nchw
from ..sampling import UNetView, class_conditional_pipeline, generate
from .digits import DigitsClassifier, digits_metrics, load_digits_classifier, to_digits_tensor
from .likelihood import heldout_bits_per_dim
from .pixel_pca import pixel_metrics


class WithClassLabels(UNetView):
    """A class-conditional UNet2DModel seen as an unconditional one for fixed class ids [B]: f(x_t, t) = unet(x_t,
    t, class_labels=ids). Why ours: the likelihood code (`ddpm_hub.likelihood.bits_per_dim`) calls model(x_t, t) on
    the whole batch of images, in order."""

    def __init__(self, unet, class_ids: torch.Tensor):
        super().__init__(unet)
        self.register_buffer("class_ids", class_ids.long(), persistent=False)

    def forward(self, sample: torch.Tensor, timestep, **kwargs):
        assert sample.shape[0] == self.class_ids.shape[0], "one class id per image"
        return self.unet(sample, timestep, class_labels=self.class_ids.to(sample.device), **kwargs)


def balanced_labels(num_samples: int, num_classes: int) -> list[int]:
    """Class i % K for image i: every class num_samples / K times (+- 1), in a fixed order."""
    return [i % num_classes for i in range(num_samples)]


@torch.no_grad()
def class_adherence(images, class_ids: Sequence[int], classifier: DigitsClassifier | None = None) -> float:
    """The share of digits [N x 1 x 16 x 16] (any layout `to_digits_tensor` reads) that the digits classifier reads
    as the class they were sampled for (class_ids [N], 0..9)."""
    x = to_digits_tensor(images, "images")
    classifier = classifier if classifier is not None else load_digits_classifier()
    predicted = classifier.eval()(x).argmax(dim=1)
    return float((predicted == torch.as_tensor(list(class_ids))).double().mean())


def guided_sample_metrics(pipeline, guidance_scale: float, num_samples: int, num_inference_steps: int, seed: int,
                          classifier: DigitsClassifier | None = None, batch_size: int = 128) -> dict[str, float]:
    """num_samples digits of `balanced_labels` from a ClassConditionalDDPMPipeline at guidance_scale (its own
    sampler, num_inference_steps, one generator seeded with `seed`), quantised to 8 bits as a saved PNG holds them:
    adherence (`class_adherence`), fd, fd_floor, fd_ratio, confidence (`digits_metrics`) and pixel_fd,
    pixel_fd_floor, pixel_fd_ratio (`pixel_metrics`)."""
    classifier = classifier if classifier is not None else load_digits_classifier()
    labels = balanced_labels(num_samples, pipeline.num_classes)
    images = generate(pipeline, num_samples, num_inference_steps=num_inference_steps, batch_size=batch_size,
                      seed=seed, per_image={"class_labels": labels}, guidance_scale=float(guidance_scale))
    pixels = quantize(to_nchw(images))
    scores = digits_metrics(pixels, classifier=classifier, seed=seed)
    pixel = pixel_metrics(pixels, seed=seed)
    return {"adherence": class_adherence(pixels, labels, classifier),
            **{key: scores[key] for key in ("fd", "fd_floor", "fd_ratio", "confidence")},
            **{"pixel_" + key: pixel[key] for key in ("fd", "fd_floor", "fd_ratio")}}


def evaluate_class_conditional(unet, scheduler, *, id2label: Mapping[int, str], guidance_scales: Sequence[float],
                               num_samples: int = 256, sampler: str = "dpm", num_inference_steps: int = 25,
                               digits: bool = True, bpd_timesteps: int | None = 50,
                               bpd_images: torch.Tensor | None = None, bpd_labels: torch.Tensor | None = None,
                               bpd_num_images: int = 64, seed: int = 0, batch_size: int = 128,
                               classifier: DigitsClassifier | None = None) -> dict[str, float]:
    """The evaluation run during training, as flat floats for tensorboard and the model card.

    unet, scheduler: the model (EMA weights if any) and its DDPMScheduler; id2label: its classes.
    digits: for a 1-channel 16x16 model of the built-in digits, at each guidance scale s, the metrics of
        `guided_sample_metrics` (num_samples images drawn with `sampler` in num_inference_steps from `seed`) as
        `guidance_{s}/adherence`, `guidance_{s}/fd`, ..., `guidance_{s}/pixel_fd_ratio`; plus `sampling_seconds`
        for all scales.
    bpd_images, bpd_labels: real images [M x C x H x W] in [-1, 1] and their class ids [M] for bits/dim given the
        class, log p(x | y), with bpd_timesteps terms (None: the first bpd_num_images held-out digits and their
        labels). Returns bits_per_dim and bits_per_dim_se too.
    """
    metrics: dict[str, float] = {}
    if digits:
        classifier = classifier if classifier is not None else load_digits_classifier()
        pipeline = class_conditional_pipeline(unet, scheduler.config, sampler, id2label)
        started = time.perf_counter()
        for scale in guidance_scales:
            scores = guided_sample_metrics(pipeline, scale, num_samples, num_inference_steps, seed, classifier,
                                           batch_size)
            metrics.update({f"guidance_{scale:g}/{key}": value for key, value in scores.items()})
        metrics["sampling_seconds"] = time.perf_counter() - started
    if bpd_images is None:
        from ..data import load_digits_split
        from ..pixels import from_uint8

        held_out = load_digits_split(resolution=16)[1]
        bpd_images, bpd_labels = from_uint8(held_out.images), held_out.labels
    count = min(bpd_num_images, len(bpd_images))
    was_training = unet.training
    bound = heldout_bits_per_dim((WithClassLabels(unet, bpd_labels[:count]), scheduler), num_images=count,
                                 num_timesteps=bpd_timesteps, seed=seed, images=bpd_images[:count])
    unet.train(was_training)
    metrics["bits_per_dim"], metrics["bits_per_dim_se"] = bound["mean"], bound["standard_error"]
    return metrics
