"""One run at a time in an output folder: an exclusive lock on `<folder>/.lock`.

`fit` takes the lock of its `--output-dir` before it writes anything there
and holds it until the process exits (a multi-worker run: only the chief,
the one worker that writes). The lock is an `flock` on the file, which the
kernel releases when the process ends however it ends, and the file names
its holder (`pid=... host=... started=...`) for the message a second run
gets. A normal exit deletes the file; one left behind names a run that was
killed or crashed: on the same host the next run says so and takes it over,
on another host (a shared file system, where flock may not reach the other
machine) it is refused until the user deletes it.
"""

import atexit
import contextlib
import fcntl
import os
import socket
import time

from keras_segmenter.errors import UserError

LOCK_NAME = ".lock"
_held = {}  # real path of a folder -> the open lock file descriptor of this process


def _owner(fd):
    """The `{"pid", "host", "started"}` a lock file names (empty if none)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def _describe(owner):
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}"


def lock_output_dir(folder):
    """Creates `folder` and locks it for this process until it exits.

    Taking a folder this process holds already does nothing.

    Raises:
        UserError: another run holds the folder (named), or a lock file of a
            run on another host is left there.
    """
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held:
        return
    path = os.path.join(os.path.abspath(folder), LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise UserError(
                f"--output-dir {folder} is in use by another run ({_describe(owner)}; lock file "
                f"{path}): wait for it to end, or choose another --output-dir"
            ) from None
        # Its holder deletes the file as it exits: retry unless it is still the one locked.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    owner, host = _owner(fd), socket.gethostname()
    if owner and owner.get("host") != host:
        os.close(fd)
        raise UserError(
            f"--output-dir {folder} is locked by a run on another machine ({_describe(owner)}); "
            f"if that run has ended, delete {path}"
        )
    if owner:
        print(
            f"Note: {path} was left by a run that did not end normally ({_describe(owner)}); "
            "taking the folder over."
        )
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"pid={os.getpid()} host={host} started={started}\n".encode())
    os.fsync(fd)
    _held[key] = fd
    atexit.register(_release, key, path)


def _release(key, path):
    """Deletes the lock file (while still holding it) and closes it."""
    fd = _held.pop(key, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)
