"""`fit.py --output-dir DIR --resume` continues the same run; defaults follow what is trained."""

import csv
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from keras_segmenter import fit
from tests.testing import CAMVID, finish, fit_command, tiny_model


def _user_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        fit.make_config(argv)
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2
        and err.count("\n") == 1
        and err.startswith("keras-segmenter fit: error: ")
    ), err
    return err


def _earlier_run(tmp_path):
    """A run folder as fit.py leaves it: its config.json and a checkpoint."""
    from keras_segmenter.training import RunConfig

    run = tmp_path / "run"
    config = RunConfig(
        dataset="camvid",
        data_dir=str(CAMVID),
        lr=0.5,
        iterations=8,
        batch_size=2,
        crop_size=64,
        checkpoint_every=2,
        val_every=4,
        output_dir=str(run),
        seed=3,
        deterministic=True,
    ).resolve()
    (run / "checkpoints").mkdir(parents=True)
    config.save(str(run / "config.json"))
    (run / "checkpoints" / "ckpt-00000002.npz").write_bytes(b"")
    return run, config


def test_resume_reads_the_runs_config_and_accepts_only_flags_that_cannot_change_it(
    tmp_path, capsys
):
    run, saved = _earlier_run(tmp_path)
    before = (run / "config.json").read_text()
    config, dry_run = fit.make_config(["--output-dir", str(run), "--resume"])
    assert config.resume and not dry_run
    assert {k: v for k, v in config.to_dict().items() if k != "resume"} == {
        k: v for k, v in saved.to_dict().items() if k != "resume"
    }
    config, dry_run = fit.make_config(
        ["--output-dir", str(run), "--resume", "--keep-checkpoints", "5", "--dry-run"]
    )
    assert config.keep_checkpoints == 5 and config.lr == 0.5 and dry_run

    err = _user_error(
        capsys, ["--output-dir", str(run), "--resume", "--lr", "1e-4", "--crop-size", "128"]
    )
    assert "--lr, --crop-size cannot be given with --resume" in err
    _user_error(capsys, ["--output-dir", str(run), "--resume", "--dataset", "camvid"])
    assert "--output-dir" in _user_error(capsys, ["--resume"])
    assert (run / "config.json").read_text() == before  # nothing written

    err = _user_error(
        capsys, ["--output-dir", str(run), "--data-dir", str(CAMVID)]
    )  # forgot --resume
    assert "already holds a run's checkpoints; add --resume" in err
    assert (run / "config.json").read_text() == before
    err = _user_error(capsys, ["--output-dir", str(tmp_path / "rnu"), "--resume"])  # misspelt
    assert "rnu/config.json does not exist" in err and not (tmp_path / "rnu").exists()
    os.remove(run / "checkpoints" / "ckpt-00000002.npz")
    assert "no checkpoint in" in _user_error(capsys, ["--output-dir", str(run), "--resume"])


def test_defaults_come_from_the_data_not_from_which_flags_are_given(tmp_path):
    plain = fit.make_config([])[0].to_dict()
    assert (plain["iterations"], plain["batch_size"], plain["output_dir"]) == (
        300,
        4,
        os.path.join("runs", "sample"),
    )
    out = fit.make_config(["--output-dir", str(tmp_path / "try")])[0].to_dict()
    bf16 = fit.make_config(["--precision", "mixed_bfloat16"])[0].to_dict()
    assert out.pop("output_dir") == str(tmp_path / "try")
    assert bf16.pop("precision") == "mixed_bfloat16"
    assert out == {k: v for k, v in plain.items() if k != "output_dir"}
    assert bf16 == {k: v for k, v in plain.items() if k != "precision"}
    # A real --data-dir gets the dataset's recipe, whatever else is given.
    from keras_segmenter.training.config import DATASET_DEFAULTS

    camvid = fit.make_config(["--data-dir", str(CAMVID)])[0]
    assert (camvid.iterations, camvid.batch_size, camvid.lr) == tuple(
        DATASET_DEFAULTS["camvid"][k] for k in ("iterations", "batch_size", "lr")
    )
    seeded = fit.make_config(["--seed", "7"])[0]
    assert seeded.seed == 7 and seeded.deterministic and not fit.make_config([])[0].deterministic


