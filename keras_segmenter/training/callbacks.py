"""Callbacks for `model.fit`: iteration checkpoints, lr logging, validation."""

import math
import os

import keras
import tensorflow as tf

from keras_segmenter.training.checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint


class Checkpointer(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` with numbered, atomically written checkpoints.

    Each `model.fit` epoch is a chunk of `steps_per_epoch` iterations. At the
    end of every epoch the model and optimizer are saved as
    `ckpt-<iteration>.weights.h5` (see `checkpoints.save_checkpoint`: temp
    file, then rename; the previous checkpoint is only deleted afterwards,
    and the last `keep` are kept). With `restore=True`, `on_train_begin`
    loads the newest checkpoint and, like `BackupAndRestore`, sets the
    epoch `fit` starts from, so the run continues at the same iteration and
    learning rate. Unlike `BackupAndRestore`, the checkpoints are not
    deleted when training ends.

    Args:
        directory: str, checkpoint folder.
        steps_per_epoch: int, iterations per `fit` epoch.
        restore: bool, resume from the newest checkpoint if there is one.
        keep: int, checkpoints kept. Defaults to 2.
    """

    def __init__(self, directory, steps_per_epoch, restore=False, keep=2):
        super().__init__(backup_dir=directory, save_freq="epoch", delete_checkpoint=False)
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.restore = restore
        self.keep = keep
        self.restored_from = None

    def on_train_begin(self, logs=None):
        if not self.restore:
            return
        latest = latest_checkpoint(self.directory)
        if latest is None:
            return
        restore_checkpoint(self.model, latest["path"])
        epoch = latest["epoch"]
        if epoch is None:
            epoch = latest["iteration"] // self.steps_per_epoch
        self.model._initial_epoch = epoch  # what BackupAndRestore sets for fit()
        self.restored_from = latest
        print(f"Resumed from {latest['path']} (iteration {latest['iteration']}).", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        iteration = (epoch + 1) * self.steps_per_epoch
        save_checkpoint(self.model, self.directory, iteration, epoch=epoch + 1, keep=self.keep)

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` (the rate of the next step) and `iteration` to the logs."""

    def on_epoch_end(self, epoch, logs=None):
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
                    tf.summary.image("image | truth | prediction", self.preview_fn(self.model), max_outputs=8)
            self.writer.flush()

