"""Scans a dataset split with Pillow and reports every problem found."""

import collections
import dataclasses
import warnings

import numpy as np
from PIL import Image

from keras_segmenter.data.dataset_info import get_dataset_info
from keras_segmenter.data.sources import scan

# Image modes the pipeline decodes as intended (converted to RGB).
_IMAGE_OK = {"RGB"}
_IMAGE_WARN = {"L", "RGBA", "P", "LA", "I;16", "I;16B", "I", "RGBX"}


# Mask mode -> (what it is, what to do); masks must be mode "L".
_MASK_MODES = {
    "P": ("palette", "save the palette indices, not the colours,"),
    "I;16": ("16-bit", "class indices must be below 256: save them 8-bit"),
    "I;16B": ("16-bit", "class indices must be below 256: save them 8-bit"),
    "I": ("32-bit integer", "class indices must be below 256: save them"),
    "RGB": ("RGB colour", "map each colour to its class index and save it"),
    "RGBA": ("RGBA colour", "map each colour to its class index and save it"),
    "LA": ("grayscale with alpha", "drop the alpha channel and save it"),
    "1": ("1-bit", "save the 0/1 values"),
}


@dataclasses.dataclass
class Problem:
    """One problem: `kind` (short key), `path`, `detail`, `fatal`."""

    kind: str
    path: str
    detail: str
    fatal: bool


def _open(path, problems, what):
    try:
        with Image.open(path) as probe:
            probe.verify()
        image = Image.open(path)
        image.load()  # Decodes fully: catches truncated data.
        return image
    except Exception as e:  # Pillow raises many types for bad files.
        problems.append(Problem("unreadable", path, f"{what} cannot be decoded: {e}", True))
        return None


def check_pair(image_path, mask_path, label_table, num_classes):
    """Returns the list of `Problem`s of one image/mask pair."""
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = _open(image_path, problems, "image")
        mask = _open(mask_path, problems, "mask")
    if image is not None:
        if image.mode == "CMYK":
            problems.append(
                Problem(
                    "image_mode",
                    image_path,
                    "CMYK image: TensorFlow cannot decode it to RGB; convert it",
                    True,
                )
            )
        elif image.mode not in _IMAGE_OK:
            problems.append(
                Problem(
                    "image_mode",
                    image_path,
                    f"image mode {image.mode!r} (converted to RGB on load; "
                    "check that this is intended)",
                    image.mode not in _IMAGE_WARN,
                )
            )
    if mask is not None:
        if mask.mode != "L":
            kind, hint = _MASK_MODES.get(
                mask.mode, (f"mode {mask.mode!r}", "save the class indices")
            )
            problems.append(
                Problem(
                    "mask_mode",
                    mask_path,
                    f"{kind} mask (mode {mask.mode!r}): masks must be 8-bit "
                    f"single-channel PNGs of class indices (mode 'L'); {hint} "
                    "as mode 'L'",
                    True,
                )
            )
        if not mask_path.lower().endswith(".png"):
            problems.append(Problem("mask_format", mask_path, "mask is not a PNG", True))
    if image is not None and mask is not None:
        if image.size != mask.size:
            problems.append(
                Problem(
                    "size_mismatch",
                    mask_path,
                    f"mask is {mask.size[0]}x{mask.size[1]} (WxH) but "
                    f"{image_path} is {image.size[0]}x{image.size[1]}",
                    True,
                )
            )
        values = np.unique(np.asarray(mask))
        if mask.mode == "L":
            bad = [int(v) for v in values if label_table[int(v)] < 0]
        elif mask.mode == "P":
            bad = [int(v) for v in values if int(v) > 255 or label_table[int(v)] < 0]
        else:
            bad = []
        if bad:
            problems.append(
                Problem(
                    "label_values",
                    mask_path,
                    f"values {bad[:10]} are outside the {num_classes} classes "
                    "and the ignore value(s)",
                    True,
                )
            )
    return problems


def _no_mask(image_path, result):
    misnamed = result.misnamed_masks.get(image_path)
    if misnamed is None:
        return "no mask found"
    return (
        f"no mask found, but {misnamed} has its name: masks must be "
        ".png files (lossless, so the class indices stay exact)"
    )


def check_dataset(name, data_dir, split="train", **kwargs):
    """Scans one split and returns every `Problem` found.

    Args:
        name: str, dataset name.
        data_dir: str, dataset root.
        split: str, split to scan.
        **kwargs: dataset options, as for `train_dataset`.

    Returns:
        `(num_pairs, problems)`.

    Raises:
        FileNotFoundError: the split holds no image and no mask at all.
    """
    info_keys = {"num_classes", "ignore_index", "class_names", "palette", "reduce_zero_label"}
    info_kwargs = {k: v for k, v in kwargs.items() if k in info_keys}
    source_kwargs = {k: v for k, v in kwargs.items() if k not in info_keys}
    result = scan(name, data_dir, split, **source_kwargs)
    if result.label_ids:
        info_kwargs["label_ids"] = True
    info = get_dataset_info(name, **info_kwargs)
    table = info.label_table()
    problems = [
        Problem("ambiguous", paths[0], f"{' and '.join(paths)} share a name: keep one", True)
        for paths in result.ambiguous
    ]
    problems += [
        Problem("image_without_mask", p, _no_mask(p, result), True)
        for p in result.images_without_mask
    ]
    problems += [
        Problem("mask_without_image", p, "no image found", True) for p in result.masks_without_image
    ]
    if not result.pairs and not problems:
        raise FileNotFoundError(
            f"No images or masks found for dataset {name!r}, split {split!r} "
            f"in {result.root}: check --data-dir and --split."
        )
    if not result.pairs:
        problems.append(Problem("empty", result.root, "no image/mask pairs found", True))
    for image_path, mask_path in result.pairs:
        problems += check_pair(image_path, mask_path, table, info.num_classes)
    return len(result.pairs), problems


def format_report(name, split, num_pairs, problems):
    """A human-readable report: counts per kind, then one line per file."""
    counts = collections.Counter(p.kind for p in problems)
    fatal = sum(p.fatal for p in problems)
    lines = [f"{name} [{split}]: {num_pairs} pairs, {len(problems)} problems ({fatal} fatal)"]
    for kind, count in sorted(counts.items()):
        lines.append(f"  {kind}: {count}")
    for p in problems:
        level = "ERROR" if p.fatal else "warning"
        lines.append(f"{level} {p.kind}: {p.path}: {p.detail}")
    return "\n".join(lines)
