"""ddpm_hub.data: digits, folders of images, datasets saved to disk / on the Hub, augmentation, errors."""

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hub.data import ImageDataset, load_digits_split, load_image_dataset
from ddpm_hub.data.dataset import augmentation_generator
from ddpm_hub.errors import InputError

# ---------------------------------------------------------------------------------------------------------
# helpers


def _noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated_png() -> bytes:
    """A PNG whose header is intact but whose pixel data stops half-way: opens, then fails to load."""
    data = _png_bytes(Image.fromarray(_noise(64, 64)))  # noise: incompressible, so half the bytes is half the data
    return data[: len(data) // 2]


def _as_array(item: torch.Tensor) -> np.ndarray:
    """Dataset item [C x H x W] in [-1, 1] -> uint8 [H x W x C] (exact for stored values)."""
    return np.rint((item.numpy() + 1.0) * 127.5).astype(np.uint8).transpose(1, 2, 0)


def _all_items(dataset: ImageDataset) -> torch.Tensor:
    return torch.stack([dataset[i] for i in range(len(dataset))])


def _assert_one_line_input_error(excinfo: pytest.ExceptionInfo) -> None:
    assert isinstance(excinfo.value, ValueError)  # InputError is a ValueError for library callers
    assert "\n" not in str(excinfo.value)


# ---------------------------------------------------------------------------------------------------------
# digits


def test_digits_default_is_the_1437_train_digits_in_minus_one_to_one():
    dataset = load_image_dataset()  # no source given: digits, train split

    assert len(dataset) == 1437
    assert isinstance(dataset.images, torch.Tensor)
    assert dataset.images.shape == (1437, 1, 16, 16) and dataset.images.dtype == torch.uint8
    assert (dataset.num_channels, dataset.resolution) == (1, 16)
    items = _all_items(dataset)
    assert items.shape == (1437, 1, 16, 16) and items.dtype == torch.float32
    assert items.min().item() == -1.0 and items.max().item() == 1.0  # both ends reached, nothing beyond
    torch.testing.assert_close(items, dataset.images.float() / 127.5 - 1.0, rtol=0, atol=0)
    assert dataset.labels.dtype == torch.long and set(dataset.labels.tolist()) == set(range(10))
    assert dataset.summary() == ("loaded 1437 images (1 channel, 16x16) from digits (scikit-learn, train split: "
                                 "1437 of 1797 images, seed 0)")
    assert torch.equal(load_image_dataset("digits").images, dataset.images)  # deterministic
    train, held_out = load_digits_split(resolution=16)
    assert torch.equal(dataset.images, train.images)  # the evaluation's held-out digits are never trained on
    assert torch.equal(load_image_dataset("digits", split="test").images, held_out.images)
    assert len(load_image_dataset("digits", split="all")) == 1797
    with pytest.raises(InputError, match="digits split 'validation' does not exist; choose one of train, test, all"):
        load_image_dataset("digits", split="validation")


def test_digits_at_resolution_8_are_sklearn_values_scaled_to_255():
    from sklearn.datasets import load_digits

    digits = load_digits()
    dataset = load_image_dataset("digits", resolution=8, split="all")

    expected = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)  # 0..16 -> 0..255, no resize at 8
    np.testing.assert_array_equal(dataset.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(dataset.labels.numpy(), digits.target)


def test_digits_with_three_channels_repeats_the_gray_channel():
    dataset = load_image_dataset("digits", num_channels=3)

    assert dataset.images.shape == (1437, 3, 16, 16)
    assert torch.equal(dataset.images[:, 0], dataset.images[:, 2])


def test_digits_split_is_a_stratified_deterministic_partition():
    full = load_image_dataset("digits", split="all")
    train, held_out = load_digits_split(resolution=16, held_out_fraction=0.2, seed=0)

    assert (len(train), len(held_out)) == (1437, 360)
    # A partition: the (image, label) multisets of the two halves add up to the full set, so none is shared.
    def rows(dataset):
        return Counter((image.numpy().tobytes(), int(label)) for image, label in zip(dataset.images, dataset.labels))

    assert rows(train) + rows(held_out) == rows(full)
    # Stratified: each class is held out in proportion (within one image of 20 %).
    full_counts, held_counts = Counter(full.labels.tolist()), Counter(held_out.labels.tolist())
    for label in range(10):
        assert abs(held_counts[label] - 0.2 * full_counts[label]) <= 1, label
    # Deterministic for a seed, different for another.
    train_again, held_out_again = load_digits_split(seed=0)
    assert torch.equal(train_again.images, train.images) and torch.equal(held_out_again.labels, held_out.labels)
    _, held_out_other = load_digits_split(seed=1)
    assert not torch.equal(held_out_other.images, held_out.images)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_digits_split_rejects_unusable_fractions(fraction):
    with pytest.raises(InputError, match="held_out_fraction") as excinfo:
        load_digits_split(held_out_fraction=fraction)
    _assert_one_line_input_error(excinfo)


# ---------------------------------------------------------------------------------------------------------
# folder of images


@pytest.fixture
def mixed_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Color and gray images in every awkward format, plus files that must be skipped."""
    root = tmp_path / "photos"
    (root / "sub" / "dir").mkdir(parents=True)
    pixels = {}

    pixels["rgb"] = _noise(16, 16, seed=1)
    Image.fromarray(pixels["rgb"]).save(root / "rgb.png")
    Image.fromarray(_noise(20, 24, channels=1, seed=2)).save(root / "gray.jpg", quality=95)  # L, 24x20
    Image.fromarray(_noise(16, 16, seed=3)).save(root / "sub" / "dir" / "nested.jpg")

    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)  # alpha 0: fully transparent -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 2] = (0, 0, 0, 51)  # 20 % black over white: 0.2 * 0 + 0.8 * 255 = 204
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")

    deep = np.zeros((16, 16), dtype=np.uint16)
    deep[0, 0], deep[0, 1], deep[0, 2] = 65535, 32896, 255  # 16-bit -> 8-bit is / 257: 255, 128, 1
    Image.fromarray(deep).save(root / "gray16.png")
    assert Image.open(root / "gray16.png").mode == "I;16"

    palette = Image.new("P", (16, 16))
    palette.putpalette([0, 0, 255] + [0, 255, 0] * 255)  # index 0 = blue
    palette.save(root / "palette.gif")

    Image.fromarray(_noise(8, 8, seed=4)).save(root / "small.png")  # 8x8 < 16
    Image.fromarray(_noise(10, 12, seed=5)).save(root / "small2.png")  # 12x10: shorter side 10 < 16
    (root / "corrupt.png").write_bytes(_truncated_png())
    (root / "notes.txt").write_text("not a picture\n")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "rgb.png", "text": "noise"}) + "\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root, pixels


HOLDINGS = {"store": {}, "memory": {"no_data_cache": True}}  # the decoded store (default) and the in-memory path


@pytest.mark.parametrize("holding", HOLDINGS)
def test_folder_keeps_usable_images_converts_modes_and_reports_skips(mixed_folder, holding):
    root, pixels = mixed_folder
    dataset = load_image_dataset(train_data_dir=str(root), resolution=16, center_crop=True, **HOLDINGS[holding])

    # Sorted paths: gray.jpg, gray16.png, palette.gif, rgb.png, rgba.png, sub/dir/nested.jpg.
    assert len(dataset) == 6
    assert dataset.num_channels == 3  # color images present, so gray ones become RGB
    assert dataset.images.shape == (6, 3, 16, 16) and dataset.labels is None
    gray, deep, palette, rgb, rgba, _ = (_all_items(dataset)[i] for i in range(6))

    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert deep[:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # 65535 -> 255, not clipped junk
    torch.testing.assert_close(deep[:, 0, 1], torch.full((3,), 128 / 127.5 - 1.0))  # 32896 / 257 = 128: ~0.0039
    torch.testing.assert_close(deep[:, 0, 2], torch.full((3,), 1 / 127.5 - 1.0))  # 255 / 257 -> 1, not 0 (no >> 8)
    assert palette[:, 0, 0].tolist() == [-1.0, -1.0, 1.0]  # blue
    np.testing.assert_array_equal(_as_array(rgb), pixels["rgb"])  # lossless PNG, no resize: exact
    assert rgba[:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent -> white
    assert rgba[:, 0, 1].tolist() == [1.0, -1.0, -1.0]
    torch.testing.assert_close(rgba[:, 0, 2], torch.full((3,), 204 / 127.5 - 1.0))

    assert sorted((Path(path).name, reason) for path, reason in dataset.skipped) == [
        ("corrupt.png", "corrupt"),
        ("data.csv", "not an image"),
        ("notes.txt", "not an image"),
        ("small.png", "smaller than --resolution 16 (8x8)"),
        ("small2.png", "smaller than --resolution 16 (12x10)"),
    ]  # metadata.jsonl and .DS_Store are not skips
    assert dataset.contents() == (
        f"loaded 6 images (3 channels, 16x16) from folder {str(root)!r}; skipped 5 files: "
        "2 not an image, 2 smaller than --resolution 16 (8x8, 12x10), 1 corrupt"
    )
    stored = f"; memory-mapped from the decoded store {dataset.store}" if holding == "store" else ""
    assert (dataset.store is None) == (holding == "memory") and dataset.summary() == dataset.contents() + stored


def test_folder_of_grayscale_images_gives_one_channel(tmp_path):
    Image.fromarray(_noise(16, 16, channels=1, seed=6)).save(tmp_path / "a.png")
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(tmp_path / "b.png")  # I;16
    la = np.zeros((16, 16, 2), dtype=np.uint8)  # black, fully transparent
    Image.fromarray(la, mode="LA").save(tmp_path / "c.png")

    dataset = load_image_dataset(train_data_dir=str(tmp_path), resolution=16)

    assert dataset.num_channels == 1 and dataset.images.shape == (3, 1, 16, 16)
    assert _all_items(dataset)[1:].eq(1.0).all()  # 16-bit white, and transparent LA over white
    assert dataset.skipped == [] and "skipped" not in dataset.summary()


def test_num_channels_forces_gray_or_color(tmp_path):
    color = np.zeros((16, 16, 3), dtype=np.uint8)
    color[..., 0] = 200
    Image.fromarray(color).save(tmp_path / "red.png")

    gray = load_image_dataset(train_data_dir=str(tmp_path), num_channels=1)
    color_again = load_image_dataset(train_data_dir=str(tmp_path), num_channels=3)

    assert gray.images.shape == (1, 1, 16, 16)
    assert gray.images.unique().tolist() == [60]  # ITU-R 601-2 luma: 200 * 299 / 1000 = 59.8
    assert color_again.images.shape == (1, 3, 16, 16)
    with pytest.raises(InputError, match="--num_channels 2") as excinfo:
        load_image_dataset(train_data_dir=str(tmp_path), num_channels=2)
    _assert_one_line_input_error(excinfo)


@pytest.mark.parametrize("holding", HOLDINGS)
def test_resize_is_shorter_side_bilinear_like_torchvision(tmp_path, holding):
    original = _noise(32, 64, seed=7)  # H=32, W=64
    Image.fromarray(original).save(tmp_path / "wide.png")

    dataset = load_image_dataset(train_data_dir=str(tmp_path), resolution=16, **HOLDINGS[holding])

    # not square after resize: kept whole for a random crop per access
    assert not isinstance(dataset.images, torch.Tensor) and dataset.images[0].shape == (3, 16, 32)
    expected = np.asarray(Image.fromarray(original).resize((32, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(dataset.images[0].permute(1, 2, 0).numpy(), expected)


# ---------------------------------------------------------------------------------------------------------
# augmentation


@pytest.fixture
def ramp_folder(tmp_path: Path) -> Path:
    """One 32x16 (W x H) gray image whose value is 8 * column: a crop's first column tells its offset."""
    ramp = np.tile((np.arange(32) * 8).astype(np.uint8), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    return tmp_path


def _left_offset(item: torch.Tensor) -> int:
    return int(round((item[0, 0, 0].item() + 1.0) * 127.5 / 8))


def test_center_crop_of_a_non_square_image_is_the_middle(ramp_folder, tmp_path):
    wide = load_image_dataset(train_data_dir=str(ramp_folder), resolution=16, center_crop=True)
    (tmp_path / "tall").mkdir()
    tall_ramp = np.tile((np.arange(32) * 8).astype(np.uint8)[:, None], (1, 16))  # W=16, H=32, 8 * row
    Image.fromarray(tall_ramp).save(tmp_path / "tall" / "tall.png")
    tall = load_image_dataset(train_data_dir=str(tmp_path / "tall"), resolution=16, center_crop=True)

    assert isinstance(wide.images, torch.Tensor) and wide.images.shape == (1, 1, 16, 16)
    assert wide.images[0, 0, 0].tolist() == [8 * column for column in range(8, 24)]  # columns 8..23 of 32
    assert tall.images[0, 0, :, 0].tolist() == [8 * row for row in range(8, 24)]  # rows 8..23 of 32


def test_random_crop_and_flip_come_from_a_per_item_stream_like_torchvision(ramp_folder):
    dataset = load_image_dataset(train_data_dir=str(ramp_folder), resolution=16, random_flip=True)
    draws = []
    for epoch in range(64):
        dataset.set_epoch(epoch, seed=3)
        draws.append(dataset[0])
    for epoch in (0, 17, 63):  # reproducible per (seed, epoch, index), whatever was fetched before
        dataset.set_epoch(epoch, seed=3)
        assert torch.equal(dataset[0], draws[epoch])

    # Same draws, same order as torchvision: RandomCrop.get_params (top, then left), RandomHorizontalFlip.
    for epoch, draw in enumerate(draws):
        dataset.set_epoch(epoch, seed=3)
        generator = augmentation_generator(3, epoch, 0)
        top = torch.randint(0, 1, size=(1,), generator=generator).item()
        left = torch.randint(0, 32 - 16 + 1, size=(1,), generator=generator).item()
        flipped = torch.rand(1, generator=generator).item() < 0.5
        assert top == 0
        row = draw[0, 0]
        assert bool(row[0] > row[-1]) == flipped  # the ramp decreases only when flipped
        assert _left_offset(draw.flip(-1) if flipped else draw) == left

    flips = [bool(draw[0, 0, 0] > draw[0, 0, -1]) for draw in draws]
    assert any(flips) and not all(flips)  # both orientations occur
    assert len({_left_offset(d.flip(-1) if f else d) for d, f in zip(draws, flips)}) > 5  # crops really move
    other = []  # another seed, another stream
    for epoch in range(16):
        dataset.set_epoch(epoch, seed=4)
        other.append(dataset[0])
    assert any(not torch.equal(a, b) for a, b in zip(other, draws[:16]))


def test_augmentation_never_touches_the_global_rng(ramp_folder):
    """A prefetching or skipping DataLoader must not shift the training noise: fetches leave torch's RNG alone."""
    for kwargs in ({"center_crop": True}, {"random_flip": True}, {}):
        dataset = load_image_dataset(train_data_dir=str(ramp_folder), resolution=16, **kwargs)
        torch.manual_seed(0)
        state = torch.get_rng_state()
        first = dataset[0]
        batch = dataset.__getitems__([0, 0])
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(batch[0], first) and torch.equal(batch[1], first)


# ---------------------------------------------------------------------------------------------------------
# input errors: one line, naming the input


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="--train_data_dir .* does not exist") as excinfo:
        load_image_dataset(train_data_dir=str(tmp_path / "nope"))
    _assert_one_line_input_error(excinfo)


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(InputError, match="--train_data_dir .* is not a directory") as excinfo:
        load_image_dataset(train_data_dir=str(tmp_path / "file.png"))
    _assert_one_line_input_error(excinfo)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match=r"--train_data_dir .* is empty: put images \(.png, .jpg, ...\) in it") as e:
        load_image_dataset(train_data_dir=str(tmp_path))
    _assert_one_line_input_error(e)
    (tmp_path / "metadata.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="--train_data_dir .* has no files besides metadata.jsonl"):
        load_image_dataset(train_data_dir=str(tmp_path))


def test_folder_with_only_unusable_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.png").write_bytes(_truncated_png())
    (tmp_path / "c.json").write_text("{}")
    Image.new("L", (4, 4)).save(tmp_path / "d.png")
    with pytest.raises(
        InputError,
        match=r"--train_data_dir .*: none of the 4 files could be used "
        r"\(2 not an image, 1 corrupt, 1 smaller than --resolution 16 \(4x4\)\)",
    ) as excinfo:
        load_image_dataset(train_data_dir=str(tmp_path))
    _assert_one_line_input_error(excinfo)


@pytest.mark.parametrize("resolution", [0, -16])
def test_bad_resolution(resolution):
    with pytest.raises(InputError, match=f"--resolution {resolution}") as excinfo:
        load_image_dataset(resolution=resolution)
    _assert_one_line_input_error(excinfo)


def test_dataset_name_and_train_data_dir_together(tmp_path):
    with pytest.raises(InputError, match="--dataset_name 'digits' and --train_data_dir .* both given") as excinfo:
        load_image_dataset(dataset_name="digits", train_data_dir=str(tmp_path))
    _assert_one_line_input_error(excinfo)


# ---------------------------------------------------------------------------------------------------------
# Hugging Face datasets


def _image_rows() -> tuple[list[dict], list[np.ndarray]]:
    arrays = [_noise(16, 16, seed=10), _noise(16, 16, seed=11)]
    rows = [{"bytes": _png_bytes(Image.fromarray(a)), "path": None} for a in arrays]
    rows.insert(1, {"bytes": _truncated_png(), "path": None})  # row 1 is corrupt
    return rows, arrays


@pytest.mark.parametrize("holding", HOLDINGS)
def test_dataset_saved_to_disk_loads_and_skips_corrupt_rows(tmp_path, offline, holding):
    import datasets

    rows, arrays = _image_rows()
    table = datasets.Dataset.from_dict({"label": [0, 1, 2], "picture": rows}).cast_column("picture", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))

    # "picture": the first Image column
    dataset = load_image_dataset(dataset_name=str(tmp_path / "saved"), resolution=16, **HOLDINGS[holding])

    assert len(dataset) == 2 and dataset.num_channels == 3
    for item, expected in zip(_all_items(dataset), arrays):
        np.testing.assert_array_equal(_as_array(item), expected)
    assert dataset.skipped == [("row 1", "corrupt")]
    assert dataset.contents().endswith("column 'picture'; skipped 1 rows: 1 corrupt")

    with pytest.raises(InputError, match=r"--image_column 'img' .*available columns: label, picture") as excinfo:
        load_image_dataset(dataset_name=str(tmp_path / "saved"), image_column="img")
    _assert_one_line_input_error(excinfo)


