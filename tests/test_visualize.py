"""python -m ddpm_hub.visualize: the forward and reverse process pictures."""

import json
import sys
from pathlib import Path

from PIL import Image

from ddpm_hub import visualize

from conftest import TINY_UNET  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_forward_and_reverse_pictures(tmp_path):
    sys.path.insert(0, str(ROOT))
    import train_ddpm

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_UNET))
    model = train_ddpm.main(train_ddpm.parse_args([
        "--output_dir", str(tmp_path / "model"), "--model_config_name_or_path", str(config), "--max_train_steps", "1",
        "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--eval_inference_steps", "5", "--eval_batch_size", "2", "--logger", "none",
        "--train_batch_size", "16"])).output_dir
    written = visualize.main(visualize.parse_args(["--output_dir", str(tmp_path / "pics"), "--model", str(model)]))
    assert [p.name for p in written] == ["forward_process.png", "reverse_process.png"]
    forward, reverse = (Image.open(p) for p in written)
    assert forward.width > 5 * forward.height  # one row of 11 panels
    assert reverse.height > forward.height  # four seeds, one row each
    assert not list((tmp_path / "pics").glob("*.tmp"))


def test_bad_model_folder(tmp_path, capsys):
    assert visualize.cli(["--output_dir", str(tmp_path), "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist: give a DDPMPipeline folder" in err and err.count("\n") == 1
