"""Finding the (image, mask) file pairs of each dataset layout on disk."""

import dataclasses
import logging
import os

from keras_segmenter.data.archives import extract
from keras_segmenter.data.download import DOWNLOADS, download_hint
from keras_segmenter.errors import UserError
from keras_segmenter.images import non_regular_kind

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTENSIONS = (".png",)
ADE20K_ZIP = "ADEChallengeData2016.zip"

_ADE_SPLITS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
}


@dataclasses.dataclass
class Scan:
    """Result of scanning a split: pairs, and files that have no partner.

    Args:
        pairs: list of `(image_path, mask_path)`.
        images_without_mask: list of image paths.
        masks_without_image: list of mask paths.
        root: str, the folder that was scanned (for messages).
        label_ids: bool, Cityscapes masks are `labelIds` (need mapping).
        ambiguous: list of tuples of paths that share one file stem (such
            as `a.jpg` and `a.png`), so which one is meant is unknown.
        misnamed_masks: dict, image path without mask -> a file in the
            mask folder with the image's stem but not a mask extension.
    """

    pairs: list
    images_without_mask: list
    masks_without_image: list
    root: str
    label_ids: bool = False
    ambiguous: list = dataclasses.field(default_factory=list)
    misnamed_masks: dict = dataclasses.field(default_factory=dict)


class _Files(dict):
    """`{key: path}` of one folder; `duplicates` and `others` (other extensions) by key."""

    def __init__(self):
        super().__init__()
        self.duplicates, self.others = {}, {}


def require_regular_file(path):
    """Raises `ValueError` naming `path` and what it is unless it is a regular file
    (`images.non_regular_kind`): a FIFO named like an image would hang the reader."""
    kind = non_regular_kind(path)
    if kind:
        raise UserError(
            f"{path} is {kind}, not a regular file; a dataset folder holds image and mask "
            "files only: move it out"
        )


def _files_by_stem(folder, extensions, suffix=""):
    """The files of `folder` (symlinked subfolders followed) keyed by relative stem."""
    found = _Files()
    if not os.path.isdir(folder):
        return found
    real_paths = {}  # folder walked -> its real path, to find symlink loops
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = real_paths[dirpath] = os.path.realpath(dirpath)
        parent = os.path.dirname(dirpath)
        while parent in real_paths:
            if real_paths[parent] == real:
                logging.warning(
                    "%s links back to %s: a symlink loop, not followed again.", dirpath, parent
                )
                dirnames[:], filenames = [], []
                break
            parent = os.path.dirname(parent)
        dirnames.sort()
        for filename in sorted(filenames):
            stem, ext = os.path.splitext(filename)
            if not stem.endswith(suffix):
                continue
            key = os.path.relpath(os.path.join(dirpath, stem[: len(stem) - len(suffix)]), folder)
            path = os.path.join(dirpath, filename)
            if ext.lower() not in extensions:
                found.others.setdefault(key, path)
                continue
            require_regular_file(path)
            if key in found:
                found.duplicates.setdefault(key, [found[key]]).append(path)
            else:
                found[key] = path
    return found


def _match(images, masks, root, keys=None, label_ids=False):
    wanted = set(images) | set(masks) if keys is None else set(keys)
    ambiguous = [
        tuple(paths)
        for files in (images, masks)
        for k, paths in sorted(files.duplicates.items())
        if k in wanted
    ]
    misnamed = {
        images[k]: masks.others[k]
        for k in images
        if k in wanted and k not in masks and k in masks.others
    }
    if keys is not None:
        images = {k: v for k, v in images.items() if k in wanted}
        masks = {k: v for k, v in masks.items() if k in wanted}
        missing = [k for k in keys if k not in images]
    else:
        missing = []
    pairs = [(images[k], masks[k]) for k in sorted(images) if k in masks]
    lonely_images = [images[k] for k in sorted(images) if k not in masks]
    lonely_images += [f"{k} (listed, no image found)" for k in missing]
    lonely_masks = [masks[k] for k in sorted(masks) if k not in images]
    return Scan(pairs, lonely_images, lonely_masks, root, label_ids, ambiguous, misnamed)


