"""The error a user's mistake raises, and the check of a file the user named.

The commands print a `UserError` as one line without a traceback
(`cli.reports_user_errors`); any other exception is a bug and keeps its
traceback.
"""

import os


class UserError(ValueError):
    """A mistake in what the user passed or set up (flags, files, folders, settings).

    The message names the flag, file or key and says what was expected; the
    commands print it as one line, without a traceback.
    """


def check_file(path, expected, error=UserError):
    """Raises `error` unless `path` is an existing file; never says "not found" of one that exists.

    Args:
        path: the path given.
        expected: what the file should be, e.g. "a .keras model file".
        error: the exception class to raise. Defaults to `UserError`.
    """
    path = str(path)
    if os.path.isdir(path):
        raise error(f"{path} is a folder; expected {expected}")
    if not os.path.exists(path):
        raise error(f"{path}: no such file; expected {expected}")
    if not os.path.isfile(path):
        raise error(f"{path} is not a regular file; expected {expected}")
