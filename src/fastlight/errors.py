"""User-facing errors: each carries one sentence that says what is wrong and how to fix it.

`fastlight.run` turns these into a one-line message and a non-zero exit instead of a traceback.
"""


class FastlightError(Exception):
    """A mistake the user can fix (bad config value, missing data, diverged training)."""

    exit_code = 2


class ConfigError(FastlightError):
    """A config value of the wrong type or out of range."""


class DataError(FastlightError):
    """A dataset file is missing, corrupt or has the wrong shape."""


class NonFiniteLossError(FastlightError):
    """The training loss became NaN or infinite."""

    exit_code = 3
