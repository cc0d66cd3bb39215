"""Writing a file so that no reader ever sees half of it.

Every file this package writes whole (checkpoints, `config.json`, models,
downloads, exports, predictions, results) goes through `atomic_write`: it is
written under a temporary name in the same folder, flushed to disk and
renamed into place. (Keras' `CSVLogger` and TensorBoard append to their logs.) A run killed at any moment, or stopped by a full disk,
leaves either the old complete file or the new complete one;
`remove_temporary_files` clears what an interrupted write left behind.
"""

import contextlib
import errno
import glob
import os
import shutil

TMP_PREFIX = "tmp-"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFullError(OSError):
    """Writing a file failed for lack of space; the old file is intact."""


def is_disk_full(error):
    """True for the errors of a write that found no space (ENOSPC, EFBIG, EDQUOT)."""
    text = str(error)
    return getattr(error, "errno", None) in _DISK_FULL or any(
        marker in text
        for marker in ("No space left", "File too large", "Disk quota", "errno = 28", "errno = 27")
    )


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def atomic_write(path, write):
    """Writes `path` with `write(tmp_path)`, then renames it into place.

    The temporary path `tmp-<pid>-<name>` (same folder, same extension, as
    Keras, PIL and NumPy want) is flushed to disk before the rename, so
    `path` is always either the old complete file or the new complete one.
    `write` may also create a folder (a SavedModel), which then replaces an
    absent or empty `path`. On any error the temporary file is removed; a
    full disk raises `DiskFullError` naming `path`.

    Args:
        path: str or path-like, the file to write.
        write: `fn(tmp_path)` that writes the whole file at `tmp_path` (a str).

    Returns:
        `path`.
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{name}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(folder)
    except BaseException as error:
        _remove(tmp)
        if isinstance(error, Exception) and is_disk_full(error):
            raise DiskFullError(
                f"{path}: the disk is full, nothing was written ({error})".splitlines()[0]
            ) from None
        raise
    return path


def atomic_write_text(path, text):
    """`atomic_write` of a text file."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def remove_temporary_files(*folders):
    """Deletes the `tmp-*` files interrupted writes left in `folders`.

    Returns:
        The removed paths.
    """
    removed = []
    for folder in folders:
        for path in glob.glob(os.path.join(folder, f"{TMP_PREFIX}*")):
            _remove(path)
            if not os.path.exists(path):
                removed.append(path)
    return removed
