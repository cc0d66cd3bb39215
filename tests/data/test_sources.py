"""Dataset infos, label mappings and layout scanners (ADE zip included)."""

import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_segmenter.data import (
    SAMPLE_DIR,
    get_dataset_info,
    list_pairs,
    prepare_ade20k,
)
from tests.testing import ASSETS

DATA = str(ASSETS)
ADE = os.path.join(DATA, "ADEChallengeData2016")
CAMVID = os.path.join(DATA, "camvid")


def test_official_sizes_and_classes():
    ade = get_dataset_info("ade20k")
    assert (ade.num_classes, len(ade.class_names), len(ade.palette)) == (150, 150, 150)
    assert ade.class_names[:3] == ("wall", "building", "sky")
    assert ade.class_names[-1] == "flag"
    assert ade.base_size == (2048, 512) and ade.crop_size == 512
    pc = get_dataset_info("pascal_context")
    assert pc.num_classes == 60 and pc.class_names[0] == "background"
    assert pc.base_size == (4160, 520) and pc.crop_size == 480
    cs = get_dataset_info("cityscapes")
    assert cs.num_classes == 19 and cs.base_size == (2048, 1024)
    assert cs.crop_size == 768 and cs.window_size == 768
    cam = get_dataset_info("camvid")
    assert cam.num_classes == 11 and cam.ignore_index == 255
    for info in (ade, pc, cs, cam):
        assert len(set(info.palette)) == info.num_classes
        assert info.window_stride <= info.window_size


def test_label_tables():
    ade = get_dataset_info("ade20k").label_table()
    assert ade[0] == 255 and ade[1] == 0 and ade[150] == 149
    assert ade[151] == -1  # Not a class: rejected by the pipeline.
    cam = get_dataset_info("camvid").label_table()
    assert cam[:12] == list(range(11)) + [255]
    assert cam[12] == -1 and cam[255] == 255
    ids = get_dataset_info("cityscapes", label_ids=True).label_table()
    assert ids[7] == 0 and ids[26] == 13 and ids[33] == 18
    assert ids[0] == 255 and ids[6] == 255 and ids[34] == -1
    train_ids = get_dataset_info("cityscapes").label_table()
    assert train_ids[18] == 18 and train_ids[19] == -1
    folder = get_dataset_info("folder", num_classes=3, ignore_index=0, reduce_zero_label=False)
    assert folder.label_table()[:4] == [255, 1, 2, -1]


def test_folder_info_validation():
    with pytest.raises(ValueError, match="Received: num_classes=None"):
        get_dataset_info("folder")
    with pytest.raises(ValueError, match="Received: ignore_index=300"):
        get_dataset_info("folder", num_classes=2, ignore_index=300)
    with pytest.raises(ValueError, match="class_names"):
        get_dataset_info("folder", num_classes=2, class_names=["a"])
    info = get_dataset_info("folder", class_names=["bg", "cat"], crop_size=64)
    assert info.num_classes == 2 and info.window_stride == 32
    with pytest.raises(ValueError, match="Received: name='kitti'"):
        get_dataset_info("kitti")


def test_camvid_pairs_and_bundled_sample():
    pairs = list_pairs("camvid", CAMVID, split="train")
    assert len(pairs) == 4
    for image, mask in pairs:
        assert os.path.basename(image)[:-4] == os.path.basename(mask)[:-4]
    assert len(list_pairs("camvid", SAMPLE_DIR, "train")) == 40
    assert len(list_pairs("camvid", SAMPLE_DIR, "val")) == 15
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SAMPLE_DIR) for f in fs)
    assert size <= 5 * 2**20