def _read_list(path):
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def prepare_ade20k(data_dir, manual_dir=None):
    """Returns the ADEChallengeData2016 root, extracting the zip if needed.

    Looks for `images/` + `annotations/` in `data_dir`, then in
    `data_dir/ADEChallengeData2016`; otherwise extracts
    `ADEChallengeData2016.zip` found in `manual_dir` (or `data_dir`) into
    `data_dir`.

    Args:
        data_dir: str, where the unpacked dataset is or will be.
        manual_dir: str or None, folder holding the official zip.

    Returns:
        str, the folder containing `images/` and `annotations/`.
    """
    candidates = [data_dir, os.path.join(data_dir, "ADEChallengeData2016")]
    for root in candidates:
        if os.path.isdir(os.path.join(root, "images")) and os.path.isdir(
            os.path.join(root, "annotations")
        ):
            return root
    for folder in (manual_dir, data_dir):
        if folder and os.path.isfile(os.path.join(folder, ADE20K_ZIP)):
            zip_path = os.path.join(folder, ADE20K_ZIP)
            root = os.path.join(data_dir, "ADEChallengeData2016")
            logging.info("Extracting %s into %s", zip_path, root)
            os.makedirs(data_dir, exist_ok=True)
            extract(zip_path, "ADEChallengeData2016/", root, DOWNLOADS["ade20k"].parts[0].max_bytes)
            return prepare_ade20k(data_dir)
    raise FileNotFoundError(
        f"No ADE20K found in {data_dir}: expected images/ and annotations/ "
        f"(ADEChallengeData2016 layout) in it or in its ADEChallengeData2016/"
        f" subfolder, or {ADE20K_ZIP} in manual_dir={manual_dir!r} or "
        f"data_dir{download_hint('ade20k')}."
    )


def _scan_ade20k(data_dir, split, manual_dir=None, **unused):
    if split not in _ADE_SPLITS:
        raise UserError(
            "ade20k splits are 'train' (training) and 'val' (validation). "
            f"Received: split={split!r}"
        )
    root = prepare_ade20k(data_dir, manual_dir)
    folder = _ADE_SPLITS[split]
    images = _files_by_stem(os.path.join(root, "images", folder), IMAGE_EXTENSIONS)
    masks = _files_by_stem(os.path.join(root, "annotations", folder), MASK_EXTENSIONS)
    return _match(images, masks, os.path.join(root, "images", folder))


def _scan_pascal_context(data_dir, split, **unused):
    root = data_dir
    for sub in ("VOCdevkit/VOC2010", "VOC2010"):
        if os.path.isdir(os.path.join(data_dir, sub, "JPEGImages")):
            root = os.path.join(data_dir, sub)
    list_path = os.path.join(root, "ImageSets", "SegmentationContext", f"{split}.txt")
    if not os.path.isfile(list_path):
        raise FileNotFoundError(
            f"No Pascal Context split list {list_path}: expected the "
            "prepared VOC2010 layout (JPEGImages/, SegmentationClassContext/,"
            f" ImageSets/SegmentationContext/{{train,val}}.txt) in {data_dir}"
            f"{download_hint('pascal_context')}."
        )
    keys = _read_list(list_path)
    images = _files_by_stem(os.path.join(root, "JPEGImages"), IMAGE_EXTENSIONS)
    masks = _files_by_stem(os.path.join(root, "SegmentationClassContext"), MASK_EXTENSIONS)
    return _match(images, masks, root, keys=keys)


def _scan_cityscapes(data_dir, split, **unused):
    image_dir = os.path.join(data_dir, "leftImg8bit", split)
    mask_dir = os.path.join(data_dir, "gtFine", split)
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS, "_leftImg8bit")
    train_ids = _files_by_stem(mask_dir, MASK_EXTENSIONS, "_gtFine_labelTrainIds")
    label_ids = _files_by_stem(mask_dir, MASK_EXTENSIONS, "_gtFine_labelIds")
    # Train ids only if every image has them, else map labelIds.
    use_label_ids = bool(label_ids) and not all(k in train_ids for k in images)
    masks = label_ids if use_label_ids else train_ids
    return _match(images, masks, image_dir, label_ids=use_label_ids)


def _scan_camvid(data_dir, split, **unused):
    root = data_dir
    if os.path.isdir(os.path.join(data_dir, "CamVid", split)):
        root = os.path.join(data_dir, "CamVid")
    images = _files_by_stem(os.path.join(root, split), IMAGE_EXTENSIONS)
    masks = _files_by_stem(os.path.join(root, f"{split}annot"), MASK_EXTENSIONS)
    return _match(images, masks, os.path.join(root, split))


