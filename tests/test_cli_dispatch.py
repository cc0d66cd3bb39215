"""`keras-segmenter COMMAND` and `python -m keras_segmenter COMMAND` run each command's `main`."""

import configparser
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from keras_segmenter import cli
from keras_segmenter.__main__ import COMMANDS, main

REPO = pathlib.Path(__file__).resolve().parents[1]


def _exit_status(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr()


def test_console_script_is_the_dispatcher():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    assert scripts == ["keras-segmenter = keras_segmenter.__main__:main"]
    module, function = scripts[0].split(" = ")[1].split(":")
    assert getattr(importlib.import_module(module), function) is main


def test_help_lists_every_command_and_each_command_has_its_own(capsys):
    status, out = _exit_status(capsys, ["--help"])
    assert status == 0 and out.out.startswith("usage: keras-segmenter ")
    for name in ("fit", "evaluate", "predict", "export", "convert", "data"):
        assert f"\n  {name} " in out.out
    for name in COMMANDS:
        status, out = _exit_status(capsys, [name, "--help"])
        assert status == 0 and out.out.startswith("usage: "), name
    status, out = _exit_status(capsys, ["predict", "--help"])
    assert "usage: keras-segmenter predict " in out.out and "--model" in out.out


def test_every_command_has_one_shape(capsys):
    """`build_parser()` with prog `keras-segmenter COMMAND`, `main(argv)`; training/*.py call it."""
    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert module.build_parser().prog == f"keras-segmenter {name}", name
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--no-such-flag"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"keras-segmenter {name}: error: " in err, err
    for name in ("fit", "evaluate"):
        spec = importlib.util.spec_from_file_location(name, REPO / "training" / f"{name}.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        assert script.main is importlib.import_module(COMMANDS[name][0]).main


def test_version_is_the_package_version(capsys):
    import keras_segmenter

    status, out = _exit_status(capsys, ["--version"])
    assert status == 0 and out.out == f"keras-segmenter {keras_segmenter.__version__}\n"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: keras_segmenter.version.__version__"


def test_an_unknown_or_missing_command_exits_with_status_2(capsys):
    status, out = _exit_status(capsys, ["train"])
    assert status == 2 and "invalid choice: 'train'" in out.err and not out.out
    status, out = _exit_status(capsys, [])
    assert status == 2 and "COMMAND" in out.err


def test_a_command_gets_the_rest_of_the_line_and_its_status_is_returned(tmp_path, capsys):
    assert main(["fit", "--output-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("Training seg_ti16_mask on camvid")
    status, out = _exit_status(capsys, ["fit", "--resume"])
    assert status == 2
    assert (
        out.err
        == "keras-segmenter fit: error: --resume needs --output-dir, the folder of the run to continue.\n"
    )


def test_a_missing_manual_download_is_one_line_naming_the_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["tfds", "--dataset", "camvid", "--manual-dir", str(empty)]
    assert main(["data", *argv, "--data-dir", str(tmp_path / "tfds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"keras-segmenter data: error: {empty}: the manual download folder")
    assert "is empty; expected: Copy the `CamVid/` folder" in err


def test_the_console_script_counts_as_a_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "keras-segmenter"), "fit"])
    assert cli.is_command()
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "pytest")])
    assert not cli.is_command()


def test_the_command_name_is_read_however_the_command_is_run(monkeypatch):
    """predict's memory setting (TF_ONEDNN_USE_SYSTEM_ALLOCATOR) depends on it."""
    script = os.path.join("venv", "bin", "keras-segmenter")
    cases = [
        (["python", "-m", "keras_segmenter.predict", "--model", "m.keras"], ["-m"], "predict"),
        (["python", "-m", "keras_segmenter", "predict", "x.jpg"], ["-m"], "predict"),
        (["python", "-m", "keras_segmenter.export", "--model", "m"], ["-m"], "export"),
        (["python", script, "predict", "x.jpg"], [script, "predict", "x.jpg"], "predict"),
        (["python", "-m", "pytest", "tests"], ["-m"], None),
        (["python", "-m"], ["-m"], None),
    ]
    for orig_argv, argv, expected in cases:
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        monkeypatch.setattr(sys, "argv", argv)
        assert cli.command_name() == expected, orig_argv


def test_python_dash_m_runs_the_dispatcher():
    result = subprocess.run(
        [sys.executable, "-m", "keras_segmenter", "evaluate", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.startswith("usage: keras-segmenter evaluate ")
        and "--multi-scale" in result.stdout
    )
    assert "cpu_feature_guard" not in result.stderr  # TensorFlow's start-up notices are hidden
