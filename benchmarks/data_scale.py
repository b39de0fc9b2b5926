"""Data at scale: the decoded store against the data path of diffusers' train_unconditional.py, and the store's two
candidates (datasets' Arrow cache, our raw uint8 memmap) against each other, on a folder of photo-sized images.

    python benchmarks/data_scale.py generate     # 20,000 images + the first 100 (not timed)
    python benchmarks/data_scale.py stores       # Arrow cache vs memmap store (idle machine)
    python benchmarks/data_scale.py train        # train_ddpm.py vs the example's data path (idle machine)
    python benchmarks/data_scale.py first-step   # the second run's launch, repeated (idle machine)
    python benchmarks/data_scale.py throughput   # training images/s, longer, repeated (idle machine)
    python benchmarks/data_scale.py table        # the tables from the saved results

The folder (`generate`, deterministic per --seed): --images photo-like pictures (a smooth random field, a few
ellipses and rectangles, +-6 levels of noise), each side 256-640 px, half PNG (zlib level 1) and half JPEG (quality
85-95), 5% grayscale, 3% RGBA PNGs, and every 200th file truncated to half its bytes (corrupt); the first 100 are the
small folder the memory figures subtract.

`stores`: both candidates decode the folder at 64 px (shorter side, no crop) with 1 and with 2 worker processes,
from empty caches; then, each in a fresh process, the time to open the finished store again (imports excluded),
random batches of 64 read with a random 64x64 crop (images/s), and the PSS of 2 processes that have each read every
image once.
  - memmap: `ddpm_hub.data.load_image_dataset` (the store as built: `ddpm_hub.data.store`);
  - arrow: datasets' imagefolder, then `map(decode, num_proc=N)` into a fingerprinted Arrow cache file (pixels as
    binary, height, width, skip reason), memory-mapped on open; rows read with `Dataset.__getitem__`.

`train`: the same small UNet2DModel (64x64, no attention, ~0.2M parameters, so that the data path shows), batch 64
per process, AdamW, no EMA, no logger, --steps steps, in runs of:
  - ours: `train_ddpm.py --train_data_dir ... --resolution 64` (the decoded store; first run from an empty
    --data_cache_dir, then a second run), and with --no_data_cache (the in-memory path, decoded every run);
  - the example: a loop written as diffusers' examples/unconditional_image_generation/train_unconditional.py reads
    data: `load_dataset("imagefolder")`, `set_transform` with per-sample PIL Resize(64, bilinear) -> RandomCrop ->
    ToTensor -> Normalize, `DataLoader(num_workers=--example_workers)` (torchvision is not installed here: the
    same operations with PIL and numpy). It stops at the first corrupt file (PIL raises in the transform), so it is
    given the folder's usable files as `data_files`.
Each with 1 process and with 2 (`torchrun --nproc_per_node 2`), on the 20,000 and on the 100 images. Measured: the
time from launch to the first training step (the parent's clock and the child's), training images/s over steps 5 to
--steps, and the sum over every process of the run (launcher, ranks, DataLoader and decode workers) of PSS from
/proc/<pid>/smaps_rollup: after --steps steps, and after each rank has then read its whole share of the data once
(one pass of its DataLoader, no model), which is when a memory-mapped store is fully counted.

`first-step` and `throughput` measure two of the goals on their own, in rounds run alternately so that one slow
launch or a drift of the machine cannot decide them: the launch of a second run against a 100-image run (both with
their store built), and training images/s over --throughput_steps steps, ours against the example.

Every timing needs the machine to itself; results are cached as JSON in --work_dir/results, so
an interrupted run continues; delete a file to measure it again.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESOLUTION = 64
BATCH = 64
CORRUPT_EVERY, CORRUPT_OFFSET = 200, 37
UNET_64 = {"sample_size": RESOLUTION, "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
           "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}


# ------------------------------------------------------------------------------------------------- the folder
def photo(index: int, seed: int) -> tuple[bytes, str]:
    """Image `index` of the folder: (file bytes, suffix). Deterministic in (seed, index)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(256, 641, size=2))
    field = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    kind = rng.random()
    if kind < 0.05:
        image = image.convert("L")
    buffer = io.BytesIO()
    if kind > 0.97:
        alpha = Image.fromarray(rng.integers(128, 256, size=(height, width), dtype=np.uint8))
        image.putalpha(alpha)
        image.save(buffer, format="PNG", compress_level=1)
        suffix = ".png"
    elif rng.random() < 0.5:
        image.save(buffer, format="PNG", compress_level=1)
        suffix = ".png"
    else:
        image.save(buffer, format="JPEG", quality=int(rng.integers(85, 96)))
        suffix = ".jpg"
    data = buffer.getvalue()
    if index % CORRUPT_EVERY == CORRUPT_OFFSET:
        data = data[: len(data) // 2]
    return data, suffix


def _write_photo(job: tuple[int, int, str]) -> int:
    index, seed, folder = job
    data, suffix = photo(index, seed)
    Path(folder, f"{index:05d}{suffix}").write_bytes(data)
    return len(data)


def generate(args: argparse.Namespace) -> None:
    import multiprocessing

    from tqdm import tqdm

    for count in (args.images, args.small_images):
        folder = image_folder(args, count)
        if folder.is_dir() and len(list(folder.iterdir())) == count:
            print(f"{folder}: already there")
            continue
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        jobs = [(i, args.seed, str(tmp)) for i in range(count)]
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            sizes = list(tqdm(pool.imap(_write_photo, jobs, chunksize=16), total=count, desc=f"writing {count}"))
        tmp.rename(folder)
        print(f"{folder}: {count} files, {sum(sizes) / 1e9:.2f} GB")


def image_folder(args: argparse.Namespace, count: int) -> Path:
    return Path(args.work_dir) / f"images-{count}-seed{args.seed}"


def usable_files(folder: Path) -> list[str]:
    """The files the example can read: all but the truncated ones (it cannot skip them)."""
    return sorted(str(p) for p in folder.iterdir() if int(p.stem) % CORRUPT_EVERY != CORRUPT_OFFSET)


# ------------------------------------------------------------------------------------------------- memory
def pss_kb(pid: int) -> int:
    """Proportional set size of one process (shared pages split between their users), in kB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def tree_pss_mb(root_pid: int) -> float:
    """Sum of PSS over a process and all its descendants, in MB."""
    import psutil

    try:
        processes = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += pss_kb(process.pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total / 1024


def watch(command: list[str], marker_dir: Path, ranks: int, env: dict, timeout: float,
          markers: tuple[str, ...] = ("steps", "pass")) -> dict:
    """Run `command`, sampling the PSS of its process tree every 0.25 s (the peak), and at each marker: when every
    rank has written `<marker>-<rank>.json` and waits, sample PSS, then release them. Returns the launch time, the
    markers' payloads (rank 0's) and PSS at each, the peak, and the output's tail."""
    import threading

    shutil.rmtree(marker_dir, ignore_errors=True)
    marker_dir.mkdir(parents=True)
    launched = time.time()
    process = subprocess.Popen(command, env={**env, "DATA_SCALE_MARKERS": str(marker_dir)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    peak, pss = 0.0, {}
    while process.poll() is None:
        if time.time() > launched + timeout:
            process.kill()
            raise SystemExit(f"timed out: {shlex.join(command)}\n{''.join(output)[-3000:]}")
        peak = max(peak, tree_pss_mb(process.pid))
        for name in markers:
            if name not in pss and all((marker_dir / f"{name}-{rank}.json").is_file() for rank in range(ranks)):
                pss[name] = tree_pss_mb(process.pid)
                peak = max(peak, pss[name])
                (marker_dir / f"release-{name}").write_text("")
        time.sleep(0.25)
    reader.join()
    log = "".join(output)
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {shlex.join(command)}\n{log[-4000:]}")
    payloads = {name: json.loads((marker_dir / f"{name}-0.json").read_text()) for name in markers
                if (marker_dir / f"{name}-0.json").is_file()}
    return {"launched": launched, "markers": payloads, "pss_mb": pss, "pss_peak_mb": peak, "log_tail": log[-1500:]}


def mark(name: str, rank: int, payload: dict) -> None:
    """In a child: write the marker and wait until the parent has sampled PSS."""
    folder = Path(os.environ["DATA_SCALE_MARKERS"])
    (folder / f"{name}-{rank}.json").write_text(json.dumps(payload))
    while not (folder / f"release-{name}").exists():
        time.sleep(0.05)


def data_pass(loader) -> int:
    """Read every batch of this rank's share once, no model: the data a whole epoch reads."""
    count = 0
    for batch in loader:
        count += len(batch["input"] if isinstance(batch, dict) else batch)
    return count




def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# ------------------------------------------------------------------------------------------------- ours
def child_ours(argv: list[str]) -> None:
    """train_ddpm.main(argv), timing each training step; after the last, a marker, one pass of this rank's share of
    the data (a DataLoader over the task's dataset, prepared by accelerate as the loop's), another marker."""
    import torch

    import train_ddpm
    from ddpm_hub.training import loop
    from ddpm_hub.training.tasks import TASKS

    args = train_ddpm.parse_args(argv)
    captured, times = {}, []
    setup = TASKS["unconditional"].setup

    def timed_setup(task, accelerator):
        started = time.time()
        parts = setup(task, accelerator)
        captured.update(parts=parts, accelerator=accelerator, setup_seconds=time.time() - started)
        return parts

    original_log = loop.log_scalars

    def log_scalars(accelerator, values, step):
        original_log(accelerator, values, step)
        if "loss" not in values:
            return
        times.append(time.time())
        if step == args.max_train_steps:
            rank = accelerator.process_index
            mark("steps", rank, {"step_times": times, "images_per_step": BATCH * accelerator.num_processes,
                                 "setup_seconds": captured["setup_seconds"]})
            data = captured["parts"].train_data
            loader = accelerator.prepare_data_loader(torch.utils.data.DataLoader(
                data, batch_size=BATCH, shuffle=True, collate_fn=lambda batch: batch))
            started = time.time()
            count = data_pass(loader)
            mark("pass", rank, {"images": count, "seconds": time.time() - started})

    TASKS["unconditional"].setup = timed_setup
    loop.log_scalars = log_scalars
    train_ddpm.main(args)


def ours_command(args: argparse.Namespace, folder: Path, run: str, procs: int, extra: list[str]) -> list[str]:
    config = Path(args.work_dir) / "unet_64.json"
    config.write_text(json.dumps(UNET_64))
    flags = ["--train_data_dir", str(folder), "--resolution", str(RESOLUTION), "--model_config_name_or_path",
             str(config), "--train_batch_size", str(BATCH), "--max_train_steps", str(args.steps), "--no-use_ema",
             "--logger", "none", "--eval_epochs", "0", "--save_images_epochs", "1000", "--save_model_epochs", "1000",
             "--checkpointing_steps", "100000", "--ddpm_num_inference_steps", "2", "--eval_batch_size", "1",
             "--lr_warmup_steps", "0", "--output_dir", str(Path(args.work_dir) / "out" / run),
             "--overwrite_output_dir", *extra]
    return [*launcher(procs), __file__, "child-ours", *flags]


def launcher(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", "29561"]


# ------------------------------------------------------------------------------------------------- the example
def child_example(args: argparse.Namespace, folder: Path, cache_dir: Path) -> None:
    """diffusers' train_unconditional.py's data path and training step (no EMA, no logger), --steps steps, then a
    pass over this rank's share of the data."""
    import datasets
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DModel
    from PIL import Image

    started = time.time()
    _, world = rank_and_world()
    accelerator = Accelerator(cpu=world > 1 and not torch.cuda.is_available())
    dataset = datasets.load_dataset("imagefolder", data_files={"train": usable_files(folder)},
                                    cache_dir=str(cache_dir), split="train")

    def augment(image: Image.Image) -> torch.Tensor:
        # Resize(64, bilinear) -> RandomCrop(64) -> ToTensor -> Normalize([0.5], [0.5]), as torchvision does them
        width, height = image.size
        # torchvision's arithmetic (long side = int(size * long / short)): a float scale can round 64.0 to 63
        size = (RESOLUTION, int(RESOLUTION * height / width)) if width <= height else \
            (int(RESOLUTION * width / height), RESOLUTION)
        image = image.resize(size, Image.Resampling.BILINEAR)
        top = int(torch.randint(0, size[1] - RESOLUTION + 1, (1,)))
        left = int(torch.randint(0, size[0] - RESOLUTION + 1, (1,)))
        pixels = np.asarray(image.crop((left, top, left + RESOLUTION, top + RESOLUTION)), dtype=np.float32) / 255.0
        return (torch.from_numpy(pixels).permute(2, 0, 1) - 0.5) / 0.5

    def transform_images(examples):
        return {"input": [augment(image.convert("RGB")) for image in examples["image"]]}

    dataset.set_transform(transform_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                         num_workers=args.example_workers)
    torch.manual_seed(0)
    model = UNet2DModel(**UNET_64)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    setup_seconds = time.time() - started

    times, step = [], 0
    while step < args.steps:
        for batch in loader:
            clean_images = batch["input"]
            noise = torch.randn(clean_images.shape)
            timesteps = torch.randint(0, 1000, (clean_images.shape[0],)).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            loss = F.mse_loss(model(noisy_images, timesteps).sample, noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            loss.item()
            step += 1
            times.append(time.time())
            if step == args.steps:
                break
    rank = accelerator.process_index
    mark("steps", rank, {"step_times": times, "images_per_step": BATCH * accelerator.num_processes,
                         "setup_seconds": setup_seconds})
    started = time.time()
    count = data_pass(loader)
    mark("pass", rank, {"images": count, "seconds": time.time() - started})
    accelerator.wait_for_everyone()


def example_command(args: argparse.Namespace, folder: Path, procs: int, cache_dir: Path) -> list[str]:
    return [*launcher(procs), __file__, "child-example", "--steps", str(args.steps), "--example_workers",
            str(args.example_workers), "--work_dir", args.work_dir, str(folder), str(cache_dir)]


# ------------------------------------------------------------------------------------------------- store candidates
def _arrow_decode(batch: dict, resolution: int) -> dict:
    """datasets.map function: undecoded images -> pixels (binary uint8 [3 x H x W]), height, width, skip reason;
    the same per-image work as the memmap store's workers (`prepare_image`, `with_image_channels`)."""
    from ddpm_hub.data.decoding import Skip, prepare_image, with_image_channels
    from ddpm_hub.data.hub_datasets import row_image

    out = {"pixels": [], "height": [], "width": [], "skip": []}
    for value in batch["image"]:
        try:
            pixels, grayscale = prepare_image(row_image(value), resolution, False)
            chw = with_image_channels(pixels, grayscale, 3)
            out["pixels"].append(chw.tobytes())
            out["height"].append(chw.shape[1])
            out["width"].append(chw.shape[2])
            out["skip"].append(None)
        except Skip as skip:
            out["pixels"].append(b"")
            out["height"].append(0)
            out["width"].append(0)
            out["skip"].append(skip.reason)
    return out


def open_arrow(folder: Path, cache_dir: Path, workers: int):
    """The Arrow candidate: imagefolder (cached), then the fingerprinted map into the decoded Arrow cache."""
    import datasets

    table = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(cache_dir), split="train")
    table = table.cast_column("image", datasets.Image(decode=False))
    features = datasets.Features({"pixels": datasets.Value("binary"), "height": datasets.Value("int32"),
                                  "width": datasets.Value("int32"), "skip": datasets.Value("string")})
    return table.map(_arrow_decode, batched=True, batch_size=16, num_proc=workers if workers > 1 else None,
                     remove_columns=table.column_names, features=features, fn_kwargs={"resolution": RESOLUTION},
                     desc="decoding (arrow)")


class ArrowImages:
    """Random-access views of the Arrow candidate's kept rows as uint8 [3 x H x W] tensors."""

    def __init__(self, table):
        self.table = table
        self.kept = [i for i, skip in enumerate(table["skip"]) if skip is None]

    def __len__(self) -> int:
        return len(self.kept)

    def batch(self, indices, epoch: int):
        import numpy as np
        import torch

        from ddpm_hub.data.dataset import crop_and_flip
        from ddpm_hub.pixels import from_uint8

        rows = self.table[[self.kept[i] for i in indices]]
        images = [torch.from_numpy(np.frombuffer(p, dtype=np.uint8).reshape(3, h, w))
                  for p, h, w in zip(rows["pixels"], rows["height"], rows["width"])]
        return from_uint8(torch.stack([crop_and_flip(image, RESOLUTION, False, 0, epoch, i)
                                       for image, i in zip(images, indices)]))


def open_memmap(folder: Path, cache_dir: Path, workers: int):
    import ddpm_hub.data.images as images

    images.available_cores = lambda: workers  # the build's pool size (the default is every core)
    return images.load_image_dataset(train_data_dir=str(folder), resolution=RESOLUTION, data_cache_dir=str(cache_dir))


def child_store(kind: str, action: str, folder: Path, cache_dir: Path, workers: int, read_batches: int) -> None:
    """build: time a build from an empty cache; open: time opening the built store and reading random batches;
    touch: read every image once, then a marker (PSS is sampled by the parent)."""
    import datasets  # noqa: F401  (imports are not part of opening a store)
    import torch

    import ddpm_hub.data.images  # noqa: F401

    started = time.time()
    opened = open_arrow(folder, cache_dir, workers) if kind == "arrow" else open_memmap(folder, cache_dir, workers)
    seconds = time.time() - started
    if kind == "arrow":
        started = time.time()
        opened = ArrowImages(opened)
        seconds += time.time() - started  # finding the kept rows is part of opening it
        read = opened.batch
    else:
        def read(indices, epoch):
            opened.set_epoch(epoch)
            return opened.__getitems__(indices)
    result = {"seconds": seconds, "images": len(opened)}
    if action == "open":
        generator = torch.Generator().manual_seed(0)
        started = time.time()
        for b in range(read_batches):
            read(torch.randint(0, len(opened), (BATCH,), generator=generator).tolist(), b)
        result["read_images_per_second"] = read_batches * BATCH / (time.time() - started)
    if action == "touch":
        rank, _ = rank_and_world()
        for start in range(0, len(opened), 256):
            read(list(range(start, min(start + 256, len(opened)))), 0)
        mark("pass", rank, result)
        return
    print(json.dumps(result))


def store_command(args: argparse.Namespace, kind: str, action: str, folder: Path, cache_dir: Path,
                  workers: int) -> list[str]:
    return [sys.executable, __file__, "child-store", "--work_dir", args.work_dir, "--read_batches",
            str(args.read_batches), kind, action, str(folder), str(cache_dir), str(workers)]


def pair_command(command: list[str]) -> list[str]:
    """Two copies of `command` at once (RANK 0 and 1), failing if either fails."""
    one = shlex.join(command)
    return ["bash", "-c", f"RANK=0 {one} & a=$!; RANK=1 {one} & b=$!; wait $a; x=$?; wait $b; exit $((x | $?))"]


def run_json(command: list[str]) -> dict:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {shlex.join(command)}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cached(path: Path, compute) -> dict:
    """The saved result, or compute and save it (so that an interrupted benchmark continues)."""
    if path.is_file():
        return json.loads(path.read_text())
    print(f"  measuring {path.stem} ...", file=sys.stderr, flush=True)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------------- the phases
def phase_stores(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    results, caches = work / "results" / "stores", work / "caches"
    big, small = image_folder(args, args.images), image_folder(args, args.small_images)
    env = dict(os.environ)
    for kind in ("memmap", "arrow"):
        for workers in (1, 2):
            def build(kind=kind, workers=workers):
                cache = caches / f"{kind}-{workers}"
                shutil.rmtree(cache, ignore_errors=True)
                return run_json(store_command(args, kind, "build", big, cache, workers))
            cached(results / f"{kind}-build-{workers}.json", build)
        cache = caches / f"{kind}-2"
        cached(results / f"{kind}-open.json", lambda: run_json(store_command(args, kind, "open", big, cache, 2)))
        run_json(store_command(args, kind, "build", small, cache, 2))  # the small folder's store, beside it
        for folder, label in ((big, "big"), (small, "small")):
            single = store_command(args, kind, "touch", folder, cache, 2)
            for procs, command in ((1, single), (2, pair_command(single))):
                cached(results / f"{kind}-touch-{label}-{procs}.json",
                       lambda command=command, procs=procs: watch(command, work / "markers", procs, env, 1800,
                                                                  markers=("pass",)))
    print(stores_table(args))


def train_runs(args: argparse.Namespace) -> list[tuple[str, str, Path, int, list[str]]]:
    """(name, kind, folder, processes, extra) in the order they must run (first runs on empty caches)."""
    big, small = image_folder(args, args.images), image_folder(args, args.small_images)
    store = ["--data_cache_dir", str(Path(args.work_dir) / "caches" / "train-store")]
    memory = ["--no_data_cache"]
    runs = [("ours-store-first-1p", "ours", big, 1, store), ("ours-store-second-1p", "ours", big, 1, store),
            ("ours-store-2p", "ours", big, 2, store), ("ours-store-small-1p", "ours", small, 1, store),
            ("ours-store-small-2p", "ours", small, 2, store),
            ("ours-memory-1p", "ours", big, 1, memory), ("ours-memory-2p", "ours", big, 2, memory),
            ("ours-memory-small-1p", "ours", small, 1, memory), ("ours-memory-small-2p", "ours", small, 2, memory),
            ("example-first-1p", "example", big, 1, []), ("example-second-1p", "example", big, 1, []),
            ("example-2p", "example", big, 2, []), ("example-small-1p", "example", small, 1, []),
            ("example-small-2p", "example", small, 2, [])]
    return runs


def phase_train(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    env = child_env()
    for name, kind, folder, procs, extra in train_runs(args):
        def measure(name=name, kind=kind, folder=folder, procs=procs, extra=extra):
            if name == "ours-store-first-1p":
                shutil.rmtree(work / "caches" / "train-store", ignore_errors=True)
            if name == "ours-store-small-1p":  # built beforehand, untimed: the memory runs all reuse their store
                run_json(store_command(args, "memmap", "build", folder, work / "caches" / "train-store", 2))
            example_cache = work / "caches" / "train-example"
            if name == "example-first-1p":
                shutil.rmtree(example_cache, ignore_errors=True)
            command = ours_command(args, folder, name, procs, extra) if kind == "ours" else \
                example_command(args, folder, procs, example_cache)
            return watch(command, work / "markers", procs, env, 3600)
        cached(work / "results" / "train" / f"{name}.json", measure)
    print(train_table(args))


def child_env() -> dict:
    """The timed children's environment: the repo importable; one process gets torch's default threads (every core),
    torchrun sets 1 per process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    return env


def first_step_store(work: Path) -> Path:
    """The store `first-step` builds and `throughput` reads (ours' second runs)."""
    return work / "caches" / "first-step-store"


def phase_first_step(args: argparse.Namespace) -> None:
    """The second-run goal on its own, measured so that one slow launch cannot decide it: a first run from an empty
    store (its decode is the yardstick), then --repeats rounds of (second run on the 20,000 images, run on the
    100-image folder's store), alternating, each --first_step_steps steps, 1 process. The launch-to-first-step
    difference between the two is what the large dataset adds once its store exists."""
    work = Path(args.work_dir)
    env = child_env()
    short = argparse.Namespace(**{**vars(args), "steps": args.first_step_steps})
    cache = first_step_store(work)
    big, small = image_folder(args, args.images), image_folder(args, args.small_images)
    store = ["--data_cache_dir", str(cache)]

    def run(name: str, folder: Path) -> dict:
        return watch(ours_command(short, folder, name, 1, store), work / "markers", 1, env, 3600)

    def first() -> dict:
        shutil.rmtree(cache, ignore_errors=True)
        result = run("first-step-first", big)
        result["decode_seconds"] = decode_seconds(cache, args.images)
        return result

    cached(work / "results" / "first-step" / "first.json", first)
    cached(work / "results" / "first-step" / "small-build.json", lambda: run("first-step-small", small))
    for repeat in range(args.repeats):
        for label, folder in (("second", big), ("small", small)):
            cached(work / "results" / "first-step" / f"{label}-{repeat}.json",
                   lambda label=label, folder=folder: run(f"first-step-{label}", folder))
    print(first_step_table(args))


def phase_throughput(args: argparse.Namespace) -> None:
    """Training images/s once started, ours (the store, second run) against the example's data path, 1 process,
    --throughput_steps steps each, alternating for --repeats rounds so that a drift of the machine hits both."""
    work = Path(args.work_dir)
    env = child_env()
    long = argparse.Namespace(**{**vars(args), "steps": args.throughput_steps})
    big = image_folder(args, args.images)
    cache = first_step_store(work)
    store = ["--data_cache_dir", str(cache)]
    example_cache = work / "caches" / "throughput-example"
    run_json(store_command(args, "memmap", "build", big, cache, 2))  # built by first-step: opens it
    for repeat in range(args.repeats):
        for label in ("ours", "example"):
            command = ours_command(long, big, "throughput", 1, store) if label == "ours" else \
                example_command(long, big, 1, example_cache)
            cached(work / "results" / "throughput" / f"{label}-{repeat}.json",
                   lambda command=command: watch(command, work / "markers", 1, env, 3600))
    print(throughput_table(args))


# ------------------------------------------------------------------------------------------------- the tables
def _load(args: argparse.Namespace, phase: str, name: str) -> dict | None:
    path = Path(args.work_dir) / "results" / phase / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def stores_table(args: argparse.Namespace) -> str:
    lines = [f"Store candidates on {args.images} photo-sized images at {RESOLUTION} px (shorter side, no crop):", "",
             "| candidate | decode, 1 worker (s) | 2 workers (s) | speed-up | open again (s) | random batches "
             "(images/s) | data PSS, 1 process (MB) | 2 processes (MB) | 2 / 1 |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("memmap", "arrow"):
        one, two = _load(args, "stores", f"{kind}-build-1"), _load(args, "stores", f"{kind}-build-2")
        opened = _load(args, "stores", f"{kind}-open")
        touch = {(label, procs): _load(args, "stores", f"{kind}-touch-{label}-{procs}")
                 for label in ("big", "small") for procs in (1, 2)}
        if not (one and two and opened and all(touch.values())):
            lines.append(f"| {kind} | (not measured yet) |")
            continue
        data = {procs: touch["big", procs]["pss_mb"]["pass"] - touch["small", procs]["pss_mb"]["pass"]
                for procs in (1, 2)}
        lines.append(f"| {kind} | {one['seconds']:.1f} | {two['seconds']:.1f} | {one['seconds'] / two['seconds']:.2f}x | "
                     f"{opened['seconds']:.2f} | {opened['read_images_per_second']:.0f} | {data[1]:.0f} | "
                     f"{data[2]:.0f} | {data[2] / data[1]:.2f}x |")
    lines += ["", "data PSS: total PSS of the processes after each read every image once, minus the same on the "
                  f"{args.small_images}-image folder."]
    return "\n".join(lines)


def _run_figures(result: dict) -> dict:
    steps = result["markers"]["steps"]
    times = steps["step_times"]
    warm = min(4, len(times) - 2)
    return {"first_step": times[0] - result["launched"], "setup": steps["setup_seconds"],
            "images_per_second": (len(times) - 1 - warm) * steps["images_per_step"] / (times[-1] - times[warm]),
            "pss_steps": result["pss_mb"].get("steps"), "pss_pass": result["pss_mb"].get("pass"),
            "pss_peak": result["pss_peak_mb"]}


def decode_seconds(cache: Path, images: int) -> float | None:
    """The decode time a store under `cache` of the `images`-image folder records in its manifest."""
    for manifest in cache.glob(f"images-{images}-*/*/manifest.json"):
        return json.loads(manifest.read_text())["decode_seconds"]
    return None


def train_table(args: argparse.Namespace) -> str:
    figures = {name: _run_figures(r) for name, *_ in train_runs(args) if (r := _load(args, "train", name))}
    lines = [f"{args.steps} steps of batch {BATCH} per process at {RESOLUTION}x{RESOLUTION}, UNet2DModel "
             f"{UNET_64['block_out_channels']}; {args.images} images (and {args.small_images}):", "",
             "| run | launch to first step (s) | data + model set-up (s) | images/s from step 5 | PSS after the steps "
             "(MB) | PSS after a pass over the data (MB) | peak PSS (MB) |", "|---|---|---|---|---|---|---|"]
    for name, values in figures.items():
        lines.append(f"| {name} | {values['first_step']:.1f} | {values['setup']:.1f} | "
                     f"{values['images_per_second']:.0f} | {values['pss_steps']:.0f} | {values['pss_pass']:.0f} | "
                     f"{values['pss_peak']:.0f} |")
    lines += ["", "Goals:"]
    decode = decode_seconds(Path(args.work_dir) / "caches" / "train-store", args.images)
    second = figures.get("ours-store-second-1p")
    if decode and second:
        lines.append(f"- second run to its first step: {second['first_step']:.1f} s from launch ({second['setup']:.2f} "
                     f"s loading data and model) vs the first run's decode {decode:.1f} s: "
                     f"{100 * second['first_step'] / decode:.1f}% ({100 * second['setup'] / decode:.1f}% for the "
                     f"loading alone); goal < 5%")
    for prefix, label in (("ours-store", "ours (store)"), ("ours-memory", "ours --no_data_cache"),
                          ("example", "example")):
        single = "ours-store-second-1p" if prefix == "ours-store" else \
            "example-second-1p" if prefix == "example" else f"{prefix}-1p"
        names = (single, f"{prefix}-small-1p", f"{prefix}-2p", f"{prefix}-small-2p")
        if all(n in figures for n in names):
            one = figures[names[0]]["pss_pass"] - figures[names[1]]["pss_pass"]
            two = figures[names[2]]["pss_pass"] - figures[names[3]]["pss_pass"]
            lines.append(f"- {label}: data memory (PSS after a pass, {args.images} minus {args.small_images} images) "
                         f"{one:.0f} MB with 1 process, {two:.0f} MB with 2: {two / max(one, 1e-9):.2f}x "
                         f"(goal for the store <= 1.1x)")
    one, two = _load(args, "stores", "memmap-build-1"), _load(args, "stores", "memmap-build-2")
    if one and two:
        lines.append(f"- first decode on 2 cores {one['seconds'] / two['seconds']:.2f}x faster than on 1 "
                     f"({one['seconds']:.1f} s -> {two['seconds']:.1f} s); goal >= 1.7x")
    for ours, example in (("ours-store-second-1p", "example-second-1p"), ("ours-store-2p", "example-2p")):
        if ours in figures and example in figures:
            ratio = figures[ours]["images_per_second"] / figures[example]["images_per_second"]
            lines.append(f"- training images/s, {ours} / {example}: {ratio:.2f}x; goal >= 1")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    middle = statistics.median(values)
    return f"{middle:.1f} (min {min(values):.1f}, max {max(values):.1f}, n = {len(values)})"


def first_step_table(args: argparse.Namespace) -> str:
    first = _load(args, "first-step", "first")
    runs = {label: [_run_figures(r) for i in range(args.repeats) if (r := _load(args, "first-step", f"{label}-{i}"))]
            for label in ("second", "small")}
    if not first or not runs["second"] or not runs["small"]:
        return "first-step: not measured yet"
    decode = first["decode_seconds"]
    second = [r["first_step"] for r in runs["second"]]
    small = [r["first_step"] for r in runs["small"]]
    setup = [r["setup"] for r in runs["second"]]
    added = statistics.median(second) - statistics.median(small)
    return "\n".join([
        f"Launch to the first training step, 1 process, the store already built ({args.images} images vs "
        f"{args.small_images}), median over rounds run alternately:", "",
        "| run | launch to first step (s) | data + model set-up (s) |", "|---|---|---|",
        f"| first run, {args.images} images (decodes the store) | {_run_figures(first)['first_step']:.1f} | "
        f"{_run_figures(first)['setup']:.1f} |",
        f"| second run, {args.images} images | {_spread(second)} | {_spread(setup)} |",
        f"| {args.small_images} images | {_spread(small)} | {_spread([r['setup'] for r in runs['small']])} |",
        "", f"- the first run's decode: {decode:.1f} s; what the {args.images} images add to a second run's launch "
        f"(median second minus median {args.small_images}-image run): {added:.1f} s = {100 * added / decode:.1f}% "
        f"of it (goal < 5%); its data + model set-up alone: {100 * statistics.median(setup) / decode:.1f}%"])


def throughput_table(args: argparse.Namespace) -> str:
    results = {label: [r for i in range(args.repeats) if (r := _load(args, "throughput", f"{label}-{i}"))]
               for label in ("ours", "example")}
    if not results["ours"] or not results["example"]:
        return "throughput: not measured yet"
    rates = {label: [_run_figures(r)["images_per_second"] for r in runs] for label, runs in results.items()}
    steps = len(results["ours"][0]["markers"]["steps"]["step_times"])  # as run, whatever the flag says now
    ours, example = statistics.mean(rates["ours"]), statistics.mean(rates["example"])
    rows = " / ".join(f"{o:.1f} vs {e:.1f}" for o, e in zip(rates["ours"], rates["example"]))
    return (f"Training images/s from step 5 to {steps}, 1 process, {args.images} images, rounds run "
            f"alternately (ours vs example per round: {rows}): ours {ours:.1f}, example {example:.1f}, "
            f"{ours / example:.2f}x (goal >= 1)")


# ------------------------------------------------------------------------------------------------- the command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("generate", "stores", "train", "first-step", "throughput", "table",
                                     "child-ours", "child-example", "child-store"))
    p.add_argument("--work_dir", default="data-scale", help="images, caches, results (git ignores ./data-scale)")
    p.add_argument("--images", type=int, default=20000, help="images in the large folder")
    p.add_argument("--small_images", type=int, default=100, help="images in the small folder")
    p.add_argument("--seed", type=int, default=0, help="the folder's generation seed")
    p.add_argument("--steps", type=int, default=40, help="training steps per run (images/s over steps 5..steps)")
    p.add_argument("--repeats", type=int, default=3, help="first-step and throughput: rounds, run alternately")
    p.add_argument("--first_step_steps", type=int, default=3, help="first-step: training steps per run")
    p.add_argument("--throughput_steps", type=int, default=120, help="throughput: training steps per run")
    p.add_argument("--example_workers", type=int, default=2, help="the example's DataLoader workers per process")
    p.add_argument("--read_batches", type=int, default=150, help="stores: random batches of 64 read per candidate")
    p.add_argument("rest", nargs="*", help="a child's own arguments")
    return p.parse_intermixed_args(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child-ours":  # the rest are train_ddpm.py's flags
        return child_ours(sys.argv[2:])
    args = parse_args()
    if args.phase == "generate":
        generate(args)
    elif args.phase == "stores":
        phase_stores(args)
    elif args.phase == "train":
        phase_train(args)
    elif args.phase == "first-step":
        phase_first_step(args)
    elif args.phase == "throughput":
        phase_throughput(args)
    elif args.phase == "table":
        print("\n\n".join((stores_table(args), train_table(args), first_step_table(args), throughput_table(args))))
    elif args.phase == "child-example":
        child_example(args, Path(args.rest[0]), Path(args.rest[1]))
    elif args.phase == "child-store":
        kind, action, folder, cache, workers = args.rest
        child_store(kind, action, Path(folder), Path(cache), int(workers), args.read_batches)


if __name__ == "__main__":
    main()