def test_dataset_dict_saved_to_disk_takes_the_split(tmp_path, offline):
    import datasets

    rows, arrays = _image_rows()
    image = datasets.Image()
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": rows[:1]}).cast_column("image", image),
        test=datasets.Dataset.from_dict({"image": rows[2:]}).cast_column("image", image),
    )
    splits.save_to_disk(str(tmp_path / "splits"))

    test = load_image_dataset(dataset_name=str(tmp_path / "splits"), split="test")

    np.testing.assert_array_equal(_as_array(test[0]), arrays[1])
    with pytest.raises(InputError, match="has no split 'validation'; available splits: train, test"):
        load_image_dataset(dataset_name=str(tmp_path / "splits"), split="validation")


def test_dataset_without_an_image_column_lists_columns(tmp_path, offline):
    import datasets

    datasets.Dataset.from_dict({"text": ["a"], "n": [1]}).save_to_disk(str(tmp_path / "texts"))
    with pytest.raises(InputError, match=r"no 'image' column .*--image_column.*available columns: text, n"):
        load_image_dataset(dataset_name=str(tmp_path / "texts"))


def test_local_image_folder_as_dataset_name_goes_through_load_dataset(tmp_path, offline):
    Image.fromarray(_noise(16, 16, seed=12)).save(tmp_path / "only.png")

    dataset = load_image_dataset(dataset_name=str(tmp_path), cache_dir=str(tmp_path / "cache"))

    assert len(dataset) == 1 and dataset.source.startswith(f"dataset {str(tmp_path)!r}")


def test_hub_dataset_while_offline_says_offline(tmp_path, offline):
    with pytest.raises(InputError, match=r"--dataset_name 'someone/nonexistent-dataset' .*appear to be offline") as e:
        load_image_dataset(dataset_name="someone/nonexistent-dataset", cache_dir=str(tmp_path / "cache"))
    _assert_one_line_input_error(e)
    assert "--train_data_dir" in str(e.value) and "save_to_disk" in str(e.value)
