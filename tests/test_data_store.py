"""ddpm_hub.data.store: the decoded store holds the in-memory path's bytes, is keyed honestly (a changed, added or
removed file, another resolution or crop rebuilds it), is rebuilt with a warning when damaged, is built once by one of
two processes; and --streaming decodes the same pixels."""

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hub.data import load_image_dataset, load_streaming_image_dataset
from ddpm_hub.data.dataset import PackedImages
from ddpm_hub.data.streaming import NOT_EXACT
from ddpm_hub.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise(32, 32, seed=99)).save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """PNG and JPEG, RGB, gray, RGBA, 16-bit, palette, CMYK, wide and tall, plus a corrupt file, a text file and
    an image too small for resolution 16."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_noise(24, 40, seed=1)).save(root / "wide.png")
    Image.fromarray(_noise(40, 20, seed=2)).save(root / "tall.jpg", quality=90)
    Image.fromarray(_noise(20, 20, channels=1, seed=3)).save(root / "gray.jpg")
    rgba = _noise(18, 18, channels=4, seed=4)
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray((_noise(17, 23, channels=1, seed=5).astype(np.uint16) * 257)).save(root / "deep.png")
    palette = Image.fromarray(_noise(16, 30, channels=1, seed=6) // 64).convert("P")
    palette.putpalette([0, 0, 255, 0, 255, 0, 255, 0, 0, 9, 9, 9] * 64)
    palette.save(root / "palette.gif")
    Image.fromarray(_noise(20, 22, seed=7)).convert("CMYK").save(root / "sub" / "cmyk.jpg")
    (root / "corrupt.png").write_bytes(_truncated_png())
    (root / "notes.txt").write_text("not a picture\n")
    Image.fromarray(_noise(8, 30, seed=8)).save(root / "small.png")
    return root


def _same_images(a, b) -> bool:
    return len(a.images) == len(b.images) and all(torch.equal(x, y) for x, y in zip(a.images, b.images))


def _cache(tmp_path: Path) -> str:
    return str(tmp_path / "stores")


# ------------------------------------------------------------------------------------------ the same bytes
@pytest.mark.parametrize("center_crop", [False, True])
@pytest.mark.parametrize("num_channels", [None, 1, 3])
def test_the_store_holds_the_bytes_of_the_in_memory_path(photos, tmp_path, center_crop, num_channels):
    settings = dict(train_data_dir=str(photos), resolution=16, center_crop=center_crop, num_channels=num_channels)
    memory = load_image_dataset(**settings, no_data_cache=True)
    stored = load_image_dataset(**settings, data_cache_dir=_cache(tmp_path))

    assert stored.store is not None and stored.store.is_relative_to(tmp_path / "stores")
    assert _same_images(stored, memory) and len(stored) == 7
    assert stored.num_channels == memory.num_channels == (num_channels or 3)
    assert stored.skipped == memory.skipped and len(stored.skipped) == 3
    assert isinstance(stored.images, torch.Tensor if center_crop else PackedImages)
    for epoch in (0, 5):  # the same augmentation draws on top
        for dataset in (stored, memory):
            dataset.set_epoch(epoch, seed=2)
        assert torch.equal(stored.__getitems__([6, 0, 3]), memory.__getitems__([6, 0, 3]))


def test_an_all_gray_folder_is_stored_with_one_channel(tmp_path):
    root = tmp_path / "gray"
    root.mkdir()
    Image.fromarray(_noise(16, 20, channels=1, seed=1)).save(root / "a.png")
    Image.fromarray(_noise(24, 16, channels=1, seed=2).astype(np.uint16) * 250).save(root / "b.png")  # I;16
    memory = load_image_dataset(train_data_dir=str(root), resolution=16, no_data_cache=True)
    stored = load_image_dataset(train_data_dir=str(root), resolution=16, data_cache_dir=_cache(tmp_path))

    assert stored.num_channels == memory.num_channels == 1 and _same_images(stored, memory)
    assert (stored.store / "pixels.u8").stat().st_size == 16 * 20 + 24 * 16  # one plane each, not three


def test_a_saved_dataset_store_holds_the_bytes_of_the_in_memory_path(tmp_path, offline):
    import datasets

    def encoded(image: Image.Image, kind: str) -> dict:
        buffer = io.BytesIO()
        image.save(buffer, format=kind)
        return {"bytes": buffer.getvalue(), "path": None}

    rows = [encoded(Image.fromarray(_noise(20, 30, seed=1)), "PNG"),
            encoded(Image.fromarray(_noise(18, 18, channels=4, seed=2), mode="RGBA"), "PNG"),
            {"bytes": _truncated_png(), "path": None},
            encoded(Image.fromarray(_noise(30, 16, channels=1, seed=3)), "JPEG"),
            encoded(Image.fromarray(_noise(8, 8, seed=4)), "PNG")]
    table = datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))
    settings = dict(dataset_name=str(tmp_path / "saved"), resolution=16)

    memory = load_image_dataset(**settings, no_data_cache=True)
    stored = load_image_dataset(**settings, data_cache_dir=_cache(tmp_path))

    assert stored.store is not None and _same_images(stored, memory) and len(stored) == 3
    assert stored.skipped == memory.skipped == [("row 2", "corrupt"), ("row 4", "smaller than --resolution 16 (8x8)")]
    assert stored.contents() == memory.contents()


def test_the_decode_shows_its_progress_and_skips(photos, tmp_path, capsys):
    load_image_dataset(train_data_dir=str(photos), resolution=16, data_cache_dir=_cache(tmp_path))
    bar = capsys.readouterr().err
    assert "decoding" in bar and "file/s" in bar and "/10 " in bar
    assert "skipped 3: 1 corrupt, 1 not an image, 1 smaller than --resolution 16" in bar


def test_packed_images_are_views_of_one_flat_tensor():
    flat = torch.arange(2 * 3 * 4 + 2 * 2 * 5, dtype=torch.uint8)
    packed = PackedImages(flat, 2, np.array([[3, 4], [2, 5]]))
    assert len(packed) == 2 and packed[0].shape == (2, 3, 4) and packed[1].shape == (2, 2, 5)
    assert packed[1].flatten().tolist() == list(range(24, 44)) and torch.equal(packed[-1], packed[1])
    assert packed[0].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # no copy
    with pytest.raises(IndexError):
        packed[2]


# ------------------------------------------------------------------------------------------ an honest key
def _load(folder: Path, tmp_path: Path, **settings):
    return load_image_dataset(train_data_dir=str(folder), data_cache_dir=_cache(tmp_path),
                              **{"resolution": 16, **settings})


def test_an_unchanged_folder_reuses_the_store_without_decoding(photos, tmp_path, monkeypatch):
    first = _load(photos, tmp_path)
    before = (first.store / "pixels.u8").stat()

    import ddpm_hub.data.images as images

    monkeypatch.setattr(images, "decode_files", lambda *a, **k: pytest.fail("decoded again"))
    second = _load(photos, tmp_path)

    after = (second.store / "pixels.u8").stat()
    assert second.store == first.store and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _same_images(first, second) and second.skipped == first.skipped


def _rewrite(photos: Path) -> None:
    Image.fromarray(_noise(24, 40, seed=50)).save(photos / "wide.png")


def _touch(photos: Path) -> None:
    stat = (photos / "wide.png").stat()
    os.utime(photos / "wide.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same bytes, newer


def _add(photos: Path) -> None:
    Image.fromarray(_noise(16, 16, seed=51)).save(photos / "sub" / "new.png")


def _remove(photos: Path) -> None:
    (photos / "gray.jpg").unlink()


@pytest.mark.parametrize("change", [_rewrite, _touch, _add, _remove])
def test_a_changed_added_or_removed_file_rebuilds_and_replaces_the_store(photos, tmp_path, change):
    old = _load(photos, tmp_path)
    change(photos)

    new = _load(photos, tmp_path)

    assert new.store != old.store and new.store.parent == old.store.parent  # same source, another state
    assert not old.store.exists()  # the earlier state's store is deleted
    assert _same_images(new, load_image_dataset(train_data_dir=str(photos), resolution=16, no_data_cache=True))


def test_another_resolution_or_crop_is_another_store_and_both_stay(photos, tmp_path):
    stores = {_load(photos, tmp_path).store, _load(photos, tmp_path, resolution=17).store,
              _load(photos, tmp_path, center_crop=True).store, _load(photos, tmp_path, num_channels=1).store}
    assert len(stores) == 4 and len({store.parent for store in stores}) == 4 and all(s.is_dir() for s in stores)


# ------------------------------------------------------------------------------------------ damage
def _truncate(store: Path) -> None:
    with open(store / "pixels.u8", "r+b") as f:
        f.truncate(100)


def _append(store: Path) -> None:
    with open(store / "pixels.u8", "ab") as f:
        f.write(b"\0" * 16)


def _edit_manifest(field: str, value):
    def edit(store: Path) -> None:
        manifest = json.loads((store / "manifest.json").read_text())
        manifest[field] = value
        (store / "manifest.json").write_text(json.dumps(manifest))
    edit.__name__ = f"manifest_{field}"
    return edit


def _garble_manifest(store: Path) -> None:
    (store / "manifest.json").write_text('{"format": 1, "key": ')


def _drop_manifest(store: Path) -> None:
    (store / "manifest.json").unlink()


def _swap_index(store: Path) -> None:
    index = np.load(store / "index.npy")
    np.save(store / "index.npy", index[::-1].copy())


@pytest.mark.parametrize("damage", [_truncate, _append, _edit_manifest("count", 3), _edit_manifest("key", "0" * 64),
                                    _edit_manifest("format", 0), _garble_manifest, _drop_manifest, _swap_index],
                         ids=lambda damage: damage.__name__.strip("_"))
def test_a_damaged_store_is_rebuilt_with_a_warning_never_read(photos, tmp_path, caplog, damage):
    store = _load(photos, tmp_path).store
    damage(store)

    with caplog.at_level(logging.WARNING, logger="ddpm_hub.data.store"):
        rebuilt = _load(photos, tmp_path)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"the decoded store {store} is damaged" in warnings[0], warnings
    assert rebuilt.store == store
    assert _same_images(rebuilt, load_image_dataset(train_data_dir=str(photos), resolution=16, no_data_cache=True))
    caplog.clear()
    _load(photos, tmp_path)  # whole again: no second warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_nothing_usable_is_an_error_and_stores_nothing(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(_truncated_png())
    with pytest.raises(InputError, match=r"none of the 1 files could be used \(1 corrupt\)"):
        _load(root, tmp_path)
    leftovers = [p for p in (tmp_path / "stores").rglob("*") if p.name != ".lock"]
    assert [p for p in leftovers if p.is_file()] == []


def test_the_cache_flags_contradict_and_a_file_is_not_a_cache(photos, tmp_path):
    with pytest.raises(InputError, match="--no_data_cache and --data_cache_dir .* contradict each other"):
        load_image_dataset(train_data_dir=str(photos), data_cache_dir=str(tmp_path), no_data_cache=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--data_cache_dir .* is a file"):
        load_image_dataset(train_data_dir=str(photos), data_cache_dir=str(tmp_path / "file"))


# ------------------------------------------------------------------------------------------ two processes
TWO_RANKS = textwrap.dedent("""
    import hashlib, logging, sys
    import torch.distributed as dist
    from ddpm_hub.data import load_image_dataset
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dist.init_process_group("gloo")
    dist.barrier()  # both ask for the store at the same moment
    dataset = load_image_dataset(train_data_dir=sys.argv[1], resolution=32, data_cache_dir=sys.argv[2])
    digest = hashlib.sha256(b"".join(image.numpy().tobytes() for image in dataset.images)).hexdigest()
    print(f"rank {dist.get_rank()} store {dataset.store} sha256 {digest} images {len(dataset)}", flush=True)
    dist.barrier()
