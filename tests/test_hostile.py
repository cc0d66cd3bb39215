"""Hostile files and careless commands (issue 32): every untrusted size bounded, one run per
output folder, settings checked once before anything is written, no flag silently ignored.

The commands' `main(argv)` run in-process where they can, several checks a call; the lock is
checked against a second process. Tests whose old failure was a hang run under an alarm.
"""

import contextlib
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest

import keras_segmenter as ks
from keras_segmenter import evaluate as evaluate_module
from keras_segmenter import export as export_module
from keras_segmenter import fit as fit_module
from keras_segmenter import predict as predict_module
from keras_segmenter.convert import __main__ as convert_module
from keras_segmenter.convert import official
from keras_segmenter.convert.torch_checkpoint import CheckpointError, read_torch_checkpoint
from keras_segmenter.data.__main__ import main as data_main
from keras_segmenter.errors import UserError
from keras_segmenter.images import ImageReadError
from tests.convert.test_torch_checkpoint import GOOD, KEY, TINY, with_pickle, write_checkpoint
from tests.testing import CAMVID, PHOTOS, REPO, python_env, tiny_model

PHOTO = PHOTOS / "camvid_0016E5_07959.jpg"
ONE_STEP = ["--iterations", "1", "--checkpoint-every", "1", "--val-every", "1", "--batch-size", "1"]


@contextlib.contextmanager
def deadline(seconds):
    """Raises TimeoutError in this thread after `seconds` (a blocking open or a loop ends)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(capsys, main, *argv):
    """The one-line message of `main(argv)`, which must end with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model(num_classes=11).save(path)
    return path


# ---------------------------------------------------------------- checkpoints


def test_shared_pickle_objects_are_resolved_once_and_cycles_refused(tmp_path):
    node = [0]
    for _ in range(3):
        node = [node, node]  # the pickle memo stores each level once
    state = read_torch_checkpoint(with_pickle(tmp_path / "dag.pth", pickle.dumps({"m": node}, 2)))
    assert state["m"][0] is state["m"][1] and state["m"][0][0] is state["m"][0][1]
    loop = []
    loop.append(loop)
    with pytest.raises(CheckpointError, match="`m.0` contains itself"):
        read_torch_checkpoint(with_pickle(tmp_path / "loop.pth", pickle.dumps({"m": loop}, 2)))
    # 10,000 tensors viewing one 4 KB storage would copy 43 MB.
    views = {f"t{i}": GOOD for i in range(10_000)}
    with pytest.raises(CheckpointError, match=r"more than 2 x the 4352 bytes of their storages"):
        read_torch_checkpoint(write_checkpoint(tmp_path / "views.pth", views))
    np.testing.assert_array_equal(
        read_torch_checkpoint(write_checkpoint(tmp_path / "one.pth", {KEY: GOOD}))["model"][KEY],
        read_torch_checkpoint(TINY / "checkpoint.pth")["model"][KEY],
    )


def test_convert_of_a_small_pickle_that_expands_without_limit_ends_at_once(tmp_path, capsys):
    node = [0]
    for _ in range(64):
        node = [node, node]  # 2**64 leaves when expanded copy by copy
    run = tmp_path / "run"
    shutil.copytree(TINY, run)
    payload = pickle.dumps({"model": node}, 2)
    assert len(payload) < 2**10
    with_pickle(run / "checkpoint.pth", payload)
    with deadline(30):
        err = refused(capsys, convert_module.main, run, "--out", tmp_path / "m.keras")
    assert "expected a state dict" in err