def test_missing_data_names_the_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        list_pairs("camvid", str(tmp_path), split="train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_pairs("camvid", str(tmp_path / "nowhere"))


def test_ade20k_unpacked_and_from_zip(tmp_path):
    pairs = list_pairs("ade20k", DATA, split="val")
    assert [os.path.basename(p[0]) for p in pairs] == [f"ADE_val_0000000{k}.jpg" for k in (1, 2, 3)]
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "ADEChallengeData2016.zip", "w") as z:
        for folder, _, files in os.walk(ADE):
            for f in files:
                path = os.path.join(folder, f)
                z.write(path, os.path.join("ADEChallengeData2016", os.path.relpath(path, ADE)))
    out = tmp_path / "ade"
    pairs = list_pairs("ade20k", str(out), split="val", manual_dir=str(manual))
    assert len(pairs) == 3
    assert os.path.isfile(
        out / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000002.png"
    )
    # Second call reads the extracted folder (zip no longer needed).
    os.remove(manual / "ADEChallengeData2016.zip")
    assert prepare_ade20k(str(out)).endswith("ADEChallengeData2016")


def test_ade20k_zip_escape_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "ADEChallengeData2016.zip", "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        list_pairs("ade20k", str(tmp_path / "out"), manual_dir=str(tmp_path))
    assert not (tmp_path / "evil.txt").exists()


def _voc_masks_as_l(dst):
    """Pascal-style index masks ('L') from the VOC palette samples."""
    names = []
    for f in sorted(os.listdir(os.path.join(DATA, "voc", "masks"))):
        index = np.array(Image.open(os.path.join(DATA, "voc", "masks", f)))
        Image.fromarray(index.astype(np.uint8), "L").save(os.path.join(dst, f))
        names.append(f[:-4])
    return names


def test_pascal_context_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2010"
    for sub in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (root / sub).mkdir(parents=True)
    names = _voc_masks_as_l(str(root / "SegmentationClassContext"))
    for n in names:
        Image.open(os.path.join(DATA, "voc", "images", n + ".png")).save(
            root / "JPEGImages" / (n + ".jpg")
        )
    (root / "ImageSets/SegmentationContext/train.txt").write_text(names[0] + "\n")
    (root / "ImageSets/SegmentationContext/val.txt").write_text(names[1] + "\n")
    train = list_pairs("pascal_context", str(tmp_path), "train")
    assert [os.path.basename(p[1]) for p in train] == [names[0] + ".png"]
    assert len(list_pairs("pascal_context", str(tmp_path), "val")) == 1


def test_cityscapes_layout_prefers_train_ids(tmp_path):
    src = list_pairs("camvid", CAMVID, "train")[:2]
    for split in ("train",):
        for k, (image, mask) in enumerate(src):
            city = tmp_path / "leftImg8bit" / split / "aachen"
            gt = tmp_path / "gtFine" / split / "aachen"
            city.mkdir(parents=True, exist_ok=True)
            gt.mkdir(parents=True, exist_ok=True)
            stem = f"aachen_{k:06d}_000019"
            shutil.copy(image, city / f"{stem}_leftImg8bit.png")
            shutil.copy(mask, gt / f"{stem}_gtFine_labelIds.png")
    from keras_segmenter.data.sources import scan

    result = scan("cityscapes", str(tmp_path), "train")
    assert result.label_ids and len(result.pairs) == 2
    for k, (image, mask) in enumerate(src):
        shutil.copy(
            mask,
            tmp_path
            / "gtFine"
            / "train"
            / "aachen"
            / f"aachen_{k:06d}_000019_gtFine_labelTrainIds.png",
        )
    result = scan("cityscapes", str(tmp_path), "train")
    assert not result.label_ids
    assert all(p[1].endswith("_labelTrainIds.png") for p in result.pairs)


def test_folder_split_lists(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for image, mask in list_pairs("camvid", CAMVID, "train"):
        shutil.copy(image, tmp_path / "images")
        shutil.copy(mask, tmp_path / "masks")
    stems = sorted(f[:-4] for f in os.listdir(tmp_path / "images"))
    # No lists: split="train" means every pair.
    assert len(list_pairs("folder", str(tmp_path), "train")) == 4
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("\n".join(stems[:3]))
    (tmp_path / "splits" / "val.txt").write_text(stems[3] + ".jpg\n")
    assert len(list_pairs("folder", str(tmp_path), "train")) == 3
    val = list_pairs("folder", str(tmp_path), "val")
    assert [os.path.basename(p[0]) for p in val] == [stems[3] + ".jpg"]
    with pytest.raises(FileNotFoundError, match="test"):
        list_pairs("folder", str(tmp_path), "test")
