"""What the three command-line tools (train_ddpm.py, `python -m ddpm_hub.evaluate`, `python -m ddpm_hub.visualize`)
share: a parser whose mistakes are one line, a help page that keeps the docstring's examples, the 'full'-or-K
argument type, and `run_cli`, which turns an `InputError` into one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from .errors import InputError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's example lines as written and shows each default."""


def full_or_count(value: str) -> int | None:
    """argparse type for a number of bits/dim terms: 'full' (None: all T terms) or an integer K."""
    if value == "full":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'full' or an integer K, got {value!r}") from None


def run_cli(prog: str, main: Callable, parse_args: Callable, argv: list[str] | None = None) -> int:
    """Run `main(parse_args(argv))` for a command-line tool: an `InputError` prints `prog: error: message` on one
    line and returns exit status 2; any other exception (a bug) keeps its traceback. Returns 0 on success.

    Under torchrun (and `accelerate launch` with several processes, which runs torchrun) the line also goes to the
    error file torchrun names in TORCHELASTIC_ERROR_FILE: its failure summary, printed last, then shows our line as
    the root cause instead of "To enable traceback see: ...". A single-process `accelerate launch --quiet` prints
    nothing after our line."""
    try:
        main(parse_args(argv))
    except InputError as error:
        line = f"{prog}: error: {error}"
        print(line, file=sys.stderr)
        _write_torchelastic_error_file(line)
        return 2
    return 0


def _write_torchelastic_error_file(line: str) -> None:
    """torch.distributed.elastic's error-file format with a plain-string message (shown as written)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        from .atomic import atomic_write_text

        atomic_write_text(path, json.dumps({"message": line, "timestamp": int(time.time())}))
