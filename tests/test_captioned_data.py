"""ddpm_hub.captioned_data: the shapes source, imagefolder metadata, saved datasets, captions, augmentation, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hub.data.captioned import CaptionedImageDataset, load_captioned_dataset
from ddpm_hub.data import ImageDataset
from ddpm_hub.errors import InputError
from ddpm_hub.data.shapes import generate_shapes, score_prompt_adherence

# ---------------------------------------------------------------------------------------------------------
# helpers


def _solid(value: int, size: int = 16) -> np.ndarray:
    """A uint8 [size x size x 3] image whose pixels encode `value`, so an image tells which file it came from."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[..., 0], image[..., 1] = value, 255 - value
    image[0, 0, 2] = value  # a marker pixel, so a flip is visible
    return image


def _value(item: torch.Tensor) -> int:
    """Which `_solid` image a [3 x H x W] item in [-1, 1] is."""
    return int(round((float(item[0].mean()) + 1.0) * 127.5))


def _assert_one_line(excinfo: pytest.ExceptionInfo) -> None:
    assert isinstance(excinfo.value, InputError) and "\n" not in str(excinfo.value)


@pytest.fixture
def captioned_folder(tmp_path: Path) -> Path:
    """An imagefolder: a metadata.jsonl in shuffled order with a string, an empty, a missing and a list caption,
    a nested file, plus an unlisted image, a listed missing file and a listed corrupt file."""
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    for value, name in [(10, "b.png"), (20, "a.png"), (30, "sub/c.png"), (40, "d.png"), (50, "e.png"),
                        (60, "unlisted.png")]:
        Image.fromarray(_solid(value)).save(root / name)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image, not listed: ignored")
    rows = [
        {"file_name": "sub/c.png", "text": "thirty"},
        {"file_name": "a.png", "text": "twenty", "other": 1},
        {"file_name": "b.png", "text": "ten"},
        {"file_name": "d.png", "text": ""},
        {"file_name": "e.png", "text": ["fifty", "cinquante", "fuenfzig"]},
        {"file_name": "gone.png", "text": "missing"},
        {"file_name": "corrupt.png", "text": "broken"},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return root


# ---------------------------------------------------------------------------------------------------------
# shapes


def test_shapes_is_the_default_with_5000_generated_images():
    dataset = load_captioned_dataset()

    reference = generate_shapes(5000, resolution=32, seed=0)
    assert isinstance(dataset, CaptionedImageDataset) and isinstance(dataset, ImageDataset)
    assert torch.equal(dataset.images, reference.images) and dataset.captions == reference.captions
    assert dataset.summary() == ("loaded 5000 images (3 channels, 32x32) from shapes (built-in, 5000 images, "
                                 "seed 0); captions from the generator (18 distinct)")


def test_shapes_batches_carry_pixels_and_matching_captions():
    dataset = load_captioned_dataset("shapes", resolution=32, num_images=300, seed=4, random_flip=True)
    batch = dataset.__getitems__(list(range(300)))

    assert set(batch) == {"pixel_values", "captions"}
    pixels = batch["pixel_values"]
    assert pixels.shape == (300, 3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() == -1.0 and pixels.max() <= 1.0
    assert batch["captions"] == generate_shapes(300, 32, seed=4).captions
    # the geometric check: each (possibly flipped) image shows what its caption says
    assert score_prompt_adherence(pixels, batch["captions"]).accuracy == 1.0
    item = dataset[7]
    assert torch.equal(item["pixel_values"], pixels[7]) and item["caption"] == batch["captions"][7]


def test_shapes_seed_and_count_and_prefix():
    small = load_captioned_dataset(num_images=20, seed=3, resolution=16)
    large = load_captioned_dataset(num_images=50, seed=3, resolution=16)
    other = load_captioned_dataset(num_images=20, seed=4, resolution=16)

    assert len(small) == 20 and torch.equal(small.images, large.images[:20]) and small.captions == large.captions[:20]
    assert not torch.equal(small.images, other.images)


def test_a_dataloader_with_the_identity_collate_yields_caption_batches():
    dataset = load_captioned_dataset(num_images=10)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=lambda batch: batch)
    batches = list(loader)
    assert [len(b["captions"]) for b in batches] == [4, 4, 2]
    assert batches[2]["pixel_values"].shape == (2, 3, 32, 32) and batches[2]["captions"] == dataset.captions[8:]


# ---------------------------------------------------------------------------------------------------------
# augmentation and caption draws


def test_augmentation_is_image_datasets_and_depends_only_on_seed_and_epoch():
    captioned = load_captioned_dataset(num_images=64, random_flip=True)
    plain = ImageDataset(captioned.images, resolution=32, source="same images", random_flip=True)
    indices = list(range(64))

    def pixels(dataset, epoch, seed):
        dataset.set_epoch(epoch, seed=seed)
        batch = dataset.__getitems__(indices)
        return batch["pixel_values"] if isinstance(batch, dict) else batch

    torch.manual_seed(0)
    state = torch.get_rng_state()
    epoch0 = pixels(captioned, 0, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(epoch0, pixels(plain, 0, seed=5))  # exactly ImageDataset's crop/flip draws
    assert torch.equal(pixels(captioned, 1, seed=5), pixels(plain, 1, seed=5))
    assert torch.equal(pixels(captioned, 0, seed=5), epoch0)  # same (seed, epoch): same images
    assert not torch.equal(pixels(captioned, 1, seed=5), epoch0)
    assert not torch.equal(pixels(captioned, 0, seed=6), epoch0)
    # each item is its image or its mirror image, and both occur
    stored = captioned.images.float() / 127.5 - 1.0
    same = (epoch0 == stored).flatten(1).all(1)
    mirrored = (epoch0 == stored.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(same.sum()) < 64
    # fetch order does not matter (a DataLoader may prefetch or skip)
    captioned.set_epoch(0, seed=5)
    assert torch.equal(captioned.__getitems__([9])["pixel_values"][0], epoch0[9])


def test_a_list_caption_is_drawn_per_seed_epoch_and_index():
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    options = ("one", "two", "three")
    dataset = CaptionedImageDataset(images, ["fixed", options, ""], resolution=8, source="test")

    def captions(epoch, seed=0):
        dataset.set_epoch(epoch, seed=seed)
        return dataset.__getitems__([0, 1, 2])["captions"]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    drawn = [captions(epoch)[1] for epoch in range(30)]
    assert torch.equal(torch.get_rng_state(), state)
    assert set(drawn) == set(options)  # every option is drawn over the epochs
    assert [captions(epoch)[1] for epoch in range(30)] == drawn  # and the same ones again
    assert [captions(epoch, seed=1)[1] for epoch in range(30)] != drawn
    assert captions(3)[0] == "fixed" and captions(3)[2] == ""
    assert dataset.summary() == ("loaded 3 images (3 channels, 8x8) from test; captions from captions "
                                 "(5 distinct, 1 empty (unconditional), 1 with several to draw from)")


# ---------------------------------------------------------------------------------------------------------
# imagefolder with metadata.jsonl


HOLDINGS = {"store": {}, "memory": {"no_data_cache": True}}  # the decoded store (default) and the in-memory path


@pytest.mark.parametrize("holding", HOLDINGS)
def test_imagefolder_captions_follow_their_files(captioned_folder, holding):
    dataset = load_captioned_dataset(train_data_dir=str(captioned_folder), resolution=16, **HOLDINGS[holding])

    values = [_value(dataset[i]["pixel_values"]) for i in range(len(dataset))]
    assert values == [20, 10, 40, 50, 30]  # sorted by path: a, b, d, e, sub/c
    assert dataset.captions == ["twenty", "ten", "", ("fifty", "cinquante", "fuenfzig"), "thirty"]
    for index, value in enumerate(values):
        np.testing.assert_array_equal(
            dataset.images[index].permute(1, 2, 0).numpy(), _solid(value)
        )
    skipped = {Path(name).name: reason for name, reason in dataset.skipped}
    assert skipped == {"corrupt.png": "corrupt", "gone.png": "missing file", "unlisted.png": "not listed in metadata"}
    assert dataset.contents() == (
        f"loaded 5 images (3 channels, 16x16) from folder {str(captioned_folder)!r}; skipped 3 files: 1 corrupt, "
        "1 missing file, 1 not listed in metadata; captions from column 'text' (7 distinct, 1 empty "
        "(unconditional), 1 with several to draw from)"
    )


def test_imagefolder_matches_the_datasets_imagefolder_loader(tmp_path, offline):
    import datasets

    root = tmp_path / "plain"
    (root / "nested").mkdir(parents=True)
    rows = []
    for value in range(0, 250, 25):
        name = f"nested/{value}.png" if value % 2 else f"{value:03d}.png"
        Image.fromarray(_solid(value)).save(root / name)
        rows.append({"file_name": name, "caption": f"picture number {value}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in reversed(rows)))

    ours = load_captioned_dataset(train_data_dir=str(root), caption_column="caption", resolution=16)
    reference = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=str(tmp_path / "c"))

    ours_pairs = sorted((dataset_image.numpy().tobytes(), caption)
                        for dataset_image, caption in zip(ours.images, ours.captions))
    reference_pairs = sorted((np.asarray(row["image"].convert("RGB")).transpose(2, 0, 1).tobytes(), row["caption"])
                             for row in reference)
    assert len(ours_pairs) == 10 and ours_pairs == reference_pairs


@pytest.mark.parametrize("holding", HOLDINGS)
def test_metadata_csv_in_a_subfolder_and_num_images(tmp_path, holding):
    root = tmp_path / "csv"
    (root / "part").mkdir(parents=True)
    for value in (1, 2, 3):
        Image.fromarray(_solid(value * 50)).save(root / "part" / f"{value}.png")
    (root / "part" / "metadata.csv").write_text('file_name,text\n3.png,"three, with a comma"\n1.png,one\n2.png,two\n')

    dataset = load_captioned_dataset(train_data_dir=str(root), resolution=16, **HOLDINGS[holding])
    first_two = load_captioned_dataset(train_data_dir=str(root), resolution=16, num_images=2, **HOLDINGS[holding])

    assert dataset.captions == ["one", "two", "three, with a comma"]
    assert [_value(dataset[i]["pixel_values"]) for i in range(3)] == [50, 100, 150]
    assert first_two.captions == ["one", "two"] and first_two.source.endswith(", first 2 usable")


# ---------------------------------------------------------------------------------------------------------
# datasets: save_to_disk and load_dataset


def _saved(tmp_path: Path, captions: list, column: str = "text", name: str = "saved") -> Path:
    import datasets

    images = [Image.fromarray(_solid(40 * i + 5)) for i in range(len(captions))]
    table = datasets.Dataset.from_dict({"image": images, column: captions, "id": list(range(len(captions)))})
    path = tmp_path / name
    table.cast_column("image", datasets.Image()).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("holding", HOLDINGS)
def test_save_to_disk_round_trip(tmp_path, offline, holding):
    path = _saved(tmp_path, ["a cat", "", "a dog", "a cow"])

    dataset = load_captioned_dataset(dataset_name=str(path), resolution=16, random_flip=True, **HOLDINGS[holding])

    assert dataset.captions == ["a cat", "", "a dog", "a cow"]
    assert [_value(dataset.images[i].float() / 127.5 - 1) for i in range(4)] == [5, 45, 85, 125]
    batch = dataset.__getitems__([3, 0])
    assert batch["captions"] == ["a cow", "a cat"] and batch["pixel_values"].shape == (2, 3, 16, 16)
    assert dataset.contents() == (
        f"loaded 4 images (3 channels, 16x16) from dataset saved at {str(path)!r} (split 'train', 4 rows), "
        "column 'image'; captions from column 'text' (4 distinct, 1 empty (unconditional))"
    )


def test_a_list_of_captions_column_and_a_dataset_dict_split(tmp_path, offline):
    import datasets

    images = [Image.fromarray(_solid(v)) for v in (7, 70)]
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": images[:1], "sentences": [["first", "premier"]]}),
        test=datasets.Dataset.from_dict({"image": images[1:], "sentences": [["only one"]]}),
    )
    splits.save_to_disk(str(tmp_path / "splits"))

    train = load_captioned_dataset(dataset_name=str(tmp_path / "splits"), caption_column="sentences", resolution=16)
    test = load_captioned_dataset(dataset_name=str(tmp_path / "splits"), caption_column="sentences",
                                  resolution=16, split="test")

    assert train.captions == [("first", "premier")] and test.captions == ["only one"]
    assert _value(test[0]["pixel_values"]) == 70
    with pytest.raises(InputError, match="has no split 'validation'; available splits: train, test"):
        load_captioned_dataset(dataset_name=str(tmp_path / "splits"), caption_column="sentences", split="validation")


def test_a_local_imagefolder_as_dataset_name_goes_through_load_dataset(captioned_folder, tmp_path, offline):
    # datasets' own imagefolder loader (no save_to_disk); it cannot mix string and list captions, so keep strings
    lines = (captioned_folder / "metadata.jsonl").read_text().splitlines()
    kept = [json.loads(line) for line in lines if json.loads(line)["file_name"] in ("a.png", "b.png", "sub/c.png")]
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    for row in kept:
        (folder / row["file_name"]).write_bytes((captioned_folder / row["file_name"]).read_bytes())
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in kept))

    dataset = load_captioned_dataset(dataset_name=str(folder), resolution=16, cache_dir=str(tmp_path / "cache"))

    pairs = sorted((_value(dataset[i]["pixel_values"]), dataset.captions[i]) for i in range(len(dataset)))
    assert pairs == [(10, "ten"), (20, "twenty"), (30, "thirty")]
    assert dataset.source.startswith(f"dataset {str(folder)!r}")


def test_hub_dataset_while_offline_gives_data_pys_message(tmp_path, offline):
    with pytest.raises(InputError, match=r"--dataset_name 'someone/nonexistent-dataset' .*appear to be offline") as e:
        load_captioned_dataset(dataset_name="someone/nonexistent-dataset", cache_dir=str(tmp_path / "cache"))
    _assert_one_line(e)
    assert "--train_data_dir" in str(e.value) and "save_to_disk" in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# errors


def test_missing_caption_column_lists_the_columns(tmp_path, captioned_folder, offline):
    path = _saved(tmp_path, ["a", "b"])
    with pytest.raises(InputError, match=r"--caption_column 'caption' is not a column of --dataset_name .*"
                                         r"available columns: image, text, id") as excinfo:
        load_captioned_dataset(dataset_name=str(path), caption_column="caption")
    _assert_one_line(excinfo)

    with pytest.raises(InputError, match=r"--caption_column 'caption' is not a column of the metadata in "
                                         r"--train_data_dir .*available columns: file_name, text, other") as excinfo:
        load_captioned_dataset(train_data_dir=str(captioned_folder), caption_column="caption", resolution=16)
    _assert_one_line(excinfo)


def test_bad_image_column_and_a_non_text_caption_column(tmp_path, offline):
    path = _saved(tmp_path, ["a", "b"])
    with pytest.raises(InputError, match=r"--image_column 'img' is not a column .*available columns: image, text, id"):
        load_captioned_dataset(dataset_name=str(path), image_column="img")
    with pytest.raises(InputError, match=r"--caption_column 'id' of --dataset_name .* holds .*int64.*, not text.*"
                                         r"available columns: image, text, id") as excinfo:
        load_captioned_dataset(dataset_name=str(path), caption_column="id")
    _assert_one_line(excinfo)


def test_captions_empty_everywhere(tmp_path, offline):
    path = _saved(tmp_path, ["", "  ", None])
    with pytest.raises(InputError, match=r"--caption_column 'text' is empty in every one of the 3 usable rows of "
                                         r"--dataset_name '.*': .*available columns: image, text, id") as excinfo:
        load_captioned_dataset(dataset_name=str(path), resolution=16)
    _assert_one_line(excinfo)


def test_non_text_captions_in_some_rows_are_skipped(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for value in (1, 2, 3):
        Image.fromarray(_solid(value * 60)).save(root / f"{value}.png")
    rows = [{"file_name": "1.png", "text": "good"}, {"file_name": "2.png", "text": 42}, {"file_name": "3.png"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))

    dataset = load_captioned_dataset(train_data_dir=str(root), resolution=16)

    assert dataset.captions == ["good", ""]  # a missing caption is the unconditional "", kept
    assert [(Path(name).name, reason) for name, reason in dataset.skipped] == [("2.png", "caption not text (int)")]


@pytest.mark.parametrize(
    "metadata, match",
    [
        (None, r"has no metadata.jsonl or metadata.csv: give a folder of images with a metadata.jsonl"),
        ('{"file_name": "a.png", "text": "x"}\n{"text": "y"}\n', r"metadata.jsonl line 2 has no 'file_name'"),
        ('{"file_name": "a.png", "text": "x"}\nnot json\n', r"metadata.jsonl' line 2 is not JSON"),
        ('["a.png", "x"]\n', r"line 1 is not a JSON object"),
        ('{"file_name": "a.png", "text": "x"}\n{"file_name": "./a.png", "text": "y"}\n', r"a.png is listed twice"),
    ],
)
def test_bad_metadata(tmp_path, metadata, match):
    root = tmp_path / "bad"
    root.mkdir()
    Image.fromarray(_solid(9)).save(root / "a.png")
    if metadata is not None:
        (root / "metadata.jsonl").write_text(metadata)
    with pytest.raises(InputError, match=match) as excinfo:
        load_captioned_dataset(train_data_dir=str(root), resolution=16)
    _assert_one_line(excinfo)


def test_a_folder_where_nothing_is_usable(tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    Image.fromarray(_solid(9, size=8)).save(root / "a.png")
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "tiny"}\n')
    with pytest.raises(InputError, match=r"--train_data_dir '.*': none of the 1 files could be used "
                                         r"\(1 smaller than --resolution 16 \(8x8\)\)") as excinfo:
        load_captioned_dataset(train_data_dir=str(root), resolution=16)
    _assert_one_line(excinfo)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_data_dir": "/nonexistent/folder"}, "--train_data_dir '/nonexistent/folder' does not exist"),
        ({"dataset_name": "shapes", "train_data_dir": "x"}, "were both given: use one"),
        ({"num_channels": 1}, "--num_channels 1 is not supported for the shapes dataset: its captions name colours"),
        ({"num_channels": 2}, "--num_channels 2 is not supported: use 1"),
        ({"num_images": 0}, "--num_images 0 must be a positive integer"),
        ({"resolution": 8}, "--resolution 8 is too small for the shapes dataset: use at least 16"),
        ({"resolution": 0}, "--resolution 0 must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match) as excinfo:
        load_captioned_dataset(**kwargs)
    _assert_one_line(excinfo)
