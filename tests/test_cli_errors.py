"""keras_segmenter.cli: a user's mistake is one line and exit status 2, a bug keeps its traceback."""

import subprocess
import sys
import zipfile

import keras
import pytest
import tensorflow as tf

from keras_segmenter import predict as predict_module
from keras_segmenter.cli import reports_user_errors, user_error_message
from keras_segmenter.errors import UserError, check_file
from keras_segmenter.files import DiskFullError
from tests.testing import FIXTURES, PHOTOS, REPO, tiny_model

IMAGE = PHOTOS / "camvid_0016E5_07959.jpg"


def test_user_errors_become_one_line_and_bugs_are_reraised(capsys):
    @reports_user_errors
    def main(error):
        raise error

    for error, line in (
        (UserError("--flag x: expected y"), "error: --flag x: expected y\n"),
        (FileNotFoundError("a\n  b"), "error: a b\n"),
        (IsADirectoryError(21, "Is a directory", "d"), "error: [Errno 21] Is a directory: 'd'\n"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(error)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == line
    with pytest.raises(SystemExit):  # a full disk is no bug either
        main(DiskFullError("m.keras: the disk is full, nothing was written"))
    assert capsys.readouterr().err == "error: m.keras: the disk is full, nothing was written\n"
    for bug in (KeyError("a bug"), ValueError("a bug"), OSError(5, "Input/output error")):
        with pytest.raises(type(bug)):
            main(bug)
        assert capsys.readouterr().err == ""
    with pytest.raises(tf.errors.InvalidArgumentError):  # not one of the data checks
        main(tf.errors.InvalidArgumentError(None, None, "Matrix size-incompatible"))


def test_a_bug_inside_a_command_keeps_its_traceback(tmp_path):
    """A plain ValueError from the library (here a bug put into `fit`) is not a user's mistake."""
    code = (
        "import sys; from keras_segmenter import fit; "
        "fit.describe = lambda *_: int('not a number'); "
        "from keras_segmenter.__main__ import main; "
        f"sys.exit(main(['fit', '--dry-run', '--output-dir', {str(tmp_path / 'run')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith(
        "ValueError: invalid literal for int() with base 10: 'not a number'"
    )
    assert "error: invalid literal" not in result.stderr


def test_tensorflow_assertions_are_read_as_their_message():
    @tf.function
    def check(x):
        tf.debugging.Assert(
            x > 0, [tf.strings.join(["Mask values outside the classes in 'a.png': ", "20"])]
        )
        return x

    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        check(tf.constant(-1))
    assert user_error_message(error.value) == "Mask values outside the classes in 'a.png': 20"


def test_check_file_never_calls_an_existing_path_missing(tmp_path):
    with pytest.raises(UserError, match="no such file; expected a model"):
        check_file(tmp_path / "none", "a model")
    with pytest.raises(UserError, match="is a folder; expected a model"):
        check_file(tmp_path, "a model")
    (tmp_path / "f").write_text("")
    check_file(tmp_path / "f", "a model")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model(seed=None, num_layers=1).save(path)
    return path


def predict_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        predict_module.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_predict_names_an_out_file_and_a_file_that_is_not_a_model(model_path, tmp_path, capsys):
    out_file = tmp_path / "out.txt"
    out_file.write_text("taken")
    assert f"--out {out_file} is a file" in predict_error(
        capsys, "--model", model_path, IMAGE, "--out", out_file
    )
    not_model = tmp_path / "photo.keras"
    not_model.write_bytes(IMAGE.read_bytes())
    assert f"{not_model} is not a .keras model: not a zip archive" in predict_error(
        capsys, "--model", not_model, IMAGE, "--out", tmp_path / "o"
    )
    broken = tmp_path / "broken.keras"  # a .keras zip whose config.json is not JSON
    with zipfile.ZipFile(model_path) as source, zipfile.ZipFile(broken, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"{not json" if name == "config.json" else source.read(name))
    assert f"{broken}: cannot load it as a .keras model" in predict_error(
        capsys, "--model", broken, IMAGE, "--out", tmp_path / "o"
    )
    assert "is a folder" in predict_error(
        capsys, "--model", tmp_path, IMAGE, "--out", tmp_path / "o"
    )
    assert "Unknown dataset" in predict_error(
        capsys, "--model", model_path, IMAGE, "--out", tmp_path / "o", "--dataset", "nope"
    )
    assert not (tmp_path / "o").exists()
    assert keras.saving.load_model(model_path).num_classes == 5


def test_a_model_argument_the_user_chose_is_one_line(tmp_path, capsys):
    """`convert --image-size` reaches `ViTBackbone`'s own check: still the user's mistake."""
    from keras_segmenter.convert import __main__ as convert_module

    source = FIXTURES / "augreg_vit" / "tiny.npz"
    argv = [str(source), "--out", str(tmp_path / "m.keras"), "--num-classes", "3"]
    with pytest.raises(SystemExit) as exit_info:
        convert_module.main([*argv, "--image-size", "50"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "keras-segmenter convert: error: `image_size` must be a multiple of `patch_size`. "
        "Received: image_size=(50, 50), patch_size=16\n"
    )
