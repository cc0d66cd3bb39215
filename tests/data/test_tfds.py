"""TFDS builders: archives built from the samples, prepared offline, read
back by `train_dataset`/`eval_dataset("tfds:NAME")` as the raw folders."""

import os
import shutil
import socket
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_segmenter.data import SAMPLE_DIR, eval_dataset, train_dataset
from tests.testing import ASSETS

DATA = str(ASSETS)
# CamVid class -> a Cityscapes labelId of the same thing (11 = unlabeled).
_CAMVID_TO_LABEL_ID = np.array([23, 11, 17, 7, 8, 21, 20, 13, 26, 24, 33, 0] + [0] * 244, np.uint8)


def _copy_tree(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)


def _zip_folder(folder, zip_path, arc_root):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for dirpath, _, files in os.walk(folder):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                archive.write(path, os.path.join(arc_root, os.path.relpath(path, folder)))


def _ade20k(raw, manual):
    """ADEChallengeData2016.zip; training = the validation samples renamed."""
    root = raw / "ADEChallengeData2016"
    _copy_tree(os.path.join(DATA, "ADEChallengeData2016"), root)
    for kind, ext in (("images", ".jpg"), ("annotations", ".png")):
        (root / kind / "training").mkdir()
        for k in (1, 2):
            shutil.copy(
                root / kind / "validation" / f"ADE_val_{k:08d}{ext}",
                root / kind / "training" / f"ADE_train_{k:08d}{ext}",
            )
    _zip_folder(root, manual / "ADEChallengeData2016.zip", "ADEChallengeData2016")
    return str(raw)


def _pascal_context(raw, manual):
    """VOCdevkit/VOC2010 as MMSegmentation's converter writes it."""
    root = raw / "VOCdevkit" / "VOC2010"
    lists = root / "ImageSets" / "SegmentationContext"
    for sub in ("JPEGImages", "SegmentationClassContext", lists):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for f in sorted(os.listdir(os.path.join(DATA, "voc", "masks"))):
        index = np.array(Image.open(os.path.join(DATA, "voc", "masks", f)))
        index = np.where(index < 60, index, 255).astype(np.uint8)
        Image.fromarray(index, "L").save(root / "SegmentationClassContext" / f)
        image = Image.open(os.path.join(DATA, "voc", "images", f))
        image.convert("RGB").save(root / "JPEGImages" / (f[:-4] + ".jpg"))
        names.append(f[:-4])
    (lists / "train.txt").write_text(names[0] + "\n")
    (lists / "val.txt").write_text(names[1] + "\n")
    _copy_tree(raw, manual)
    return str(raw)


def _camvid(raw, manual):
    """The bundled SegNet-layout sample; test = val (the sample has none)."""
    root = raw / "CamVid"
    _copy_tree(SAMPLE_DIR, root)
    _copy_tree(root / "val", root / "test")
    _copy_tree(root / "valannot", root / "testannot")
    _copy_tree(raw, manual)
    return str(raw)


def _cityscapes(raw, manual):
    """The two Cityscapes zips TFDS' builder reads, at 1024x2048."""
    samples = sorted(os.listdir(os.path.join(DATA, "camvid", "train")))
    splits = {"train": samples[:2], "val": samples[2:3], "test": samples[3:]}
    for split, files in splits.items():
        for k, f in enumerate(files):
            stem = f"aachen_{k:06d}_000019"
            image = Image.open(os.path.join(DATA, "camvid", "train", f))
            mask = np.array(Image.open(os.path.join(DATA, "camvid", "trainannot", f[:-4] + ".png")))
            mask = Image.fromarray(_CAMVID_TO_LABEL_ID[mask], "L")
            for top, name, picture, resample in (
                ("leftImg8bit", "leftImg8bit", image, Image.BILINEAR),
                ("gtFine", "gtFine_labelIds", mask, Image.NEAREST),
            ):
                folder = raw / top / split / "aachen"
                folder.mkdir(parents=True, exist_ok=True)
                picture.resize((2048, 1024), resample).save(
                    folder / f"{stem}_{name}.png", compress_level=1
                )
    _zip_folder(raw / "leftImg8bit", manual / "leftImg8bit_trainvaltest.zip", "leftImg8bit")
    _zip_folder(raw / "gtFine", manual / "gtFine_trainvaltest.zip", "gtFine")
    return str(raw)