def test_variant_sizes_are_checked_against_the_checkpoint_before_any_model_is_built(
    tmp_path, capsys, monkeypatch
):
    def never(*args, **kwargs):
        raise AssertionError("a model was built before the declared sizes were checked")

    monkeypatch.setattr(official, "build_model", never)
    run = tmp_path / "run"
    shutil.copytree(TINY, run)
    text = (run / "variant.yml").read_text()
    out = tmp_path / "m.keras"
    for old, new, message in (
        ("d_model: 64", "d_model: 8192", "net_kwargs.d_model 8192 does not fit"),
        ("  n_layers: 2\n  normalization", "  n_layers: 96\n  normalization", "n_layers 96"),
        ("  - 64\n  - 64", "  - 65536\n  - 65536", "net_kwargs.image_size (65536, 65536)"),
        ("    n_layers: 2\n", "    n_layers: 200\n", "net_kwargs.decoder.n_layers 200"),
        ("n_cls: 7\n    n_layers", "n_cls: 70000\n    n_layers", "net_kwargs.n_cls 70000"),
        ("  dropout: 0.0", "  dropout: high", "net_kwargs.dropout: expected a number in [0, 1)"),
        ("distilled: false", "distilled: 3", "net_kwargs.distilled: expected true or false"),
        ("  normalization: vit\n  patch", "  normalization: [1]\n  patch", "normalization"),
    ):
        assert old in text, old
        (run / "variant.yml").write_text(text.replace(old, new, 1))
        assert message in refused(capsys, convert_module.main, run, "--out", out)
    (run / "variant.yml").write_text(text)
    write_checkpoint(run / "checkpoint.pth", {KEY: GOOD})  # only a position embedding
    err = refused(capsys, convert_module.main, run, "--out", out)
    assert "expected a tensor `encoder.patch_embed.proj.weight` of rank 4" in err
    shutil.copy(TINY / "checkpoint.pth", run / "checkpoint.pth")
    for flag in ("--num-classes", "--image-size"):  # official runs keep their own
        err = refused(capsys, convert_module.main, run, "--out", out, flag, "5")
        assert f"{flag} is for ImageNet sources" in err
    assert not out.exists()


# ---------------------------------------------------------------- images and files


