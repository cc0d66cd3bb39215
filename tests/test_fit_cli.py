"""training/fit.py end to end, as a user runs it: real CamVid pairs, mixed precision, --init."""

import csv
import json
import pathlib
import subprocess
import sys

import keras
import pytest

import keras_segmenter as ks

REPO = pathlib.Path(__file__).resolve().parents[1]
CAMVID = REPO / "tests" / "data" / "camvid"


def fit(*args, timeout=600):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "fit.py"),
            "--dataset",
            "camvid",
            "--data-dir",
            str(CAMVID),
            "--crop-size",
            "64",
            "--batch-size",
            "2",
            "--val-images",
            "1",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_fit_mixed_precision_then_continue_from_init(tmp_path):
    first = tmp_path / "bf16"
    fit(
        "--model",
        "seg_ti16_linear",
        "--precision",
        "mixed_bfloat16",
        "--iterations",
        4,
        "--checkpoint-every",
        2,
        "--val-every",
        4,
        "--output-dir",
        first,
    )
    config = json.loads((first / "config.json").read_text())
    assert config["precision"] == "mixed_bfloat16" and config["iterations"] == 4
    with open(first / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and float(rows[-1]["iteration"]) == 4
    model = keras.saving.load_model(first / "model.keras")
    assert isinstance(model, ks.Segmenter) and model.num_classes == 11

    second = tmp_path / "fp16"
    fit(
        "--init",
        first / "model.keras",
        "--precision",
        "mixed_float16",
        "--iterations",
        2,
        "--checkpoint-every",
        2,
        "--val-every",
        2,
        "--output-dir",
        second,
    )
    assert (second / "model.keras").is_file()


def test_fit_rejects_an_init_with_the_wrong_number_of_classes(tmp_path):
    tiny = tmp_path / "tiny.keras"
    ks.Segmenter(ks.ViTBackbone(8, 16, 1, 2, 32, image_size=32), 3).save(tiny)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "fit.py"),
            "--dataset",
            "camvid",
            "--data-dir",
            str(CAMVID),
            "--init",
            str(tiny),
            "--output-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "the model has 3 classes" in result.stdout + result.stderr