ARCHIVES = {
    "ade20k": _ade20k,
    "pascal_context": _pascal_context,
    "camvid": _camvid,
    "cityscapes": _cityscapes,
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Raw folders and one TFDS data_dir holding all four prepared datasets.

    Every socket connection and name lookup is refused and recorded while
    TFDS is imported, prepares and reads: the list must stay empty.
    """
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        from keras_segmenter.data import tfds as ks_tfds

        tmp = tmp_path_factory.mktemp("tfds")
        data_dir = str(tmp / "tensorflow_datasets")
        raw = {}
        for name, build in ARCHIVES.items():
            (tmp / name / "manual").mkdir(parents=True)
            raw[name] = build(tmp / name / "raw", tmp / name / "manual")
            ks_tfds.prepare(name, str(tmp / name / "manual"), data_dir)
        yield raw, data_dir, attempts
    assert not attempts


def _as_numpy(dataset):
    return [tuple(t.numpy() for t in example) for example in dataset]


def _same(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b)
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ade20k", "pascal_context", "camvid"])
def test_examples_equal_the_raw_folders(prepared, name):
    raw, data_dir, attempts = prepared
    for split in ("train", "val"):
        ours = _as_numpy(eval_dataset(f"tfds:{name}", data_dir, split=split))
        expected = _as_numpy(eval_dataset(name, raw[name], split=split))
        assert expected and _same(ours, expected)
    crop = dict(batch_size=1, crop_size=48, seed=7, repeat=False)
    ours = _as_numpy(train_dataset(f"tfds:{name}", data_dir, **crop))
    expected = _as_numpy(train_dataset(name, raw[name], **crop))
    assert _same(ours, expected)
    # A different seed gives other crops: the comparison can fail.
    other = _as_numpy(train_dataset(name, raw[name], **dict(crop, seed=8)))
    assert not _same(other, expected)
    assert not attempts


@pytest.mark.slow
def test_cityscapes_label_ids_are_mapped_to_train_ids(prepared):
    raw, data_dir, attempts = prepared
    # TFDS' cityscapes stores examples in its own (hashed) order.
    ours = _as_numpy(eval_dataset("tfds:cityscapes", data_dir, split="train"))
    expected = _as_numpy(eval_dataset("cityscapes", raw["cityscapes"], split="train"))
    assert len(ours) == len(expected) == 2
    for example in expected:
        assert sum(_same([example], [o]) for o in ours) == 1
    labels = np.concatenate([m.ravel() for _, m in ours])
    assert set(np.unique(labels)) <= set(range(19)) | {255}
    assert {0, 1, 2, 10} <= set(np.unique(labels))  # road, sidewalk, ...
    images, masks = next(
        iter(train_dataset("tfds:cityscapes", data_dir, batch_size=2, crop_size=64, seed=0))
    )
    assert images.shape == (2, 64, 64, 3) and masks.shape == (2, 64, 64)
    assert not attempts


def test_bad_requests_name_what_was_expected(prepared, tmp_path):
    raw, data_dir, _ = prepared
    with pytest.raises(FileNotFoundError, match="not prepared in .*empty"):
        eval_dataset("tfds:camvid", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="Received: split='trainval'"):
        eval_dataset("tfds:camvid", data_dir, split="trainval")
    with pytest.raises(ValueError, match="No TFDS builder for .*'folder'"):
        eval_dataset("tfds:folder", data_dir, num_classes=3)
    with pytest.raises(ValueError, match="no layout options"):
        eval_dataset("tfds:ade20k", data_dir, manual_dir=str(tmp_path))


@pytest.mark.usefixtures("prepared")
def test_cli_prepares_and_a_bad_mask_names_its_record(tmp_path, capsys):
    from keras_segmenter.data.__main__ import main

    manual = tmp_path / "manual"
    (tmp_path / "empty").mkdir()
    tfds_dir = str(tmp_path / "tfds")
    assert (
        main(
            [
                "tfds",
                "--dataset",
                "camvid",
                "--manual-dir",
                str(tmp_path / "empty"),
                "--data-dir",
                tfds_dir,
            ]
        )
        == 2
    )
    assert "is empty" in capsys.readouterr().err
    _camvid(tmp_path / "raw", manual)
    bad = manual / "CamVid" / "valannot" / sorted(os.listdir(manual / "CamVid" / "valannot"))[0]
    Image.open(bad).convert("RGB").save(bad)
    assert (
        main(["tfds", "--dataset", "camvid", "--manual-dir", str(manual), "--data-dir", tfds_dir])
        == 0
    )
    import tensorflow as tf

    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"tfds:camvid/validation/CamVid/valannot/{bad.name}"
    ):
        _as_numpy(eval_dataset("tfds:camvid", tfds_dir))


def test_fit_accepts_a_tfds_dataset(tmp_path):
    from keras_segmenter.training.config import RunConfig

    config = RunConfig(dataset="tfds:ade20k", data_dir=str(tmp_path)).resolve()
    assert config.crop_size == 512 and config.iterations == 160_000
    assert config.output_dir == os.path.join("runs", "tfds_ade20k_" + config.model)
    with pytest.raises(ValueError, match="tfds:camvid"):
        RunConfig(dataset="tfds:camvids").resolve()
