"""Numbered training checkpoints, written atomically, and resuming from them.

A checkpoint is `ckpt-<iteration>.weights.h5`: the model weights, the
optimizer state with its iteration counter (once the model is compiled) and,
in the group `rng`, the state of every random-seed generator (dropout, drop
path), so that a resumed run draws the same masks as an uninterrupted one.
`latest.json` names the newest. Every file goes through `atomic_write`
(temporary name, fsync, rename), so a run killed at any moment, or stopped by
a full disk, leaves the previous checkpoint intact and `latest.json` naming a
complete file; older checkpoints are deleted only after a newer one is
complete. `remove_temporary_files` clears what an interrupted write left.
"""

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
import warnings

_NAME = re.compile(r"ckpt-(\d+)\.weights\.h5$")
_TMP_PREFIX = "tmp-"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
LATEST = "latest.json"


class DiskFullError(OSError):
    """Writing a run's file failed for lack of space; the old file is intact."""


def _is_disk_full(error):
    text = str(error)
    return getattr(error, "errno", None) in _DISK_FULL or any(
        marker in text for marker in ("No space left", "File too large", "Disk quota", "errno = 28", "errno = 27")
    )


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Writes `path` with `write(tmp_path)`, then renames it into place.

    The temporary file `tmp-<pid>-<name>` (same folder, same extension, as
    Keras wants) is flushed to disk before the rename, so `path` is always
    either the old complete file or the new complete one. On any error the
    temporary file is removed; a full disk raises `DiskFullError` naming
    `path`.

    Returns:
        `path`.
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{_TMP_PREFIX}{os.getpid()}-{name}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(folder)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, Exception) and _is_disk_full(error):
            raise DiskFullError(f"{path}: the disk is full, nothing was written ({error})".splitlines()[0]) from None
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
        for path in glob.glob(os.path.join(folder, f"{_TMP_PREFIX}*")):
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(path)
    return removed


def _seed_states(model):
    """The state variables of the model's random-seed generators, in model order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _write_checkpoint(model, path):
    import h5py
    import numpy as np

    model.save_weights(path, overwrite=True)
    with h5py.File(path, "a") as f:
        group = f.create_group("rng")
        for i, state in enumerate(_seed_states(model)):
            group[str(i)] = np.asarray(state.numpy())


def save_checkpoint(model, directory, iteration, epoch=None, keep=2, write=True):
    """Saves `model` (optimizer and random-seed states too) as checkpoint `iteration`.

    Args:
        model: a `keras.Model`, compiled so that its optimizer is saved too.
        directory: str, the checkpoint folder.
        iteration: int, the training iteration reached.
        epoch: int or None, the `model.fit` epoch reached.
        keep: int, how many checkpoints to keep. Defaults to 2.
        write: bool, False on non-chief workers of a multi-worker run: the
            weights are still gathered (all workers must take part) but go
            to a temporary folder that is removed.

    Returns:
        The checkpoint path (or None when `write=False`).

    Raises:
        DiskFullError: the disk is full; the previous checkpoint and
            `latest.json` are untouched.
    """
    name = f"ckpt-{iteration:08d}.weights.h5"
    if not write:
        scratch = tempfile.mkdtemp()
        try:
            _write_checkpoint(model, os.path.join(scratch, name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None
    os.makedirs(directory, exist_ok=True)
    final = atomic_write(os.path.join(directory, name), lambda tmp: _write_checkpoint(model, tmp))
    meta = {"iteration": int(iteration), "epoch": None if epoch is None else int(epoch), "path": name}
    atomic_write_text(os.path.join(directory, LATEST), json.dumps(meta))
    for path, it in list_checkpoints(directory)[:-keep] if keep else []:
        if it < iteration:
            os.remove(path)
    return final


def list_checkpoints(directory):
    """`[(path, iteration)]` of the numbered checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.weights.h5")):
        match = _NAME.search(os.path.basename(path))
        if match:
            found.append((path, int(match.group(1))))
    return sorted(found, key=lambda item: item[1])


def unreadable_reason(path):
    """Why the checkpoint at `path` cannot be read (every array is read), or None."""
    import h5py

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read)
    except Exception as e:  # h5py reports truncation and corruption as OSError, KeyError, RuntimeError...
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def latest_checkpoint(directory):
    """The newest readable checkpoint in `directory`.

    Newer checkpoints that cannot be read (truncated, corrupted) are passed
    over and listed under `"skipped"` as `(path, reason)`.

    Returns:
        A dict `{"path", "iteration", "skipped"}`, or None when no
        readable checkpoint exists.
    """
    if not directory or not os.path.isdir(directory):
        return None
    skipped = []
    for path, iteration in reversed(list_checkpoints(directory)):
        reason = unreadable_reason(path)
        if reason is None:
            return {"path": path, "iteration": iteration, "skipped": skipped}
        skipped.append((path, reason))
    return None


def restore_checkpoint(model, path):
    """Loads a checkpoint written by `save_checkpoint` into `model`.

    The model must be built and compiled like the one that was saved; the
    optimizer is built first so that its state (iteration included) loads.
    """
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    hint = "same --model, --dataset classes and --precision are needed to resume"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except ValueError as e:
            raise ValueError(f"Checkpoint {path} does not match this model ({hint}): {e}") from e
    # Keras only warns when the optimizer state or a sublayer does not fit;
    # resuming without them would silently restart the schedule.
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ValueError(f"Checkpoint {path} does not match this model ({hint}): {skipped[0]}")
    states = _seed_states(model)
    with h5py.File(path, "r") as f:
        saved = f["rng"] if "rng" in f else {}
        if len(saved) != len(states):
            raise ValueError(
                f"Checkpoint {path} does not match this model ({hint}): it has {len(saved)} "
                f"random-seed states, the model {len(states)}"
            )
        for i, state in enumerate(states):
            state.assign(saved[str(i)][()])
    return model


def resume(model, directory, report=print):
    """Restores the newest readable checkpoint of `directory` into `model`.

    Unreadable newer ones are reported (`report(line)`) and passed over.

    Returns:
        The iteration of the restored checkpoint.

    Raises:
        ValueError: there is no readable checkpoint.
    """
    latest = latest_checkpoint(directory)
    broken = latest["skipped"] if latest else [(path, unreadable_reason(path)) for path, _ in list_checkpoints(directory)]
    for path, reason in broken:
        report(f"Checkpoint {path} is unreadable ({reason}); falling back to an older one.")
    if latest is None:
        found = "only unreadable checkpoints" if broken else "no checkpoint"
        raise ValueError(f"--resume: {directory} holds {found}; nothing to resume (is --output-dir right?)")
    restore_checkpoint(model, latest["path"])
    report(f"Resumed from {latest['path']} (iteration {latest['iteration']}).")
    return latest["iteration"]
