"""Training data, decoded once into uint8 tensors (memory-mapped from a decoded store, or in memory) and augmented
per access.

  - `images`: `load_image_dataset`, the images named by the flags (the built-in digits, a folder, a Hugging Face
    dataset);
  - `captioned`: `load_captioned_dataset`, the same with a caption per image (the built-in shapes by default);
  - `labelled`: `load_labelled_dataset`, the same with a class label per image (digits, class subfolders, a label
    column);
  - `dataset`: `ImageDataset`, what both return (per-(seed, epoch, image) augmentation, exact resume);
  - `decoding`: one file or row to uint8 pixels, and the reasons a file is skipped;
  - `store`: the decoded store, a folder's or dataset's images decoded once (on every core, `decode_pool`) into a
    file every process of every run memory-maps;
  - `streaming`: `load_streaming_image_dataset`, a dataset too large for the disk, decoded as it streams in;
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
from .store import default_data_cache_dir
from .streaming import StreamingImageDataset, load_streaming_image_dataset

__all__ = ["DIGITS", "CaptionedImageDataset", "ImageDataset", "LabelledImageDataset", "StreamingImageDataset",
           "default_data_cache_dir", "generate_shapes", "load_captioned_dataset", "load_digits_split",
           "load_image_dataset", "load_labelled_dataset", "load_streaming_image_dataset", "score_prompt_adherence"]
