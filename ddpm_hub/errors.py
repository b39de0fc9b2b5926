"""The one exception type for user mistakes, and how an error becomes one line.

Everything a user can get wrong (a bad flag value, a missing folder, an unreadable dataset) raises
`InputError` with a one-line message that names the input and says what is allowed. It subclasses
`ValueError`, so library callers can catch it the usual way; the command-line tools (`ddpm_hub.cli.run_cli`)
catch exactly this type, print the message and exit non-zero, and let every other exception (a bug) keep its
traceback.
"""


class InputError(ValueError):
    """A user-facing, one-line error about bad input (a flag, a path, a dataset, a config value)."""


def one_line(error: BaseException, limit: int | None = None) -> str:
    """A library's error message folded onto one line (whitespace runs become one space), cut to `limit`
    characters when given: what an InputError quotes of the cause."""
    text = " ".join(str(error).split())
    return text if limit is None else text[:limit]
