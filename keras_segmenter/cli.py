"""What the command-line entry points share with their user.

The commands are `fit`, `evaluate`, `predict`, `export`, `convert` and
`data`, each a module of this package with a `main(argv)`. They run as
`python -m keras_segmenter.<command>`, as `keras-segmenter <command>` (the
console script, `keras_segmenter.__main__`) and, for the first two, as
`python training/fit.py` and `python training/evaluate.py` from a clone.

TensorFlow's C++ runtime writes start-up notices (`cpu_feature_guard`,
`oneDNN custom operations are on`, `absl::InitializeLog`) and internal
warnings to stderr the moment it is imported; in those commands they are
hidden unless the user set `TF_CPP_MIN_LOG_LEVEL`. All of them import this
package, and so TensorFlow, before their own code runs, which is why
`keras_segmenter/__init__.py` imports this module first and importing it
calls `quiet_tensorflow()`.

A user's mistake ends as one line on stderr and exit status 2. A missing or
empty data folder, an unknown dataset, a file that is not a model, a
checkpoint that does not fit, labels out of range: the code that finds the
mistake raises `ValueError` (or `OSError` for the file system), with a
message that names the file, flag or key and what was expected. A command's
`main` is wrapped with `reports_user_errors`, which prints that message as
one line, `error: <message>` (`fit.py: error: <message>` for fit, as
argparse writes it), with no traceback, and exits with status 2 (as argparse
does for a bad flag). Anything else is a bug and keeps its traceback.
"""

import functools
import os
import re
import shlex
import sys

CONSOLE_SCRIPT = "keras-segmenter"
TRAINING_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training")
LOG_NOTE = (
    "TensorFlow's C++ log lines (start-up notices, internal warnings) are hidden; "
    "set TF_CPP_MIN_LOG_LEVEL=0 to see them."
)


def is_command():
    """Whether this process runs one of the entry points.

    While `python -m keras_segmenter.X` imports the package (before `X`
    runs), `sys.argv[0]` is `"-m"`; the console script is `keras-segmenter`;
    `training/*.py` are run as scripts.
    """
    script = sys.argv[0] if sys.argv else ""
    if script == "-m" or os.path.basename(script).startswith(CONSOLE_SCRIPT):
        return True
    return bool(script) and os.path.dirname(os.path.realpath(script)) == os.path.realpath(
        TRAINING_DIR
    )


def quiet_tensorflow():
    """In an entry point, hides TF's C++ INFO and WARNING lines (errors stay).

    A `TF_CPP_MIN_LOG_LEVEL` the user set wins. Only acts before TensorFlow
    is imported.
    """
    if is_command() and "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


quiet_tensorflow()


def shown(path):
    """`path` as a user would type it: relative to the working folder when inside it."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path, os.getcwd())
    return relative if not relative.startswith(os.pardir) else path


def command(*words):
    """A shell command line to copy: this Python, then `words` (quoted where needed)."""
    return shlex.join([shown(sys.executable), *map(str, words)])


def fit_next_steps(config, model_path):
    """What to do with the model `training/fit.py` just wrote, as lines to print."""
    from keras_segmenter.data import SAMPLE_DIR
    from keras_segmenter.data.sources import list_pairs

    model = shown(model_path)
    data = (
        []
        if os.path.samefile(config.data_dir, SAMPLE_DIR)
        else ["--data-dir", shown(config.data_dir)]
    )
    dataset = ["--dataset", config.dataset] + (
        ["--num-classes", config.num_classes] if config.num_classes else []
    )
    fit = shown(os.path.join(TRAINING_DIR, "fit.py"))
    lines = ["", "Next:"]
    try:
        photo = list_pairs(config.dataset, config.data_dir, "val")[0][0]
    except (OSError, ValueError):
        photo = None
    if photo is not None:
        out = shown(os.path.join(config.output_dir, "predictions"))
        overlay = os.path.join(out, os.path.splitext(os.path.basename(photo))[0] + "_overlay.png")
        names = ["--dataset", config.dataset] if config.dataset != "folder" else []
        lines += [
            f"  Segment a validation photo (the overlay is written to {overlay}):",
            "    "
            + command(
                "-m",
                "keras_segmenter.predict",
                "--model",
                model,
                *names,
                "--out",
                out,
                shown(photo),
            ),
        ]
    lines += [
        "  Evaluate on the validation split with the paper's protocol:",
        "    "
        + command(
            shown(os.path.join(TRAINING_DIR, "evaluate.py")),
            "--model",
            model,
            "--dataset",
            config.dataset,
            "--data-dir",
            shown(config.data_dir),
        ),
        "  Train this model further (a new run that starts from its weights):",
        "    "
        + command(
            fit,
            "--init",
            model,
            *dataset,
            *data,
            "--output-dir",
            shown(config.output_dir) + "-more",
        ),
        "  A run that was interrupted continues from its last checkpoint with:",
        "    " + command(fit, "--output-dir", shown(config.output_dir), "--resume"),
    ]
    return lines


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
        if tf is None or not isinstance(
            error, (tf.errors.InvalidArgumentError, tf.errors.NotFoundError)
        ):
            return None
        found = _ASSERTION.search(error.message)
        if found is None and isinstance(error, tf.errors.InvalidArgumentError):
            return None
        message = found.group(1) if found else error.message.split("[[")[0]
        message = message.split("}}")[-1]  # drop TensorFlow's function-node prefix
        message = message.replace("\\'", "'").replace('\\"', '"')  # TensorFlow escapes quotes
    return " ".join(message.split()) or type(error).__name__


def report_user_error(error, prog=None):
    """Prints `error` as one line on stderr if it is a user's mistake.

    Args:
        error: the exception caught.
        prog: optional command name to start the line with, as argparse
            does (`fit.py: error: ...`).

    Returns:
        The exit status, 2, or None when `error` is a bug (nothing printed).
    """
    message = user_error_message(error)
    if message is None:
        return None
    print(f"{prog}: error: {message}" if prog else f"error: {message}", file=sys.stderr)
    return USER_ERROR_STATUS


def reports_user_errors(main=None, *, prog=None):
    """Wraps a command's `main(argv)`: a user's mistake ends as one line and exit status 2.

    Used as `@reports_user_errors`, or `@reports_user_errors(prog="fit.py")`
    to start the line with the command's name (see `report_user_error`).
    """
    if main is None:
        return functools.partial(reports_user_errors, prog=prog)

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as error:
            status = report_user_error(error, prog)
            if status is None:
                raise
            raise SystemExit(status) from None

    return wrapped
