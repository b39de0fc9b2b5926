"""Training data, decoded once into uint8 tensors and augmented per access.

  - `images`: `load_image_dataset`, the images named by the flags (the built-in digits, a folder, a Hugging Face
    dataset);
  - `captioned`: `load_captioned_dataset`, the same with a caption per image (the built-in shapes by default);
  - `labelled`: `load_labelled_dataset`, the same with a class label per image (digits, class subfolders, a label
    column);
  - `dataset`: `ImageDataset`, what both return (per-(seed, epoch, image) augmentation, exact resume);
  - `decoding`: one file or row to uint8 pixels, and the reasons a file is skipped;
  - `hub_datasets`: opening a dataset by name (save_to_disk folder, local folder, Hub id), offline-aware;
  - `digits`, `shapes`: the built-in data (real handwritten digits; generated captioned shapes with an exact
    prompt-adherence check).
"""

from .captioned import CaptionedImageDataset, load_captioned_dataset
from .dataset import ImageDataset
from .digits import DIGITS, load_digits_split
from .images import load_image_dataset
from .labelled import LabelledImageDataset, load_labelled_dataset
from .shapes import generate_shapes, score_prompt_adherence

__all__ = ["DIGITS", "CaptionedImageDataset", "ImageDataset", "LabelledImageDataset", "generate_shapes",
           "load_captioned_dataset", "load_digits_split", "load_image_dataset", "load_labelled_dataset",
           "score_prompt_adherence"]