""")


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on Linux CI")
def test_two_processes_build_the_store_once_and_read_the_same_bytes(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(64):  # enough that the build outlasts the second process's arrival
        Image.fromarray(_noise(192, 256, seed=i)).save(folder / f"{i:02d}.png", compress_level=1)
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29531", str(script), str(folder), str(tmp_path / "stores")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    ranks = sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))
    assert len(ranks) == 2 and ranks[0].split()[2:] == ranks[1].split()[2:]  # one store, the same bytes
    assert log.count("decoded 64 images") == 1  # built once
    assert log.count("waiting for another process to finish decoding") == 1  # the other waited


# ------------------------------------------------------------------------------------------ --streaming
def test_streaming_decodes_the_same_pixels_and_says_resume_is_not_exact(tmp_path, offline, caplog):
    import datasets

    images = [Image.fromarray(_noise(20, 24, seed=i)) for i in range(6)]
    table = datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))
    settings = dict(dataset_name=str(tmp_path / "saved"), resolution=16, center_crop=True)

    with caplog.at_level(logging.WARNING, logger="ddpm_hub.data.streaming"):
        stream = load_streaming_image_dataset(**settings)
    memory = load_image_dataset(**settings, no_data_cache=True)

    assert NOT_EXACT in caplog.text and "not exact" in stream.summary()
    assert torch.equal(stream.first(4), memory.first(4))  # stored order, the same decode
    stream.set_epoch(1, seed=3)
    streamed = sorted(image.numpy().tobytes() for image in stream)  # shuffled, every image once
    assert streamed == sorted(image.numpy().tobytes() for image in memory.first(6))
