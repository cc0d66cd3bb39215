"""Every bad input is reported by `check` and stops the pipeline by name."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_segmenter.data import list_pairs, train_dataset
from keras_segmenter.data.__main__ import main as cli
from keras_segmenter.data.check import check_dataset
from tests.testing import ASSETS

DATA = str(ASSETS)
CAMVID = os.path.join(DATA, "camvid")


def _good_copy(root, k=0, stem="good"):
    image, mask = list_pairs("camvid", CAMVID, "train")[k]
    for sub in ("train", "trainannot"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    shutil.copy(image, os.path.join(root, "train", f"{stem}.jpg"))
    shutil.copy(mask, os.path.join(root, "trainannot", f"{stem}.png"))
    return (
        os.path.join(root, "train", f"{stem}.jpg"),
        os.path.join(root, "trainannot", f"{stem}.png"),
    )


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _resize_mask(path):
    Image.open(path).resize((100, 80), Image.NEAREST).save(path)


def _palette_mask(path):
    mask = Image.open(path).convert("P")
    mask.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    mask.save(path)


def _bad_labels(path):
    array = np.array(Image.open(path))
    array[:5, :5] = 20
    Image.fromarray(array, "L").save(path)


def _sixteen_bit(path):
    array = np.array(Image.open(path)).astype(np.uint16)
    Image.fromarray(array).save(path)  # Mode I;16.


def _cmyk(path):
    Image.open(path).convert("CMYK").save(path, "JPEG")


FATAL_CASES = {
    "truncated_image": (0, _truncate, "unreadable"),
    "truncated_mask": (1, _truncate, "unreadable"),
    "size_mismatch": (1, _resize_mask, "size_mismatch"),
    "palette_mask": (1, _palette_mask, "mask_mode"),
    "bad_labels": (1, _bad_labels, "label_values"),
    "sixteen_bit_mask": (1, _sixteen_bit, "mask_mode"),
    "cmyk_image": (0, _cmyk, "image_mode"),
}


def _make_bad(root, case):
    which, corrupt, _ = FATAL_CASES[case]
    paths = _good_copy(root, 0, stem=case)
    corrupt(paths[which])
    return paths[which]


def test_check_reports_every_problem_with_file_names(tmp_path, capsys):
    root = str(tmp_path)
    _good_copy(root, 1, "clean")
    bad = {case: _make_bad(root, case) for case in FATAL_CASES}
    rgba = _good_copy(root, 2, "rgba_image")[0]
    Image.open(rgba).convert("RGBA").save(rgba[:-4] + ".png")
    os.remove(rgba)
    lonely_image = _good_copy(root, 3, "lonely")[1]
    os.remove(lonely_image)
    lonely_mask = _good_copy(root, 3, "orphan")[0]
    os.remove(lonely_mask)

    num_pairs, problems = check_dataset("camvid", root, "train")
    assert num_pairs == 2 + len(FATAL_CASES)
    kinds = {(p.kind, os.path.basename(p.path)) for p in problems}
    for case, path in bad.items():
        assert (FATAL_CASES[case][2], os.path.basename(path)) in kinds, case
    assert ("image_without_mask", "lonely.jpg") in kinds
    assert ("mask_without_image", "orphan.png") in kinds
    rgba_problem = [p for p in problems if p.path.endswith("rgba_image.png")]
    assert rgba_problem and not rgba_problem[0].fatal  # Only a warning.
    assert not [p for p in problems if "clean" in p.path]

    assert cli(["check", "--dataset", "camvid", "--data-dir", root, "--split", "train"]) == 1
    report = capsys.readouterr().out
    for path in bad.values():
        assert os.path.basename(path) in report
    assert "size_mismatch: 1" in report


def test_check_passes_clean_data(capsys):
    assert cli(["check", "--dataset", "camvid", "--data-dir", CAMVID]) == 0
    assert "0 problems" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case",
    [
        "truncated_image",
        "truncated_mask",
        "size_mismatch",
        "palette_mask",
        "bad_labels",
        "sixteen_bit_mask",
    ],
)
def test_pipeline_stops_naming_the_file(tmp_path, case):
    path = _make_bad(str(tmp_path), case)
    ds = train_dataset("camvid", str(tmp_path), batch_size=1, crop_size=32, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        next(iter(ds))
    assert path in str(error.value)
