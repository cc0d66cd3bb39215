"""training/fit.py end to end, as a user runs it: real CamVid pairs, mixed precision, --init."""

import csv
import json
import subprocess

import keras
import pytest

import keras_segmenter as ks
from tests.testing import CAMVID, REPO, finish, fit_command, tiny_model


def start_fit(*args):
    """Starts training/fit.py on the CamVid pairs: 64-pixel crops, batch 2, 1 validation image."""
    return subprocess.Popen(
        fit_command(
            *("--dataset", "camvid", "--data-dir", CAMVID, "--crop-size", 64, "--batch-size", 2),
            *("--val-images", 1, *args),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def succeeded(proc):
    (done,) = finish([proc])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The runs, started together: (their folder, {name: process})."""
    root = tmp_path_factory.mktemp("fit")
    tiny_model(3, seed=None, num_layers=1).save(root / "tiny.keras")
    tiny_model(11, seed=None, num_layers=1, image_size=64).save(root / "tiny_11.keras")
    procs = {
        "bf16": start_fit(
            *("--model", "seg_ti16_linear", "--precision", "mixed_bfloat16", "--iterations", 4),
            *("--checkpoint-every", 2, "--val-every", 4, "--output-dir", root / "bf16"),
        ),
        "fp16": start_fit(
            *("--init", root / "tiny_11.keras", "--precision", "mixed_float16", "--iterations", 2),
            *("--checkpoint-every", 2, "--val-every", 2, "--output-dir", root / "fp16"),
        ),
        "wrong_classes": start_fit("--init", root / "tiny.keras", "--output-dir", root / "run"),
    }
    yield root, procs
    for proc in procs.values():  # those a failed test left running
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def history(folder):
    with open(folder / "history.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_fit_a_preset_in_bfloat16_and_an_init_in_float16(started):
    root, procs = started
    succeeded(procs["bf16"])
    config = json.loads((root / "bf16" / "config.json").read_text())
    assert config["precision"] == "mixed_bfloat16" and config["iterations"] == 4
    rows = history(root / "bf16")
    assert len(rows) == 2 and float(rows[-1]["iteration"]) == 4
    model = keras.saving.load_model(root / "bf16" / "model.keras")
    assert isinstance(model, ks.Segmenter) and model.num_classes == 11

    # --init under another precision (with its loss scale): a .keras file goes on training.
    succeeded(procs["fp16"])
    config = json.loads((root / "fp16" / "config.json").read_text())
    assert config["precision"] == "mixed_float16" and config["init"].endswith("tiny_11.keras")
    assert float(history(root / "fp16")[-1]["iteration"]) == 2
    assert (root / "fp16" / "model.keras").is_file()


@pytest.mark.slow
def test_fit_rejects_an_init_with_the_wrong_number_of_classes(started):
    (result,) = finish([started[1]["wrong_classes"]], timeout=300)
    assert result.returncode != 0
    assert "the model has 3 classes" in result.stdout + result.stderr