def _scan_folder(
    data_dir, split, split_file=None, images_dir="images", masks_dir="masks", **unused
):
    image_root = os.path.join(data_dir, images_dir)
    mask_root = os.path.join(data_dir, masks_dir)
    if split and os.path.isdir(os.path.join(image_root, split)):
        image_root = os.path.join(image_root, split)
        mask_root = os.path.join(mask_root, split)
        split = None
    images = _files_by_stem(image_root, IMAGE_EXTENSIONS)
    masks = _files_by_stem(mask_root, MASK_EXTENSIONS)
    keys = None
    if split_file is None and split not in (None, "all"):
        for candidate in (
            os.path.join(data_dir, f"{split}.txt"),
            os.path.join(data_dir, "splits", f"{split}.txt"),
        ):
            if os.path.isfile(candidate):
                split_file = candidate
                break
        else:
            has_lists = any(
                os.path.isfile(os.path.join(data_dir, d, f"{s}.txt"))
                for d in ("", "splits")
                for s in ("train", "val", "test")
            )
            if split != "train" or has_lists:
                raise FileNotFoundError(
                    f"No split {split!r} in {data_dir}: expected "
                    f"{images_dir}/{split}/ or a list file {split}.txt or "
                    f"splits/{split}.txt (one file stem per line)."
                )
            logging.warning("%s has no split lists; using every pair for split='train'.", data_dir)
    if split_file is not None:
        keys = [os.path.splitext(k)[0] for k in _read_list(split_file)]
    return _match(images, masks, image_root, keys=keys)


_SCANNERS = {
    "ade20k": _scan_ade20k,
    "pascal_context": _scan_pascal_context,
    "cityscapes": _scan_cityscapes,
    "camvid": _scan_camvid,
    "folder": _scan_folder,
}


def scan(name, data_dir, split="train", **kwargs):
    """Scans a dataset split; see `list_pairs`. Returns a `Scan`."""
    from keras_segmenter.data.dataset_info import canonical_name

    key = canonical_name(name)
    data_dir = os.fspath(data_dir)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise NotADirectoryError(
            f"Data directory {data_dir} is a file; expected the dataset's "
            f"root folder (dataset {key!r})."
        )
    if not os.path.isdir(data_dir) and not kwargs.get("manual_dir"):
        raise FileNotFoundError(
            f"Data directory {data_dir} does not exist (dataset {key!r}){download_hint(key)}."
        )
    return _SCANNERS[key](data_dir, split, **kwargs)


def usable_scan(name, data_dir, split="train", **kwargs):
    """`scan`, raising unless the split has pairs and no ambiguous names.

    Raises:
        FileNotFoundError: no pair is found; names the folder.
        ValueError: two files share a stem (`a.jpg` and `a.png`); names both.
    """
    result = scan(name, data_dir, split, **kwargs)
    if result.ambiguous:
        raise UserError(
            f"Ambiguous files in dataset {name!r}, split {split!r}: "
            + "; ".join(" and ".join(paths) for paths in result.ambiguous)
            + " share a name; keep one of each (run `python -m "
            "keras_segmenter.data check` for a full report)."
        )
    if not result.pairs:
        raise FileNotFoundError(
            f"No image/mask pairs found for dataset {name!r}, split "
            f"{split!r} in {result.root} ({len(result.images_without_mask)} "
            f"images without mask, {len(result.masks_without_image)} masks "
            f"without image){download_hint(name)}."
        )
    return result


def warn_unpaired(result, name, split):
    """Logs the images without a mask and masks without an image a `Scan` leaves out."""
    for lonely, what in (
        (result.images_without_mask, "image(s) without a mask"),
        (result.masks_without_image, "mask(s) without an image"),
    ):
        if lonely:
            logging.warning(
                "Dataset %r, split %r: skipping %d %s, e.g. %s (`python -m keras_segmenter.data "
                "check` lists them).",
                name,
                split,
                len(lonely),
                what,
                lonely[0],
            )


def list_pairs(name, data_dir, split="train", **kwargs):
    """Lists the `(image_path, mask_path)` pairs of a dataset split.

    Args:
        name: str, dataset name (see `get_dataset_info`).
        data_dir: str, root of the dataset in its usual layout.
        split: str, e.g. `"train"` or `"val"`. Defaults to `"train"`.
        **kwargs: layout options: `manual_dir` (ade20k zip folder),
            `split_file`, `images_dir`, `masks_dir` (folder).

    Returns:
        A sorted list of `(image_path, mask_path)` tuples.

    Raises:
        FileNotFoundError: naming the folder when no pair is found.
        ValueError: naming both files when two share a stem.
    """
    return usable_scan(name, data_dir, split, **kwargs).pairs
