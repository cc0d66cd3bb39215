"""How every command line ends on a user's mistake: one line on stderr, exit status 2.

A missing or empty data folder, an unknown dataset, a file that is not a
model, a checkpoint that does not fit, labels out of range: the code that
finds the mistake raises `ValueError` (or `OSError` for the file system),
with a message that names the file, flag or key and what was expected. A
command's `main` is wrapped with `reports_user_errors`, which prints that
message as one line, with no traceback, and exits with status 2 (as
argparse does for a bad flag). Anything else is a bug and keeps its
traceback.
"""

import functools
import os
import re
import sys

USER_ERROR_STATUS = 2

# `tf.debugging.Assert` failures: the data pipeline's checks of the user's files.
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\](?:\s*\[\[|\s*$)", re.DOTALL)


class UserError(ValueError):
    """A mistake in what was passed to a command; the message says what was expected."""


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


def user_error_message(error):
    """The one-line message of an exception that is the user's mistake, else None."""
    if isinstance(error, (ValueError, OSError)):
        message = str(error)
    else:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(error, (tf.errors.InvalidArgumentError, tf.errors.NotFoundError)):
            return None
        found = _ASSERTION.search(error.message)
        if found is None and isinstance(error, tf.errors.InvalidArgumentError):
            return None
        message = found.group(1) if found else error.message.split("[[")[0]
        message = message.split("}}")[-1]  # drop TensorFlow's function-node prefix
        message = message.replace("\\'", "'").replace('\\"', '"')  # TensorFlow escapes quotes
    return " ".join(message.split()) or type(error).__name__


def reports_user_errors(main):
    """Wraps a command's `main(argv)`: a user's mistake ends as one line and exit status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as error:
            message = user_error_message(error)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(USER_ERROR_STATUS) from None

    return wrapped
