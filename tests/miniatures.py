"""Miniature copies of every dataset layout the README names, generated on the spot.

Each writer makes a few small images (smooth colour fields) and masks (a
background and a few rectangles of random classes, so every mask has
objects of several sizes) in the folder layout that
`keras_segmenter.data.sources` scans, with the mask values of the real
dataset: ADE20K raw ids 0..150 (0 = other, and ids above 127 present),
Pascal Context 0..59, Cityscapes label ids or train ids, CamVid 0..11,
`folder` 0..N-1. `tfds_manual_dir` arranges the same files as the manual
downloads of `python -m keras_segmenter.data tfds`.
"""

import os
import zipfile

import numpy as np
from PIL import Image

SIZE = (96, 128)  # (height, width): 12,288 pixels, so masks hold small, medium and large objects
SPLITS = {"train": 3, "val": 2}

# Cityscapes label id -> train id of a few classes (road, sidewalk, building, vegetation, sky,
# car), and 0 (unlabeled), which maps to 255.
CITYSCAPES_LABEL_IDS = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 26: 13, 0: 255}


def _image(rng, size=SIZE):
    """A uint8 RGB image: a random colour gradient plus noise."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    corners = rng.uniform(0, 255, (3, 3))
    field = corners[0] + corners[1] * y[..., None] + corners[2] * x[..., None]
    return np.clip(field + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def _mask(rng, values, size=SIZE):
    """A uint8 mask: `values[0]` everywhere, then rectangles of the other values (each at least
    once, sizes from a few pixels to a quarter of the image)."""
    height, width = size
    mask = np.full(size, values[0], np.uint8)
    for value in values[1:]:
        h, w = rng.integers(3, height // 2), rng.integers(3, width // 2)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        mask[top : top + h, left : left + w] = value
    return mask


def _pairs(rng, values_of_image):
    """`(image, mask)` arrays; `values_of_image(k)` lists the mask values of image k."""
    total = sum(SPLITS.values())
    return [(_image(rng), _mask(rng, values_of_image(k))) for k in range(total)]


def _by_split(pairs):
    start = 0
    for split, count in SPLITS.items():
        yield split, pairs[start : start + count]
        start += count


def _save(array, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _zip(folder, zip_path, arc_root):
    """Zips `folder`'s files under `arc_root/` (as the official archives hold them)."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for dirpath, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                archive.write(path, os.path.join(arc_root, os.path.relpath(path, folder)))


def ade20k(root, seed=0):
    """`root/ADEChallengeData2016/{images,annotations}/{training,validation}/`, raw ids 0..150.

    Every mask holds 0 ("other", ignored), 150 and ids above 127; returns the
    dataset folder (`root/ADEChallengeData2016`)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "ADEChallengeData2016")
    pairs = _pairs(rng, lambda k: [1 + 10 * k, 0, 128 + k, 150, 64])
    for split, split_pairs in _by_split(pairs):
        name = {"train": "training", "val": "validation"}[split]
        for k, (image, mask) in enumerate(split_pairs):
            stem = f"ADE_{split}_{k + 1:08d}"
            _save(image, os.path.join(folder, "images", name, stem + ".jpg"))
            _save(mask, os.path.join(folder, "annotations", name, stem + ".png"))
    return folder


def ade20k_zip(root, seed=0):
    """`root/ADEChallengeData2016.zip` only (the official download); returns `root`."""
    unpacked = ade20k(os.path.join(root, ".unpacked"), seed)
    _zip(unpacked, os.path.join(root, "ADEChallengeData2016.zip"), "ADEChallengeData2016")
    _remove_tree(os.path.dirname(unpacked))
    return root


def pascal_context(root, seed=0):
    """`root/VOCdevkit/VOC2010/` as MMSegmentation's converter writes it: JPEGImages/,
    SegmentationClassContext/ (0..59), ImageSets/SegmentationContext/{train,val}.txt."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    pairs = _pairs(rng, lambda k: [0, 59, 15 + k, 33])
    lists = os.path.join(voc, "ImageSets", "SegmentationContext")
    os.makedirs(lists)
    for split, split_pairs in _by_split(pairs):
        stems = []
        for k, (image, mask) in enumerate(split_pairs):
            stem = f"2008_{len(stems) + 10 * (split == 'val'):06d}"
            _save(image, os.path.join(voc, "JPEGImages", stem + ".jpg"))
            _save(mask, os.path.join(voc, "SegmentationClassContext", stem + ".png"))
            stems.append(stem)
        with open(os.path.join(lists, f"{split}.txt"), "w") as f:
            f.write("\n".join(stems) + "\n")
    return root