def png_header(width, height):
    """A PNG whose header declares `width x height` RGB pixels (its data is one row)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_predict_refuses_huge_declared_images_and_names_what_is_not_a_file(
    tmp_path, capsys, model_path
):
    (tmp_path / "huge.png").write_bytes(png_header(10_000, 6_000))  # 60 MP declared, 30 KB
    os.mkfifo(tmp_path / "pipe.jpg")
    out = tmp_path / "out"
    with deadline(60):
        status = predict_module.main(
            [str(tmp_path / "huge.png"), str(tmp_path / "pipe.jpg"), "/dev/zero"]
            + ["--model", str(model_path), "--out", str(out)]
        )
    err = capsys.readouterr().err
    assert status == 1
    assert (
        "huge.png: its header declares 10000x6000 = 60000000 pixels, more than the limit of "
        "50000000 (--max-pixels)" in err
    )
    assert f"{tmp_path / 'pipe.jpg'} is a FIFO (named pipe), not an image file" in err
    assert "/dev/zero is a character device, not an image file" in err
    with deadline(60):  # a folder holding the FIFO: named, and the photo beside it segmented
        shutil.copy(PHOTO, tmp_path / "photo.jpg")
        status = predict_module.main(
            [str(tmp_path), "--model", str(model_path), "--out", str(out), "--max-pixels", "90000"]
        )
    err = capsys.readouterr().err
    assert status == 1 and "pipe.jpg is a FIFO" in err
    assert "photo.jpg" not in err
    assert (out / "photo_classes.png").exists()
    status = predict_module.main(
        [str(PHOTO), "--model", str(model_path), "--out", str(out), "--max-pixels", "1000"]
    )
    assert status == 1 and "more than the limit of 1000 (--max-pixels)" in capsys.readouterr().err
    with pytest.raises(ImageReadError, match="more than the limit of 50000000"):
        predict_module.predict(tiny_model(), tmp_path / "huge.png")  # the function's default


def test_datasets_name_non_regular_files_instead_of_hanging(tmp_path, capsys):
    data = tmp_path / "camvid"
    shutil.copytree(CAMVID, data)
    os.mkfifo(data / "trainannot" / "zz_pipe.png")
    with deadline(60):
        err = refused(capsys, data_main, "check", "--dataset", "camvid", "--data-dir", data)
    assert "zz_pipe.png is a FIFO (named pipe), not a regular file" in err
    fit_argv = ["--dataset", "camvid", "--data-dir", data, "--dry-run"]
    with deadline(60):
        assert "zz_pipe.png is a FIFO" in refused(capsys, fit_module.main, *fit_argv)


def test_data_pipeline_names_undecodable_and_huge_files_and_warns_of_unpaired_ones(
    tmp_path, caplog
):
    from keras_segmenter.data import eval_dataset

    data = tmp_path / "camvid"
    shutil.copytree(CAMVID, data)
    val = sorted((data / "val").iterdir())
    val[0].write_bytes(b"this is not a JPEG" * 10)
    shutil.copy(val[0], data / "val" / "lonely.jpg")
    dataset = eval_dataset("camvid", str(data), split="val")
    assert "skipping 1 image(s) without a mask" in caplog.text
    with pytest.raises(Exception, match="Not an image file .*" + val[0].name):
        list(dataset)
    val[0].write_bytes(png_header(10_000, 6_000))  # 60 MP declared, 30 KB
    with pytest.raises(
        Exception, match=val[0].name + " declares 10000x6000 \\(width x height\\) pixels"
    ):
        list(eval_dataset("camvid", str(data), split="val"))
    with pytest.raises(Exception, match="more than the limit of 1000 \\(--max-pixels\\)"):
        list(eval_dataset("camvid", str(CAMVID), split="val", max_pixels=1000))


def test_keras_files_that_are_not_segmenters_are_named_as_such(tmp_path, capsys, model_path):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(model_path.read_bytes()[:2000])
    inputs = keras.Input((4,))
    other = tmp_path / "dense.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(other)
    out = tmp_path / "out"
    for path, message in (
        (truncated, "is not a .keras model: not a zip archive (truncated"),
        (other, "holds a Functional, not a Segmenter"),
    ):
        assert message in refused(capsys, predict_module.main, PHOTO, "--model", path, "--out", out)
        args = ("--model", path, "--dataset", "camvid", "--data-dir", CAMVID)
        assert message in refused(capsys, evaluate_module.main, *args)


def test_backbone_and_serving_inputs_of_the_wrong_kind_are_value_errors():
    import tensorflow as tf

    with pytest.raises(ValueError, match="`image_size` must be a positive int .* image_size='big'"):
        ks.SegmenterTi16(5, image_size="big")
    with pytest.raises(ValueError, match="`num_heads` must be a positive int"):
        ks.ViTBackbone(8, 16, 2, 0, 32, image_size=32)
    assert [int(v) for v in export_module.declared_size(tf.constant(b""))] == [0, 0]
    module = export_module.SegmenterServingModule(tiny_model())
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds an empty string"):
        module.serving_bytes(tf.constant([b""]))


# ---------------------------------------------------------------- commands' settings


def test_fit_dry_run_refuses_what_the_run_would_refuse(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    sample = ["--dataset", "camvid", "--dry-run"]
    folder = ["--dataset", "folder", "--data-dir", CAMVID, "--dry-run"]
    for argv, message in (
        (sample + ["--crop-size", "100"], "--crop-size must be a multiple of the 16-pixel patch"),
        (sample + ["--model", "seg_tiny"], "--model must be one of"),
        (sample + ["--dropout", "2"], "--dropout must be a rate in [0, 1). Received: 2.0"),
        (sample + ["--window-stride", "0"], "--window-stride must be a positive integer"),
        (sample + ["--val-images", "-1"], "--val-images must be a positive integer"),
        (sample + ["--max-pixels", "0"], "--max-pixels must be a positive integer"),
        (sample + ["--lr", "nan"], "--lr must be a finite number >= 0. Received: nan"),
        (sample + ["--num-classes", "5"], "--num-classes is for --dataset folder"),
        (sample + ["--ignore-index", "3"], "--ignore-index is for --dataset folder"),
        (folder + ["--num-classes", "0"], "--num-classes must be a positive integer"),
        (folder + ["--num-classes", "5", "--ignore-index", "3"], "not one of the class ids 0..4"),
        (sample + ["--output-dir", a_file], f"--output-dir {a_file} is a file"),
        (sample + ["--output-dir", a_file / "run"], f"is inside {a_file}, a file"),
    ):
        assert message in refused(capsys, fit_module.main, *argv), argv


def test_a_refused_init_leaves_no_config_json(tmp_path, capsys):
    five = tmp_path / "five.keras"
    tiny_model(num_classes=5).save(five)
    out = tmp_path / "run"
    argv = ["--init", five, *ONE_STEP, "--output-dir", out]
    assert "the model has 5 classes" in refused(capsys, fit_module.main, *argv)
    assert not (out / "config.json").exists()


def test_evaluate_and_export_refuse_settings_they_would_ignore(tmp_path, capsys, model_path):
    evaluate = ["--model", model_path, "--dataset", "camvid", "--data-dir", CAMVID]
    for extra, message in (
        (["--limit", "0"], "--limit must be a positive integer. Received: 0"),
        (["--max-pixels", "0"], "--max-pixels must be a positive integer. Received: 0"),
        (["--window-stride", "0"], "--window-stride must be a positive integer"),
        (["--num-classes", "11"], "--num-classes is for --dataset folder"),
    ):
        assert message in refused(capsys, evaluate_module.main, *evaluate, *extra)
    export = ["--model", model_path, "--out"]
    for extra, message in (
        ([tmp_path / "1", "--max-pixels", "100"], "at least one 32x32 window, 1024 pixels"),
        ([tmp_path / "m.onnx", "--format", "onnx", "--max-pixels", "9"], "--max-pixels: only for"),
        (["/sys/kernel/keras_segmenter/1"], "/sys/kernel/keras_segmenter"),
    ):
        assert message in refused(capsys, export_module.main, *export, *extra)
    assert not (tmp_path / "1").exists()


def test_out_of_memory_is_one_line_naming_the_window_flags():
    import tensorflow as tf

    from keras_segmenter.cli import user_error_message

    error = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[1,2,65537,65537] and type float"
    )
    assert user_error_message(error) == (
        "out of memory for a tensor of shape [1,2,65537,65537]: use a smaller --window-size or "
        "--window-batch-size, or smaller images"
    )


# ---------------------------------------------------------------- one run per folder

HOLD = """
import sys, time
from keras_segmenter.training.lock import lock_output_dir
lock_output_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_one_run_per_output_folder_and_a_stale_lock_is_named(tmp_path, capsys):
    from keras_segmenter.training import lock

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        argv = ["--output-dir", out, *ONE_STEP]
        err = refused(capsys, fit_module.main, *argv)
        assert f"--output-dir {out} is in use by another run (pid {holder.pid} on host " in err
        assert not (out / "config.json").exists()
    finally:
        holder.kill()  # as a crash would: the lock file stays, naming the dead run
        holder.wait()
    lock.lock_output_dir(out)
    assert f"was left by a run that did not end normally (pid {holder.pid} on host" in (
        capsys.readouterr().out
    )
    assert f"pid={os.getpid()} " in (out / ".lock").read_text()
    lock._release(os.path.realpath(out), str(out / ".lock"))
    assert not (out / ".lock").exists()
    (out / ".lock").write_text("pid=1 host=elsewhere.example started=2026-01-01T00:00:00\n")
    with pytest.raises(UserError, match="locked by a run on another machine"):
        lock.lock_output_dir(out)
