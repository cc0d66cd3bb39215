"""What the command-line entry points share with their user.

The commands are `fit`, `evaluate`, `predict`, `export`, `convert` and
`data`, each a module of this package of one shape: `build_parser()` (its
`prog` is `keras-segmenter COMMAND`, from `command_parser`) and
`main(argv=None) -> int`, the exit status. They run as `keras-segmenter
COMMAND` (the console script, `keras_segmenter.__main__`), as `python -m
keras_segmenter.COMMAND` and, for the first two, as `python training/fit.py`
and `python training/evaluate.py` from a clone (scripts that call the same
`main`).

Those commands, and the scripts in `benchmarks/`, set TensorFlow up the same
way before it is imported (`prepare_tensorflow()`): all of them import this
package, and so TensorFlow, before their own code runs, which is why
`keras_segmenter/__init__.py` imports this module first and importing it
calls `prepare_tensorflow()`.

- oneDNN kernels on (`TF_ENABLE_ONEDNN_OPTS=1`) unless the user set it:
  TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/bf16 or
  AMX; on an AVX2 CPU its default Eigen kernels run Seg-S/16 inference at
  0.55x the speed (docs/benchmarks.md).
- For `predict`, oneDNN's tensors in malloc'd memory
  (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`) unless the user set it: its own pool
  keeps freed memory, which put the command above 1.5 GB on a 3 MP photo.
- TensorFlow's C++ INFO and WARNING lines hidden (`TF_CPP_MIN_LOG_LEVEL=2`)
  unless the user set the level; ERROR lines too (3) on a CPU without
  AVX-512 where oneDNN was turned on here: it logs one, harmless, for the
  first transpose of a dtype it has no kernel for there (bfloat16 under
  mixed precision; int32 on any CPU, which this package's graphs avoid,
  `inference.tensor_ops.swap01`). absl writes the start-up notices
  (`cpu_feature_guard`, `oneDNN custom operations are on`,
  `absl::InitializeLog`) to stderr before any log level applies, so stderr
  is captured while TensorFlow is imported and only the lines the level lets
  through (and anything not a log line) are written back.

The commands need the TensorFlow backend: with another `KERAS_BACKEND` they
stop at once, with one line (`refuse_other_backends`); the benchmarks take
`--backend`.

A user's mistake ends as one line on stderr and exit status 2. A missing or
empty data folder, an unknown dataset, a file that is not a model, a
checkpoint that does not fit, a bad flag or config key: the code that finds
the mistake raises `UserError` (a `ValueError`; `CheckpointError`,
`ImageReadError` and `PresetError` are kinds of it), with a message that
names the file, flag or key and what was expected. A command's `main` is
wrapped with `reports_user_errors`, which prints that message as one line,
`keras-segmenter COMMAND: error: <message>` (as argparse writes a bad
flag's), with no traceback, and exits with status 2. So do the file
system's answers about a path (`FileNotFoundError`, `PermissionError`,
`IsADirectoryError`, `NotADirectoryError`, `FileExistsError`), a full disk
(`files.DiskFullError`), the data pipeline's checks of the user's files
(`tf.debugging.Assert`) and running out of memory. Anything else, a plain
`ValueError` or `OSError` included, is a bug and keeps its traceback.
"""

import argparse
import functools
import os
import re
import shlex
import sys
import tempfile

from keras_segmenter.errors import UserError

CONSOLE_SCRIPT = "keras-segmenter"
USER_ERROR_STATUS = 2
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_DIR = os.path.join(_ROOT, "training")
BENCHMARKS_DIR = os.path.join(_ROOT, "benchmarks")
LOG_NOTE = (
    "TensorFlow's C++ log lines (start-up notices, internal warnings) are hidden; "
    "set TF_CPP_MIN_LOG_LEVEL=0 to see them."
)
# absl's log lines ("I0000 00:00:...", "W0000 ...") and the notice it writes before them.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_PREAMBLE = "WARNING: All log messages before absl::InitializeLog"


def is_command():
    """Whether this process runs one of the entry points or benchmarks.

    While `python -m keras_segmenter.X` imports the package (before `X`
    runs), `sys.argv[0]` is `"-m"`; the console script is `keras-segmenter`;
    `training/*.py` and `benchmarks/*.py` are run as scripts.
    """
    script = sys.argv[0] if sys.argv else ""
    if script == "-m" or os.path.basename(script).startswith(CONSOLE_SCRIPT):
        return True
    folder = os.path.dirname(os.path.realpath(script)) if script else None
    return folder in (os.path.realpath(TRAINING_DIR), os.path.realpath(BENCHMARKS_DIR))


