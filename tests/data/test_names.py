"""File names and folders: ambiguous stems, symlinked folders, misnamed masks, mask modes, CLI errors."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_segmenter.cli import user_error_message
from keras_segmenter.data import list_pairs, train_dataset
from keras_segmenter.data.__main__ import main as cli
from keras_segmenter.data.check import check_dataset
from tests.testing import ASSETS

CAMVID = str(ASSETS / "camvid")


def camvid_copy(root, count=3, images="train", masks="trainannot"):
    """The first `count` CamVid train pairs as root/{images}/pK.jpg, root/{masks}/pK.png."""
    os.makedirs(os.path.join(root, images), exist_ok=True)
    os.makedirs(os.path.join(root, masks), exist_ok=True)
    copied = []
    for k, (image, mask) in enumerate(list_pairs("camvid", CAMVID, "train")[:count]):
        pair = (os.path.join(root, images, f"p{k}.jpg"), os.path.join(root, masks, f"p{k}.png"))
        shutil.copy(image, pair[0])
        shutil.copy(mask, pair[1])
        copied.append(pair)
    return copied


@pytest.mark.parametrize("which", ["image", "mask"])
def test_same_stem_with_two_extensions_is_an_error_naming_both(tmp_path, which):
    root = str(tmp_path)
    image, mask = camvid_copy(root)[1]
    if which == "image":
        first, second = image, image[:-4] + ".png"
        Image.open(image).save(second)
    else:
        first, second = mask, mask[:-4] + ".PNG"
        shutil.copy(mask, second)
    _, problems = check_dataset("camvid", root, "train")
    ambiguous = [p for p in problems if p.kind == "ambiguous"]
    assert len(ambiguous) == 1 and ambiguous[0].fatal
    assert first in ambiguous[0].detail and second in ambiguous[0].detail
    for make in (
        lambda: list_pairs("camvid", root, "train"),
        lambda: train_dataset("camvid", root, batch_size=1, crop_size=32, seed=0),
    ):
        with pytest.raises(ValueError, match="Ambiguous") as error:
            make()
        assert first in str(error.value) and second in str(error.value)


def test_symlinked_subfolders_are_followed_and_loops_end(tmp_path, caplog):
    elsewhere = str(tmp_path / "elsewhere")
    camvid_copy(elsewhere, count=2, images="images", masks="masks")
    root = str(tmp_path / "data")
    camvid_copy(root, count=1)
    os.symlink(os.path.join(elsewhere, "images"), os.path.join(root, "train", "more"))
    os.symlink(os.path.join(elsewhere, "masks"), os.path.join(root, "trainannot", "more"))
    os.symlink(os.path.join(root, "train"), os.path.join(root, "train", "loop"))  # a cycle
    pairs = list_pairs("camvid", root, "train")
    assert len(pairs) == 3
    assert f"{os.path.join(root, 'train', 'loop')} links back to" in caplog.text
    assert (
        os.path.join(root, "train", "more", "p1.jpg"),
        os.path.join(root, "trainannot", "more", "p1.png"),
    ) in pairs
    num_pairs, problems = check_dataset("camvid", root, "train")
    assert num_pairs == 3 and not [p for p in problems if p.fatal]


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_check_points_at_a_mask_saved_with_another_extension(tmp_path, ext):
    root = str(tmp_path)
    image, mask = camvid_copy(root)[2]
    Image.open(mask).save(mask[:-4] + ext)
    os.remove(mask)
    _, problems = check_dataset("camvid", root, "train")
    lonely = [p for p in problems if p.kind == "image_without_mask"]
    assert len(lonely) == 1 and lonely[0].path == image
    assert f"but {mask[:-4] + ext} has its name: masks must be .png" in lonely[0].detail


def _rgb(path):
    Image.open(path).convert("RGB").save(path)


def _palette(path):
    mask = Image.open(path).convert("P")
    mask.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    mask.save(path)


def _sixteen_bit(path):
    Image.fromarray(np.array(Image.open(path)).astype(np.uint16)).save(path)


@pytest.mark.parametrize(
    "corrupt, check_kind, png_kind",
    [
        (_rgb, "RGB colour mask (mode 'RGB')", "8-bit RGB"),
        (_palette, "palette mask (mode 'P')", "8-bit palette"),
        (_sixteen_bit, "16-bit mask (mode 'I;16')", "16-bit grayscale"),
    ],
)
def test_mask_mode_messages_name_the_real_mode(tmp_path, corrupt, check_kind, png_kind):
    root = str(tmp_path)
    _, mask = camvid_copy(root, count=1)[0]
    corrupt(mask)
    _, problems = check_dataset("camvid", root, "train")
    (problem,) = [p for p in problems if p.kind == "mask_mode"]
    assert problem.detail.startswith(check_kind)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        next(iter(train_dataset("camvid", root, batch_size=1, crop_size=32, seed=0)))
    message = user_error_message(error.value)
    assert f"{mask} is a {png_kind} PNG" in message and "\n" not in message


def cli_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        cli(["check", *map(str, argv)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured
    return lines[0]


def test_check_cli_user_mistakes_end_in_one_line_and_status_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert f"{missing} does not exist" in cli_error(
        capsys, "--dataset", "camvid", "--data-dir", missing
    )
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = cli_error(capsys, "--dataset", "camvid", "--data-dir", afile)
    assert f"{afile} is a file" in line and "not exist" not in line
    line = cli_error(capsys, "--dataset", "camvid", "--data-dir", tmp_path, "--split", "train")
    assert (
        f"No images or masks found for dataset 'camvid', split 'train' in {tmp_path / 'train'}"
        in line
    )
    assert "Unknown dataset" in cli_error(capsys, "--dataset", "camvidd", "--data-dir", tmp_path)
    assert "needs `num_classes`" in cli_error(capsys, "--dataset", "folder", "--data-dir", tmp_path)
    assert "No split 'val'" in cli_error(
        capsys,
        "--dataset",
        "folder",
        "--num-classes",
        "3",
        "--data-dir",
        tmp_path,
        "--split",
        "val",
    )
