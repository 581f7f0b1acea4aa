"""The one exception type users see: the CLI prints it as a single line and exits 2."""


class HwnasError(Exception):
    """A problem with the user's input or environment, not a bug in hwnas."""
