"""The one exception type users see: the CLI prints it as a single line and exits 2."""


class HwnasError(Exception):
    """A problem with the user's input or environment, not a bug in hwnas."""


class ForeignTargetError(HwnasError):
    """A table or model measured on another backend or target than the one asked for."""


# What str.splitlines() breaks a line at: a message quoting the user's text (a file's field, a
# name) may carry any of these, and the CLI's error must stay one line.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


def one_line(text: str) -> str:
    """`text` with every line break written as its escape (\\n, \\x85, ...)."""
    return text.strip().translate(_LINE_BREAKS)


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message for a one-line error, or its type when it has none."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__
