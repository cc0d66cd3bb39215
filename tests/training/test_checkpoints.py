"""Checkpoint files: atomic writes, optimizer and dropout state, unreadable files, a full disk."""

import json
import os

import keras
import numpy as np
import pytest

from keras_segmenter.training import (
    SegmentationCrossEntropy,
    latest_checkpoint,
    poly_schedule,
    restore_checkpoint,
    save_checkpoint,
)
from keras_segmenter.training.checkpoints import (
    DiskFullError,
    atomic_write_text,
    remove_temporary_files,
    resume,
)
from tests.testing import finish, spawn, tiny_model


def _tiny_compiled_model():
    model = tiny_model(3, seed=None, dropout=0.0)
    model.compile(
        optimizer=keras.optimizers.SGD(poly_schedule(0.1, 10), momentum=0.9, nesterov=True),
        loss=SegmentationCrossEntropy(),
    )
    return model


def test_checkpoints_are_atomic_and_restore_optimizer_state(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(4, 32, 32)).astype("int32")
    model = _tiny_compiled_model()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 2 iterations
    directory = str(tmp_path / "ckpt")
    save_checkpoint(model, directory, 2, epoch=1, keep=2)
    # A run killed while writing the next checkpoint leaves a temp file and
    # a truncated latest.json: the completed checkpoint is still found.
    with open(os.path.join(directory, "tmp-123-ckpt-00000004.npz"), "wb") as f:
        f.write(b"partial")
    with open(os.path.join(directory, "latest.json"), "w") as f:
        f.write('{"iteration": 4, "pa')
    latest = latest_checkpoint(directory)
    assert latest["iteration"] == 2 and latest["path"].endswith("ckpt-00000002.npz")
    assert remove_temporary_files(directory) == [
        os.path.join(directory, "tmp-123-ckpt-00000004.npz")
    ]

    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    save_checkpoint(model, directory, 4, epoch=2, keep=1)
    assert json.load(open(os.path.join(directory, "latest.json")))["iteration"] == 4
    assert not os.path.exists(os.path.join(directory, "ckpt-00000002.npz"))  # keep=1

    restored = _tiny_compiled_model()
    restore_checkpoint(restored, latest_checkpoint(directory)["path"])
    assert int(restored.optimizer.iterations) == 4
    assert float(restored.optimizer.learning_rate) == pytest.approx(
        float(model.optimizer.learning_rate)
    )
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    # the momentum is restored too: one more step gives the same weights
    model.train_on_batch(x[:2], y[:2])
    restored.train_on_batch(x[:2], y[:2])
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)

    other = tiny_model(5, seed=None)
    other.compile(optimizer="sgd", loss=SegmentationCrossEntropy())
    with pytest.raises(ValueError, match="does not match this model"):
        restore_checkpoint(other, latest_checkpoint(directory)["path"])


def _dropout_model():
    model = tiny_model(3, seed=1, dropout=0.2)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=SegmentationCrossEntropy())
    return model


def test_checkpoint_restores_dropout_random_state_so_the_next_step_is_identical(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(2, 32, 32)).astype("int32")
    model = _dropout_model()
    model.train_on_batch(x, y)
    save_checkpoint(model, str(tmp_path), 1)
    model.train_on_batch(x, y)
    expected = model.get_weights()
    model.train_on_batch(x, y)  # the seed states move on
    restore_checkpoint(model, latest_checkpoint(str(tmp_path))["path"])
    model.train_on_batch(x, y)  # same drop-path / dropout masks as the second step
    for a, b in zip(expected, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unreadable_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    model = _tiny_compiled_model()
    directory = str(tmp_path)
    for iteration in (2, 4, 6):
        save_checkpoint(model, directory, iteration, keep=3)
    newest = os.path.join(directory, "ckpt-00000006.npz")
    with open(newest, "r+b") as f:  # cut short, as a disk failure would
        f.truncate(os.path.getsize(newest) // 2)
    middle = os.path.join(directory, "ckpt-00000004.npz")
    data = bytearray(open(middle, "rb").read())
    data[len(data) // 3] ^= 0xFF  # one flipped byte: the zip CRC catches it
    open(middle, "wb").write(bytes(data))
    lines = []
    assert resume(_tiny_compiled_model(), directory, lines.append) == 2
    assert (
        "ckpt-00000006.npz is unreadable" in lines[0]
        and "ckpt-00000004.npz is unreadable" in lines[1]
    )
    assert lines[2].startswith("Resumed from") and "ckpt-00000002.npz" in lines[2]
    os.remove(os.path.join(directory, "ckpt-00000002.npz"))
    with pytest.raises(ValueError, match="only unreadable checkpoints"):
        resume(_tiny_compiled_model(), directory, lines.append)


_DISK_FULL_SCRIPT = f"""
import json, os, resource, signal, sys
from {__name__} import _tiny_compiled_model
from keras_segmenter.training.checkpoints import DiskFullError, save_checkpoint
directory = json.loads(sys.argv[1])
model = _tiny_compiled_model()
model.optimizer.build(model.trainable_variables)
save_checkpoint(model, directory, 2)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    save_checkpoint(model, directory, 4)
except DiskFullError as e:
    print("DISKFULL", e)
"""


def test_a_full_disk_is_an_error_that_leaves_the_last_checkpoint_named(tmp_path):
    directory = tmp_path / "ckpt"
    (proc,) = finish(spawn(_DISK_FULL_SCRIPT, str(directory)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no crash
    assert "DISKFULL" in proc.stdout and "ckpt-00000004.npz: the disk is full" in proc.stdout
    assert sorted(os.listdir(directory)) == [
        "ckpt-00000002.npz",
        "latest.json",
    ]  # temp file removed
    assert json.load(open(directory / "latest.json"))["iteration"] == 2
    assert latest_checkpoint(str(directory))["iteration"] == 2


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "latest.json"
    atomic_write_text(str(path), "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    from keras_segmenter.training.checkpoints import atomic_write

    with pytest.raises(DiskFullError, match="latest.json: the disk is full"):
        atomic_write(str(path), broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["latest.json"]


def test_validation_window_scales_the_dataset_stride_with_the_predict_rule():
    import types

    from keras_segmenter.data import get_dataset_info
    from keras_segmenter.inference import default_window
    from keras_segmenter.training.factories import validation_window

    def config(crop, window=None, stride=None):
        return types.SimpleNamespace(crop_size=crop, window_size=window, window_stride=stride)

    pascal = get_dataset_info("pascal_context")  # official window 480, stride 320
    assert validation_window(config(480), pascal) == (480, 320)
    assert validation_window(config(240), pascal) == (240, 160)
    assert validation_window(config(128), get_dataset_info("ade20k")) == (128, 128)
    assert validation_window(config(128, 96, 40), pascal) == (96, 40)
    # The same function as predict's and evaluate's default (window - 32).
    assert default_window(window_size=128) == (128, 96)
    assert default_window(window_size=240, reference=(480, 320)) == (240, 160)