def test_dry_run_prints_the_resolved_recipe_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    fit.main(["--output-dir", str(out), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Training seg_ti16_mask on camvid, the bundled sample in ")
    assert "300 iterations (steps) x batch 4 = 1200 crops of 128x128" in lines[1]
    assert "adamw, lr 0.0001" in lines[2] and str(out) in lines[3]
    assert not out.exists()


def _fit(out, *extra):
    return fit_command("--output-dir", out, *extra)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_readme_kill_and_resume_ends_with_the_uninterrupted_weights(tmp_path):
    import keras

    init = tmp_path / "tiny.keras"
    tiny_model(11, dropout=0.1).save(init)  # dropout and drop path: the resume draws the same masks
    recipe = [
        "--dataset",
        "camvid",
        "--data-dir",
        CAMVID,
        "--init",
        init,
        "--crop-size",
        32,
        "--batch-size",
        2,
        "--iterations",
        8,
        "--checkpoint-every",
        2,
        "--val-every",
        4,
        "--val-images",
        1,
        "--seed",
        0,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The uninterrupted run and the one killed after its first checkpoint run at the same time.
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    full_proc = subprocess.Popen(_fit(tmp_path / "full", *recipe), **pipes)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _fit(out, *recipe), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        try:
            if json.loads(latest.read_text())["iteration"] >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "model.keras").exists()
    assert json.loads(latest.read_text())["iteration"] < 8
    leftovers = [out / "tmp-99999-model.keras", out / "checkpoints" / "tmp-99999-ckpt-00000008.npz"]
    for path in leftovers:  # what a write cut short leaves
        path.write_bytes(b"partial")
    (full,) = finish([full_proc])
    assert full.returncode == 0, full.stderr[-3000:]
    first = full.stdout.splitlines()[0]
    assert (
        first.startswith("Training ") and "tiny.keras on camvid" in first
    )  # the recipe comes first

    resumed = subprocess.run(
        _fit(out, "--resume"), capture_output=True, text=True, timeout=600, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("Resuming ") and "Resumed from" in resumed.stdout
    assert not any(path.exists() for path in leftovers)
    a = keras.saving.load_model(tmp_path / "full" / "model.keras").get_weights()
    b = keras.saving.load_model(out / "model.keras").get_weights()
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) <= 1e-5
    full_rows, resumed_rows = _rows(tmp_path / "full" / "history.csv"), _rows(out / "history.csv")
    assert [r["epoch"] for r in resumed_rows] == ["0", "1", "2", "3"]
    for column in ("loss", "mIoU", "learning_rate", "val_mIoU"):
        np.testing.assert_allclose(
            [float(r[column]) for r in resumed_rows],
            [float(r[column]) for r in full_rows],
            rtol=1e-5,
            err_msg=column,
        )


def _limit_file_size():
    import resource

    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN
    )  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


@pytest.mark.slow
def test_a_full_disk_during_training_is_a_one_line_error(tmp_path):
    init = tmp_path / "tiny.keras"
    tiny_model(11, seed=None).save(init)
    out = tmp_path / "run"
    proc = subprocess.run(
        _fit(
            out,
            "--dataset",
            "camvid",
            "--data-dir",
            CAMVID,
            "--init",
            init,
            "--crop-size",
            32,
            "--batch-size",
            2,
            "--iterations",
            2,
            "--checkpoint-every",
            2,
            "--val-every",
            2,
            "--val-images",
            1,
        ),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        last.startswith("keras-segmenter fit: error: ")
        and "ckpt-00000002.npz: the disk is full" in last
    )
    # The first checkpoint failed: there is none to --resume from.
    assert "no checkpoint was written yet" in last and "--resume" not in last
    assert (
        os.listdir(out / "checkpoints") == []
    )  # no temporary file, no latest.json naming a broken file


def test_training_stream_resumes_at_any_example_whatever_iterators_came_before():
    from keras_segmenter.data import train_dataset

    def sums(start, take):
        ds = train_dataset("camvid", CAMVID, batch_size=2, crop_size=32, seed=5, start=start)
        next(
            iter(ds)
        )  # Keras may open an iterator of its own first: the order must not depend on it
        return [float(np.sum(batch[0])) for batch in ds.take(take)]

    whole = sums(0, 6)  # 4 training images: 3 epochs
    assert sums(6, 3) == whole[3:]  # from the 4th batch, across epoch boundaries
    assert whole[:2] != whole[2:4]  # each epoch has its own order
