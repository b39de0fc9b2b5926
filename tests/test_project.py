"""The project's own contract: CI runs exactly README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _readme_block_after("Test suite:")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), f"README's test command {command!r} is not a line of .ci/run"
    assert "set -euo pipefail" in ci
    assert ci.index("torch==2.13.0") < ci.index(command)


def test_readme_main_command_is_first():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.+?)\n```", text, re.S).group(1).strip()
    assert first_block.startswith("pip install -e .")
