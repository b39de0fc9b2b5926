"""Sample quality and likelihood of a trained DDPM, offline: nothing here downloads weights.

  - `digits`: for 1-channel 16x16 models, a small CNN the project trains itself gives a feature space in which
    generated images are scored against held-out real digits (Frechet distance, its real-vs-real floor,
    confidence, class coverage);
  - `frechet`: the Frechet distance between Gaussians fitted to two feature sets;
  - `inception`: FID for other data, only with a local Inception weights file;
  - `likelihood`: the variational bound in bits/dim on held-out images;
  - `model`: the evaluation train_ddpm.py runs during training (`evaluate_model`);
  - `class_conditional`: the same for a class-conditional model, at several guidance scales (class adherence, the
    Frechet digits and pixel-PCA distances) (`evaluate_class_conditional`).

Pixel conventions are `ddpm_hub.pixels`': float [N x C x H x W] in [-1, 1], float [N x H x W x C] in [0, 1]
(`output_type="np"`), or uint8 0..255 in either layout.
"""

from .class_conditional import class_adherence, evaluate_class_conditional
from .digits import (CACHE_ENV, DIGITS_RESOLUTION, DigitsClassifier, classifier_cache_path, digits_metrics,
                     held_out_digits, load_digits_classifier, train_digits_classifier)
from .frechet import frechet_distance
from .inception import inception_features, inception_fid, load_inception
from .likelihood import heldout_bits_per_dim
from .model import evaluate_model

__all__ = ["CACHE_ENV", "DIGITS_RESOLUTION", "DigitsClassifier", "class_adherence", "classifier_cache_path",
           "digits_metrics", "evaluate_class_conditional", "evaluate_model", "frechet_distance", "held_out_digits",
           "heldout_bits_per_dim", "inception_features", "inception_fid", "load_digits_classifier", "load_inception",
           "train_digits_classifier"]
