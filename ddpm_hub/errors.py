"""The one exception type for user mistakes.

Everything a user can get wrong (a bad flag value, a missing folder, an unreadable dataset) raises
`InputError` with a one-line message that names the input and says what is allowed. It subclasses
`ValueError`, so library callers can catch it the usual way; `train_ddpm.py` catches exactly this type,
prints the message and exits non-zero, and lets every other exception (a bug) keep its traceback.
"""


class InputError(ValueError):
    """A user-facing, one-line error about bad input (a flag, a path, a dataset, a config value)."""


def run_cli(prog: str, main, parse_args, argv: list[str] | None = None) -> int:
    """Run `main(parse_args(argv))` for a command-line tool: an `InputError` prints `prog: error: message` on one
    line and returns exit status 2; any other exception (a bug) keeps its traceback. Returns 0 on success.

    Under torchrun (and `accelerate launch` with several processes, which runs torchrun) the line also goes to the
    error file torchrun names in TORCHELASTIC_ERROR_FILE: its failure summary, printed last, then shows our line as
    the root cause instead of "To enable traceback see: ...". A single-process `accelerate launch --quiet` prints
    nothing after our line."""
    import sys

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
    import json
    import os
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        from .atomic import atomic_write_text

        atomic_write_text(path, json.dumps({"message": line, "timestamp": int(time.time())}))
