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
    line and returns exit status 2; any other exception (a bug) keeps its traceback. Returns 0 on success."""
    import sys

    try:
        main(parse_args(argv))
    except InputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