def cityscapes(root, label_ids=True, seed=0, size=SIZE):
    """`root/{leftImg8bit,gtFine}/{train,val,test}/<city>/`: `*_leftImg8bit.png` with
    `*_gtFine_labelIds.png` (`label_ids`) or `*_gtFine_labelTrainIds.png`."""
    rng = np.random.default_rng(seed)
    ids = list(CITYSCAPES_LABEL_IDS)
    to_train = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_IDS.items():
        to_train[label_id] = train_id
    splits = dict(SPLITS, test=1)
    for split, count in splits.items():
        for k in range(count):
            city = "aachen" if split == "train" else {"val": "frankfurt", "test": "berlin"}[split]
            stem = f"{city}_{k:06d}_000019"
            mask = _mask(rng, [ids[k % 2]] + ids[2:], size)
            name = "gtFine_labelIds" if label_ids else "gtFine_labelTrainIds"
            _save(
                _image(rng, size),
                os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"),
            )
            _save(
                mask if label_ids else to_train[mask],
                os.path.join(root, "gtFine", split, city, f"{stem}_{name}.png"),
            )
    return root


def camvid(root, seed=0):
    """`root/CamVid/{train,trainannot,val,valannot,test,testannot}/` (SegNet), classes 0..10,
    11 = void."""
    rng = np.random.default_rng(seed)
    pairs = _pairs(rng, lambda k: [k % 2, 11, 4, 8, 10])
    folder = os.path.join(root, "CamVid")
    for split, split_pairs in list(_by_split(pairs)) + [("test", pairs[-1:])]:
        for k, (image, mask) in enumerate(split_pairs):
            stem = f"0016E5_{split}_{k:05d}"
            _save(image, os.path.join(folder, split, stem + ".png"))
            _save(mask, os.path.join(folder, split + "annot", stem + ".png"))
    return root


def folder(root, num_classes=5, seed=0):
    """`root/images/{train,val}/*.jpg` and `root/masks/{train,val}/*.png`, classes
    0..num_classes-1 and 255 ignored."""
    rng = np.random.default_rng(seed)
    pairs = _pairs(rng, lambda _: [0, 255] + list(range(1, num_classes)))
    for split, split_pairs in _by_split(pairs):
        for k, (image, mask) in enumerate(split_pairs):
            _save(image, os.path.join(root, "images", split, f"{split}_{k}.jpg"))
            _save(mask, os.path.join(root, "masks", split, f"{split}_{k}.png"))
    return root


def tfds_manual_dir(name, root, seed=0):
    """The manual downloads `python -m keras_segmenter.data tfds --dataset NAME` reads.

    ade20k: the zip; pascal_context: `VOCdevkit/`; camvid: `CamVid/`;
    cityscapes: TFDS' two official zips (label ids; 96x192, where the real images are
    1024x2048: TFDS stores the PNG files as they are).
    """
    if name == "ade20k":
        return ade20k_zip(root, seed)
    if name == "pascal_context":
        return pascal_context(root, seed)
    if name == "camvid":
        return camvid(root, seed)
    if name == "cityscapes":
        raw = cityscapes(os.path.join(root, ".raw"), label_ids=True, seed=seed, size=(96, 192))
        for top, archive in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine")):
            _zip(os.path.join(raw, top), os.path.join(root, f"{archive}_trainvaltest.zip"), top)
        _remove_tree(raw)
        return root
    raise ValueError(f"No miniature of the manual download of {name!r}")


def _remove_tree(path):
    import shutil

    shutil.rmtree(path)
