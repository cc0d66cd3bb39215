"""Numbered training checkpoints, written atomically, and resuming from them.

A checkpoint is `ckpt-<iteration>.npz`: every model weight, the optimizer
state with its iteration counter (once the model is compiled) and the state
of every random-seed generator (dropout, drop path), so that a resumed run
draws the same masks as an uninterrupted one; each array is stored with its
variable path, and the zip's CRCs make a damaged file detectable. It is
written through Python's file I/O (not HDF5, which segfaults when the disk
fills during a write). `latest.json` names the newest. Every file goes through
`keras_segmenter.files.atomic_write` (temporary name, fsync, rename), so a run
killed at any moment, or stopped by a full disk, leaves the previous
checkpoint intact and `latest.json` naming a complete file; older checkpoints
are deleted only after a newer one is complete.
"""

import glob
import json
import os
import re

# `DiskFullError` (raised by `save_checkpoint`) and the cleanup of a killed
# write belong to the checkpoints' story too, so they can be imported from here.
from keras_segmenter.errors import UserError
from keras_segmenter.files import (  # noqa: F401
    DiskFullError,
    atomic_write,
    atomic_write_text,
    remove_temporary_files,
)

_NAME = re.compile(r"ckpt-(\d+)\.npz$")
LATEST = "latest.json"


def _seed_states(model):
    """The state variables of the model's random-seed generators, in model order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _state(model):
    """`{"weights": [...], "optimizer": [...], "rng": [...]}`: the variables a run needs."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return {
        "weights": list(model.weights),
        "optimizer": list(optimizer.variables) if optimizer is not None else [],
        "rng": _seed_states(model),
    }


def _write_checkpoint(model, path):
    import numpy as np

    arrays = {}
    for group, variables in _state(model).items():
        for i, variable in enumerate(variables):
            arrays[f"{group}/{i}"] = np.asarray(variable.numpy())
            arrays[f"{group}/{i}.path"] = np.array(variable.path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def save_checkpoint(model, directory, iteration, epoch=None, keep=2, write=True):
    """Saves `model` (optimizer and random-seed states too) as checkpoint `iteration`.

    Args:
        model: a `keras.Model`, compiled so that its optimizer is saved too.
        directory: str, the checkpoint folder.
        iteration: int, the training iteration reached.
        epoch: int or None, the `model.fit` epoch reached.
        keep: int, how many checkpoints to keep. Defaults to 2.
        write: bool, False on non-chief workers of a multi-worker run
            (nothing is written).

    Returns:
        The checkpoint path (or None when `write=False`).

    Raises:
        DiskFullError: the disk is full; the previous checkpoint and
            `latest.json` are untouched.
    """
    name = f"ckpt-{iteration:08d}.npz"
    if not write:
        return None
    os.makedirs(directory, exist_ok=True)
    final = atomic_write(os.path.join(directory, name), lambda tmp: _write_checkpoint(model, tmp))
    meta = {
        "iteration": int(iteration),
        "epoch": None if epoch is None else int(epoch),
        "path": name,
    }
    atomic_write_text(os.path.join(directory, LATEST), json.dumps(meta))
    for path, it in list_checkpoints(directory)[:-keep] if keep else []:
        if it < iteration:
            os.remove(path)
    return final


def list_checkpoints(directory):
    """`[(path, iteration)]` of the numbered checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        match = _NAME.search(os.path.basename(path))
        if match:
            found.append((path, int(match.group(1))))
    return sorted(found, key=lambda item: item[1])


def unreadable_reason(path):
    """Why the checkpoint at `path` cannot be read (every array is read and CRC-checked), or None."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrays:
            for key in arrays.files:
                arrays[key]
    except (
        Exception
    ) as e:  # zipfile and numpy report damage as BadZipFile, OSError, ValueError, EOFError...
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
    Nothing is assigned unless every array fits; otherwise `ValueError`
    names the first variable that does not, with both shapes.
    """
    import numpy as np

    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    hint = "same --model, --dataset classes, --crop-size and --precision are needed to resume"
    pairs = []
    with np.load(path, allow_pickle=False) as arrays:
        for group, variables in _state(model).items():
            saved = sum(
                1
                for key in arrays.files
                if key.startswith(f"{group}/") and not key.endswith(".path")
            )
            if saved != len(variables):
                raise UserError(
                    f"Checkpoint {path} does not match this model ({hint}): it holds {saved} {group} "
                    f"arrays, the model has {len(variables)}"
                )
            for i, variable in enumerate(variables):
                value = arrays[f"{group}/{i}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise UserError(
                        f"Checkpoint {path} does not match this model ({hint}): {arrays[f'{group}/{i}.path']} "
                        f"has shape {tuple(value.shape)}, the model's {variable.path} {tuple(variable.shape)}"
                    )
                pairs.append((variable, value))
    for variable, value in pairs:
        variable.assign(value)
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
    broken = (
        latest["skipped"]
        if latest
        else [(path, unreadable_reason(path)) for path, _ in list_checkpoints(directory)]
    )
    for path, reason in broken:
        report(f"Checkpoint {path} is unreadable ({reason}); falling back to an older one.")
    if latest is None:
        found = "only unreadable checkpoints" if broken else "no checkpoint"
        raise UserError(
            f"--resume: {directory} holds {found}; nothing to resume (is --output-dir right?)"
        )
    restore_checkpoint(model, latest["path"])
    report(f"Resumed from {latest['path']} (iteration {latest['iteration']}).")
    return latest["iteration"]
