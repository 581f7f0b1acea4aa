"""The one exception type users see: the CLI prints it as a single line and exits 2."""


class HwnasError(Exception):
    """A problem with the user's input or environment, not a bug in hwnas."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message for a one-line error, or its type when it has none."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__
