"""The project's own contract: CI is a newcomer running exactly README's install-and-test block."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- ci: install-and-test -->"


def test_ci_runs_the_readme_install_and_test_block_as_a_newcomer():
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run's own extraction of the block, run on the README: the same text as the block after the marker
    awk = re.search(r"block=\"\$\(awk '(.+?)' README\.md\)\"", ci, re.S).group(1)
    extracted = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    block = re.search(re.escape(MARKER) + r"\s*```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    assert extracted == block and block.startswith('pip install -e ".[test]"') and "pytest" in block
    # a fresh venv and empty per-user folders before anything is installed; torch's CPU build first
    assert "set -euo pipefail" in ci and "python3 -m venv" in ci
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "DDPM_HUB_CACHE", "MPLCONFIGDIR", "TORCH_HOME"):
        assert re.search(rf"export .*\b{name}=\"\$work/", ci), name
    assert ci.index("export HOME=") < ci.index("python3 -m venv") < ci.index("torch==2.13.0") < ci.index("bash -euo")


def test_readme_main_command_is_first():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.+?)\n```", text, re.S).group(1).strip()
    assert first_block == "pip install -e . && accelerate launch --quiet train_ddpm.py"
