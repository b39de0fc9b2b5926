"""Crash-safe checkpoints: save -> verify -> load round trips, tampering, interrupted saves, retention."""

import json
import logging
import shutil

import pytest
import torch
from accelerate import Accelerator

from ddpm_hub.training import checkpointing
from ddpm_hub.training.checkpointing import (
    find_latest_checkpoint,
    load_checkpoint,
    resolve_resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from ddpm_hub.errors import InputError


class Trainer:
    """A tiny model + AdamW + LR scheduler prepared by a CPU Accelerator, with a `step()` that changes all three."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.accelerator = Accelerator(cpu=True)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)

    def step(self):
        x = torch.randn(8, 4)
        loss = self.model(x).pow(2).mean()
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()

    def save(self, output_dir, step, **kwargs):
        return save_checkpoint(self.accelerator, output_dir, step, {"epoch": step // 10}, **kwargs)


@pytest.fixture
def trainer():
    return Trainer()


def _saved(trainer, output_dir, steps):
    paths = []
    for step in steps:
        trainer.step()
        paths.append(trainer.save(output_dir, step))
    return paths


def test_save_verify_load_round_trip(trainer, tmp_path):
    trainer.step()
    path = trainer.save(tmp_path, 5)
    assert path == tmp_path / "checkpoint-5"
    verify_checkpoint(path)
    saved_params = [p.detach().clone() for p in trainer.model.parameters()]
    saved_exp_avg = [trainer.optimizer.state[p]["exp_avg"].clone() for p in trainer.model.parameters()]
    saved_lr = trainer.scheduler.get_last_lr()
    draw_after_save = torch.rand(5)

    # Move everything away from the saved state: more steps, another RNG position.
    for _ in range(3):
        trainer.step()
    torch.manual_seed(1234)
    assert not torch.equal(next(trainer.model.parameters()), saved_params[0])

    state = load_checkpoint(trainer.accelerator, path)
    assert state == {"global_step": 5, "epoch": 0}
    for p, saved in zip(trainer.model.parameters(), saved_params):
        torch.testing.assert_close(p.detach(), saved, rtol=0, atol=0)
    for p, saved in zip(trainer.model.parameters(), saved_exp_avg):
        torch.testing.assert_close(trainer.optimizer.state[p]["exp_avg"], saved, rtol=0, atol=0)
    assert trainer.scheduler.get_last_lr() == saved_lr
    torch.testing.assert_close(torch.rand(5), draw_after_save, rtol=0, atol=0)


def test_weights_are_safetensors_and_manifest_lists_every_file_and_is_written_last(trainer, tmp_path, monkeypatch):
    files_before_manifest = {}
    real_write_manifest = checkpointing.write_manifest

    def spy(checkpoint_dir):
        files_before_manifest["files"] = {p.relative_to(checkpoint_dir).as_posix() for p in checkpoint_dir.rglob("*")}
        real_write_manifest(checkpoint_dir)

    monkeypatch.setattr(checkpointing, "write_manifest", spy)
    trainer.step()
    path = trainer.save(tmp_path, 3)

    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    # Nothing was written after the manifest, and the manifest lists everything else.
    assert on_disk == files_before_manifest["files"] | {"manifest.json"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert {entry["path"] for entry in manifest["files"]} == on_disk - {"manifest.json"}
    assert all(len(entry["sha256"]) == 64 and entry["size"] > 0 for entry in manifest["files"])
    assert "model.safetensors" in on_disk and "training_state.json" in on_disk
    assert any(name.startswith("random_states_") for name in on_disk)
    assert not list(tmp_path.glob(".tmp-checkpoint-*"))


def _largest_listed_file(path):
    manifest = json.loads((path / "manifest.json").read_text())
    return max(manifest["files"], key=lambda entry: entry["size"])["path"]


def _truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _flip_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [(_truncate, "size"), (_flip_byte, "sha256"), (lambda f: f.unlink(), "missing")],
    ids=["truncate", "flip-byte", "delete-file"],
)
def test_tampered_file_fails_verification_naming_the_file(trainer, tmp_path, damage, reason):
    path = _saved(trainer, tmp_path, [2])[0]
    name = _largest_listed_file(path)
    damage(path / name)
    with pytest.raises(InputError, match=reason) as excinfo:
        verify_checkpoint(path)
    assert name in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_missing_manifest_or_folder_fails_verification(trainer, tmp_path):
    path = _saved(trainer, tmp_path, [2])[0]
    (path / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest.json"):
        verify_checkpoint(path)
    with pytest.raises(InputError, match="does not exist"):
        verify_checkpoint(tmp_path / "checkpoint-99")


def test_find_latest_skips_damaged_newest_and_reports_it(trainer, tmp_path):
    first, second = _saved(trainer, tmp_path, [10, 20])
    (second / "model.safetensors").write_bytes(b"garbage")
    latest, skipped = find_latest_checkpoint(tmp_path)
    assert latest == first
    assert [path for path, _ in skipped] == [second]
    assert "model.safetensors" in skipped[0][1]


def test_find_latest_orders_by_step_number_not_name_or_mtime(trainer, tmp_path):
    _saved(trainer, tmp_path, [100, 9])  # 9 written last, "9" > "100" as strings
    assert find_latest_checkpoint(tmp_path) == (tmp_path / "checkpoint-100", [])


def test_leftover_tmp_dir_is_never_picked_and_is_cleaned_by_next_save(trainer, tmp_path):
    first = _saved(trainer, tmp_path, [5])[0]
    # Simulate kill -9 in the middle of saving step 7: a complete-looking copy in the temp folder.
    leftover = tmp_path / ".tmp-checkpoint-7"
    shutil.copytree(first, leftover)
    assert find_latest_checkpoint(tmp_path) == (first, [])
    assert resolve_resume_checkpoint(tmp_path, "latest") == first

    _saved(trainer, tmp_path, [6])
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5", "checkpoint-6"]


def test_crash_mid_save_leaves_previous_checkpoint_as_latest(trainer, tmp_path, monkeypatch):
    previous = _saved(trainer, tmp_path, [4])[0]

    def crash(checkpoint_dir):
        raise RuntimeError("simulated crash while writing the manifest")

    monkeypatch.setattr(checkpointing, "write_manifest", crash)
    trainer.step()
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.save(tmp_path, 8)
    assert not (tmp_path / "checkpoint-8").exists()
    assert find_latest_checkpoint(tmp_path) == (previous, [])

    monkeypatch.undo()
    assert trainer.save(tmp_path, 8) == tmp_path / "checkpoint-8"
    assert not list(tmp_path.glob(".tmp-checkpoint-*"))


def test_resaving_same_step_replaces_the_old_checkpoint(trainer, tmp_path):
    path = _saved(trainer, tmp_path, [3])[0]
    for _ in range(2):
        trainer.step()
    assert trainer.save(tmp_path, 3) == path
    verify_checkpoint(path)
    state = load_checkpoint(trainer.accelerator, path)
    assert state["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]


def test_total_limit_keeps_newest(trainer, tmp_path):
    for step in [1, 2, 3, 4]:
        trainer.step()
        trainer.save(tmp_path, step, total_limit=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4"]


def test_total_limit_never_deletes_the_checkpoint_just_written(trainer, tmp_path):
    # Resumed from step 10 with a later checkpoint-20 still on disk; now saving step 15.
    _saved(trainer, tmp_path, [10, 20])
    trainer.step()
    path = trainer.save(tmp_path, 15, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_bad_total_limit_is_an_input_error(trainer, tmp_path):
    with pytest.raises(InputError, match="--checkpoints_total_limit"):
        trainer.save(tmp_path, 1, total_limit=0)


def test_resolve_none_and_latest(trainer, tmp_path, caplog):
    assert resolve_resume_checkpoint(tmp_path, None) is None
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.checkpointing"):
        assert resolve_resume_checkpoint(tmp_path / "never-created", "latest") is None
    assert "no valid checkpoint in" in caplog.text and "starting from scratch" in caplog.text

    only = _saved(trainer, tmp_path, [3])[0]
    (only / "manifest.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.checkpointing"):
        assert resolve_resume_checkpoint(tmp_path, "latest") is None
    assert "skipping damaged checkpoint" in caplog.text and "checkpoint-3" in caplog.text
    assert "starting from scratch" in caplog.text


def test_resolve_named_checkpoint(trainer, tmp_path):
    path = _saved(trainer, tmp_path, [500])[0]
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-500") == path
    assert resolve_resume_checkpoint(tmp_path, str(path)) == path
    assert resolve_resume_checkpoint(tmp_path, "latest") == path


def test_resolve_named_missing_or_damaged_checkpoint_is_input_error(trainer, tmp_path):
    path = _saved(trainer, tmp_path, [500])[0]
    with pytest.raises(InputError, match="--resume_from_checkpoint"):
        resolve_resume_checkpoint(tmp_path, "checkpoint-600")
    _flip_byte(path / "model.safetensors")
    with pytest.raises(InputError, match="--resume_from_checkpoint") as excinfo:
        resolve_resume_checkpoint(tmp_path, "checkpoint-500")
    assert "model.safetensors" in str(excinfo.value)


def test_load_refuses_damaged_checkpoint(trainer, tmp_path):
    path = _saved(trainer, tmp_path, [1])[0]
    _truncate(path / "optimizer.bin")
    with pytest.raises(InputError, match="optimizer.bin"):
        load_checkpoint(trainer.accelerator, path)


def test_training_state_must_be_json(trainer, tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(trainer.accelerator, tmp_path, 1, {"bad": object()})
    assert not list(tmp_path.iterdir())