def command_name():
    """The command this process runs (`"predict"`, ...), or `None`.

    From `python -m keras_segmenter.COMMAND`, `python -m keras_segmenter
    COMMAND` (read in `sys.orig_argv`, since `sys.argv[0]` is only `"-m"`
    while the package is imported) or `keras-segmenter COMMAND`.
    """
    argv = getattr(sys, "orig_argv", sys.argv)
    if "-m" in argv[:-1]:
        module, rest = argv[argv.index("-m") + 1], argv[argv.index("-m") + 2 :]
        if module.startswith("keras_segmenter."):
            return module.split(".")[1]
        return rest[0] if module == "keras_segmenter" and rest else None
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return sys.argv[1] if script.startswith(CONSOLE_SCRIPT) and len(sys.argv) > 1 else None


def prepare_tensorflow():
    """In an entry point: oneDNN kernels on, and TF's C++ log level honoured from the start.

    Settings the user made win. Only acts before TensorFlow is imported, and
    imports it.
    """
    if not is_command() or "tensorflow" in sys.modules:
        return
    onednn_by_us = "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if command_name() == "predict":
        # Memory before speed for the one-shot command (docs/benchmarks.md): oneDNN's pool
        # keeps freed blocks and, depending on the order of frees, grew the command's peak
        # on a 3 MP photo to 1.57-1.60 GB instead of 1.39; malloc returns them.
        os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    # Without AVX-512, oneDNN logs an ERROR line for the first bfloat16 transpose
    # ("supports DT_BFLOAT16 only on platforms with AVX-512") and runs TF's own
    # kernel: with the oneDNN we turned on, ERROR lines go too.
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", "3" if onednn_by_us and not _has_avx512() else "2"
    )
    level = os.environ["TF_CPP_MIN_LOG_LEVEL"]
    level = int(level) if level.isdigit() else 0
    if level == 0:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.writelines(line for line in captured if _shown(line, level))


def _shown(line, level):
    """Whether a line TF wrote while it was imported passes the log `level`."""
    if line.startswith(_PREAMBLE):
        return False
    match = _LOG_LINE.match(line)
    return not match or _SEVERITY[match.group(1)] >= level


def _has_avx512():
    """Whether /proc/cpuinfo lists AVX-512 (True where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " avx512f" in line for line in info)
    except OSError:
        return True


def refuse_other_backends():
    """In a command (not a benchmark, which takes `--backend`): exit 2 with one line when
    `KERAS_BACKEND` names another backend than TensorFlow, which the commands need."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    script = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    benchmark = os.path.dirname(script) == os.path.realpath(BENCHMARKS_DIR)
    if backend != "tensorflow" and is_command() and not benchmark:
        print(
            f"error: KERAS_BACKEND={backend}: the commands run on TensorFlow (tf.data, "
            f"tf.distribute, the exports); unset it. The model itself runs on {backend} "
            "from Python (README, Models: Backends)",
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR_STATUS)


refuse_other_backends()
prepare_tensorflow()


def command_parser(command, **kwargs):
    """The `argparse` parser of `keras-segmenter COMMAND`, which names it in usage and errors.

    Args:
        command: the command's name, e.g. `"fit"`.
        **kwargs: passed on to `argparse.ArgumentParser` (`description`, ...).
    """
    return argparse.ArgumentParser(prog=command_prog(command), epilog=LOG_NOTE, **kwargs)


def command_prog(command):
    """How `command`'s usage and error lines start: `keras-segmenter COMMAND`."""
    return f"{CONSOLE_SCRIPT} {command}"


def shown(path):
    """`path` as a user would type it: relative to the working folder when inside it."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path, os.getcwd())
    return relative if not relative.startswith(os.pardir) else path


def command(*words):
    """A shell command line to copy: this Python, then `words` (quoted where needed)."""
    return shlex.join([shown(sys.executable), *map(str, words)])


# `tf.debugging.Assert` failures: the data pipeline's checks of the user's files.
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\](?:\s*\[\[|\s*$)", re.DOTALL)


# The file system's answers about a path the user named: one line, like a `UserError`.
_PATH_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


def user_error_message(error):
    """The one-line message of an exception that is the user's mistake, else None."""
    from keras_segmenter.files import DiskFullError

    if isinstance(error, (UserError, DiskFullError) + _PATH_ERRORS):
        message = str(error)
    else:
        tf = sys.modules.get("tensorflow")
        if tf is not None and isinstance(error, tf.errors.ResourceExhaustedError):
            shape = re.search(r"tensor with shape\[([\d,]+)\]", error.message)
            return (
                "out of memory"
                + (f" for a tensor of shape [{shape.group(1)}]" if shape else "")
                + ": use a smaller --window-size or --window-batch-size, or smaller images"
            )
        if tf is None or not isinstance(
            error,
            (
                tf.errors.InvalidArgumentError,
                tf.errors.NotFoundError,
                tf.errors.PermissionDeniedError,
            ),
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
            does (`keras-segmenter fit: error: ...`).

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

    Used as `@reports_user_errors(prog=command_prog("fit"))` to start the
    line with the command's name, as argparse does (see `report_user_error`).
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
