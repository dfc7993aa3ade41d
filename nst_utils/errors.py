"""The one exception type users see: a single line saying what is wrong and what to do."""


class NSTError(Exception):
    """A user-facing failure; the CLI prints its message as one line and exits non-zero."""
