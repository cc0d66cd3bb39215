"""`predict --runner DirectRunner` (keras_segmenter/beam.py): the same files as plain `predict`."""

import shutil
import subprocess
import sys

import pytest

from keras_segmenter import predict as predict_module
from keras_segmenter.beam import FAILED_INPUTS, write_atomically
from tests.testing import PHOTOS, python_env, tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model().save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos, two more that share a stem with them, and a file that is no image."""
    folder = tmp_path_factory.mktemp("photos")
    for path in PHOTOS.iterdir():
        if path.suffix in (".jpg", ".png"):
            shutil.copy(path, folder / path.name)
    # camvid_0016E5_07959.jpg, .png and _2.png are named ..._07959, ..._07959_2, ..._07959_2_2.
    for name in ("camvid_0016E5_07959.png", "camvid_0016E5_07959_2.png"):
        shutil.copy(PHOTOS / "voc_val_sample_1_160.png", folder / name)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    return folder


def start_predict(*args):
    """`python -m keras_segmenter.predict ARGS`, as the README runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "keras_segmenter.predict", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(),
    )


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def files_in(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.slow
def test_direct_runner_writes_the_files_of_plain_predict_and_reports_the_bad_one(
    model_path, photos, tmp_path
):
    plain, piped = tmp_path / "plain", tmp_path / "beam"
    runs = [
        start_predict("--model", model_path, photos, "--out", plain),
        start_predict("--model", model_path, photos, "--out", piped, "--runner", "DirectRunner"),
    ]
    (plain_status, _, plain_err), (status, out, err) = [finish(run) for run in runs]
    assert plain_status == 1 and "broken.jpg" in plain_err
    assert status == 1, err[-3000:]
    assert "broken.jpg" in err and "1 input(s) failed, 5 image(s) done" in err
    assert "5 image(s) -> " in out
    expected = files_in(plain)
    assert len(expected) == 10  # classes and overlay of 5 images
    assert "camvid_0016E5_07959_2_2_classes.png" in expected
    written = files_in(piped)
    failed = written.pop(FAILED_INPUTS).decode().splitlines()
    assert len(failed) == 1 and "broken.jpg" in failed[0]
    assert written.keys() == expected.keys()
    for name, data in expected.items():
        assert written[name] == data, name

    # Again into the same folder, from patterns (one matching nothing): the same files, the
    # failures of this run only, no temporary files left.
    rerun = start_predict(
        "--model",
        model_path,
        photos / "*.png",
        photos / "*.jpg",
        tmp_path / "missing" / "*.jpg",
        "--out",
        piped,
        "--runner",
        "DirectRunner",
    )
    status, out, err = finish(rerun)
    assert status == 1, err[-3000:]
    written = files_in(piped)
    failed = written.pop(FAILED_INPUTS).decode().splitlines()
    assert len(failed) == 2, failed
    assert any("broken.jpg" in line for line in failed)
    assert f"{tmp_path / 'missing' / '*.jpg'}: no such file or folder" in failed
    assert written == expected


def test_atomic_writes_replace_whole_files_and_leave_nothing_when_they_fail(tmp_path):
    path = str(tmp_path / "a_classes.png")
    write_atomically(path, b"first")
    write_atomically(path, b"second")  # a retried bundle writes the same name again
    with pytest.raises(TypeError):
        write_atomically(path, None)  # fails after the temporary file exists
    assert [p.name for p in tmp_path.iterdir()] == ["a_classes.png"]
    assert (tmp_path / "a_classes.png").read_bytes() == b"second"


def test_runner_flags_are_checked(model_path, tmp_path, capsys):
    def error_of(*argv):
        with pytest.raises(SystemExit) as exit_info:
            predict_module.main(
                ["--model", str(model_path), str(PHOTOS), "--out", str(tmp_path), *argv]
            )
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "--direct_num_wrkers: not a Beam pipeline option" in error_of(
        "--runner", "DirectRunner", "--direct_num_wrkers=2"
    )
    assert "--runner NoSuchRunner:" in error_of("--runner", "NoSuchRunner")
    # Without --runner a Beam option is an unknown flag, as before.
    assert "unrecognized arguments: --direct_num_workers=2" in error_of("--direct_num_workers=2")
    assert not list(tmp_path.iterdir())
