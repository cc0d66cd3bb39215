"""Numbered training checkpoints, written atomically.

A checkpoint is `ckpt-<iteration>.weights.h5` (model weights and, once the
model is compiled, the optimizer state with its iteration counter) plus
`latest.json` naming it. Each file is written under a temporary name and
renamed into place, so a run killed at any moment leaves the previous
checkpoint intact; older checkpoints are deleted only after a newer one is
complete.
"""

import glob
import json
import os
import re
import warnings

_NAME = re.compile(r"ckpt-(\d+)\.weights\.h5$")
LATEST = "latest.json"


def _atomic_write_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(model, directory, iteration, epoch=None, keep=2, write=True):
    """Saves `model` (and its optimizer) as checkpoint `iteration`.

    Args:
        model: a `keras.Model`, compiled so that its optimizer is saved too.
        directory: str, the checkpoint folder.
        iteration: int, the training iteration reached.
        epoch: int or None, the `model.fit` epoch reached (for resuming).
        keep: int, how many checkpoints to keep. Defaults to 2.
        write: bool, False on non-chief workers of a multi-worker run: the
            weights are still gathered (all workers must take part) but go
            to a temporary file that is removed.

    Returns:
        The checkpoint path (or None when `write=False`).
    """
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"ckpt-{iteration:08d}.weights.h5")
    tmp = os.path.join(directory, f"tmp-{os.getpid()}-ckpt-{iteration:08d}.weights.h5")
    model.save_weights(tmp, overwrite=True)
    if not write:
        os.remove(tmp)
        return None
    os.replace(tmp, final)
    meta = {"iteration": int(iteration), "epoch": None if epoch is None else int(epoch),
            "path": os.path.basename(final)}
    _atomic_write_text(os.path.join(directory, LATEST), json.dumps(meta))
    for path, it in _list(directory)[:-keep] if keep else []:
        if it < iteration:
            os.remove(path)
    return final


def _list(directory):
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.weights.h5")):
        match = _NAME.search(os.path.basename(path))
        if match:
            found.append((path, int(match.group(1))))
    return sorted(found, key=lambda item: item[1])


def latest_checkpoint(directory):
    """The newest complete checkpoint in `directory`.

    Returns:
        A dict `{"path", "iteration", "epoch"}`, or None when there is none.
    """
    if not directory or not os.path.isdir(directory):
        return None
    meta_path = os.path.join(directory, LATEST)
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            path = os.path.join(directory, meta["path"])
            if os.path.exists(path):
                return {"path": path, "iteration": meta["iteration"], "epoch": meta.get("epoch")}
        except (ValueError, KeyError):
            pass  # fall back to the numbered files, which are only ever complete
    found = _list(directory)
    if not found:
        return None
    path, iteration = found[-1]
    return {"path": path, "iteration": iteration, "epoch": None}


def restore_checkpoint(model, path):
    """Loads a checkpoint written by `save_checkpoint` into `model`.

    The model must be built and compiled like the one that was saved; the
    optimizer is built first so that its state (iteration included) loads.
    """
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
    return model
