"""training/evaluate.py on a `folder` dataset, and its one-line errors for a user's mistakes."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests import testing
from tests.testing import ASSETS, REPO

CAMVID = ASSETS / "eval_camvid"
_spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "training" / "evaluate.py")
evaluate_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_script)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = testing.tiny_model(11, num_layers=1, decoder="linear")
    kernel, _ = model.decoder.weights
    kernel.assign(kernel * 20.0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def folder_copy(root, labels=None):
    """eval_camvid as a `folder` dataset (images/val, masks/val), CamVid's void 11 -> 255."""
    for sub in ("images/val", "masks/val"):
        (root / sub).mkdir(parents=True)
    for image in sorted((CAMVID / "val").glob("*.jpg")):
        shutil.copy(image, root / "images" / "val" / image.name)
        mask = np.array(Image.open(CAMVID / "valannot" / f"{image.stem}.png"))
        mask[mask == 11] = 255
        if labels is not None:
            mask[:4, :4] = labels
        Image.fromarray(mask, "L").save(root / "masks" / "val" / f"{image.stem}.png")
    return root


WINDOW = ["--window-size", "128", "--original-size", "--no-object-sizes"]


def test_folder_dataset_with_num_classes_gives_the_camvid_numbers(model_path, tmp_path):
    folder = folder_copy(tmp_path / "data")
    output = tmp_path / "folder.json"
    evaluate_script.main(
        [
            "--model",
            str(model_path),
            "--dataset",
            "folder",
            "--num-classes",
            "11",
            "--data-dir",
            str(folder),
            "--output",
            str(output),
            *WINDOW,
        ]
    )
    camvid_output = tmp_path / "camvid.json"
    argv = ["--model", str(model_path), "--dataset", "camvid", "--data-dir", str(CAMVID)]
    assert evaluate_script.main([*argv, "--output", str(camvid_output), *WINDOW]) == 0
    camvid = json.loads(camvid_output.read_text())
    results = json.loads(output.read_text())
    assert results["num_images"] == 3 and results["dataset"] == "folder"
    np.testing.assert_allclose(results["mIoU"], camvid["mIoU"], rtol=1e-12)
    np.testing.assert_allclose(results["aAcc"], camvid["aAcc"], rtol=1e-12)


def error_of(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_user_mistakes_end_in_one_line_and_status_2(model_path, tmp_path, capsys):
    data = ["--data-dir", str(CAMVID)]
    run = lambda *argv: error_of(capsys, "--model", model_path, *argv)  # noqa: E731
    assert "none.keras: no such file; expected a .keras model file" in error_of(
        capsys, "--model", tmp_path / "none.keras", "--dataset", "camvid", *data
    )
    (tmp_path / "dir.keras").mkdir()
    assert "dir.keras is a folder" in error_of(
        capsys, "--model", tmp_path / "dir.keras", "--dataset", "camvid", *data
    )
    (tmp_path / "text.keras").write_text("not a model")
    assert "text.keras is not a .keras model: not a zip archive" in error_of(
        capsys, "--model", tmp_path / "text.keras", "--dataset", "camvid", *data
    )
    assert "Unknown dataset" in run("--dataset", "camvidd", *data)
    assert "--data-dir must be a folder" in run(
        "--dataset", "camvid", "--data-dir", tmp_path / "nowhere"
    )
    (tmp_path / "empty").mkdir()
    assert "No image/mask pairs found" in run(
        "--dataset", "folder", "--data-dir", tmp_path / "empty", "--split", "all"
    )
    assert "predicts 11 classes but --dataset folder has 5" in run(
        "--dataset", "folder", "--num-classes", "5", *data
    )
    assert "--output" in run("--dataset", "camvid", *data, "--output", tmp_path)


def test_labels_out_of_range_name_the_mask_in_one_line(model_path, tmp_path, capsys):
    folder = folder_copy(tmp_path / "data", labels=40)
    line = error_of(
        capsys,
        "--model",
        model_path,
        "--dataset",
        "folder",
        "--num-classes",
        "11",
        "--data-dir",
        folder,
        *WINDOW,
    )
    assert line.startswith("keras-segmenter evaluate: error: Mask values outside the classes in ")
    assert str(folder / "masks" / "val") in line and ": 40;" in line
