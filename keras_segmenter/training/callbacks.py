"""Callbacks for `model.fit`: iteration checkpoints, lr logging, validation."""

import math
import os

import keras
import tensorflow as tf

from keras_segmenter.files import atomic_write_text
from keras_segmenter.training.checkpoints import save_checkpoint


class Checkpointer(keras.callbacks.Callback):
    """Saves the model and optimizer every `model.fit` epoch.

    Each epoch is a chunk of `steps_per_epoch` iterations; at its end the
    state is saved as `ckpt-<iteration>.npz` (see
    `checkpoints.save_checkpoint`), keeping the last `keep`. Put it last in
    the callback list: a checkpoint then means that everything of its epoch
    (validation, `history.csv` row) is done, so a run killed earlier redoes
    the whole epoch on resume. An epoch whose loss is not finite is not saved.

    Args:
        directory: str, checkpoint folder.
        steps_per_epoch: int, iterations per `fit` epoch.
        keep: int, checkpoints kept. Defaults to 2.
    """

    def __init__(self, directory, steps_per_epoch, keep=2):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            return
        iteration = (epoch + 1) * self.steps_per_epoch
        save_checkpoint(self.model, self.directory, iteration, epoch=epoch + 1, keep=self.keep)


def trim_history(path, epochs):
    """Keeps the header and the rows of epochs `< epochs` in the `CSVLogger` file `path`.

    A resumed run redoes every epoch after its checkpoint, so the rows a
    killed run wrote for them (complete or cut short) are dropped first and
    each epoch has exactly one row.
    """
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.read().splitlines()
    kept = lines[:1] + [
        line
        for line in lines[1:]
        if line.split(",")[0].isdigit() and int(line.split(",")[0]) < epochs
    ]
    if kept != lines:
        atomic_write_text(path, "".join(line + "\n" for line in kept))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` (the rate of the next step) and `iteration` to the logs."""

    def on_epoch_end(self, _epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        logs["iteration"] = int(keras.ops.convert_to_numpy(optimizer.iterations))


class Validation(keras.callbacks.Callback):
    """Runs `evaluate_fn(model)` every `every` epochs and at the last one.

    The results (`val_mIoU`, `val_aAcc`, `val_mAcc`) go into the epoch logs,
    so CSVLogger and TensorBoard, placed after this callback, record them;
    epochs without validation get NaN, so the CSV columns stay fixed
    (`keras_segmenter.progress.ProgressLogger` leaves them out of the
    printed line).
    `preview_fn(model)`, if given, returns `(N, H, W, 3)` uint8 panels that
    are written to TensorBoard as images under `log_dir`.
    """

    def __init__(self, evaluate_fn, every, last_epoch, log_dir=None, preview_fn=None, verbose=True):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.every = every
        self.last_epoch = last_epoch
        self.preview_fn = preview_fn
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.verbose = verbose
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        keys = ("val_mIoU", "val_aAcc", "val_mAcc")
        if (epoch + 1) % self.every and epoch + 1 != self.last_epoch:
            logs.update({key: math.nan for key in keys})
            return
        results = self.evaluate_fn(self.model)
        iteration = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        logs.update({f"val_{key}": float(results[key]) for key in ("mIoU", "aAcc", "mAcc")})
        self.history.append((iteration, float(results["mIoU"])))
        if self.verbose:
            print(
                f"\nValidation at iteration {iteration}: mIoU {results['mIoU']:.4f} "
                f"aAcc {results['aAcc']:.4f} mAcc {results['mAcc']:.4f}",
                flush=True,
            )
        if self.writer is not None:
            with self.writer.as_default(step=iteration):
                for key in ("mIoU", "aAcc", "mAcc"):
                    tf.summary.scalar(f"val_{key}", float(results[key]))
                if self.preview_fn is not None:
                    tf.summary.image(
                        "image | truth | prediction", self.preview_fn(self.model), max_outputs=8
                    )
            self.writer.flush()
