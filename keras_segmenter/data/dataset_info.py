"""What a training run needs to know about a dataset, as one small record."""

import dataclasses

from keras_segmenter.data import classes
from keras_segmenter.errors import UserError

IGNORE_INDEX = 255
# `tfds:NAME` reads the TFDS-prepared copy of NAME (same classes and sizes).
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Classes, label mapping and the official training/evaluation sizes.

    Args:
        name: str, dataset name as given to `get_dataset_info`.
        num_classes: int, number of classes after the label mapping.
        class_names: tuple of str, one name per class.
        palette: tuple of `(r, g, b)` int tuples, one colour per class.
        ignore_index: int, label value ignored by loss and metrics after
            the mapping (always 255).
        label_mapping: dict, raw mask value -> training label. Raw values
            not in the dict are invalid (training stops with an error naming
            the file) unless `unlisted_to_ignore` is set.
        base_size: tuple `(long, short)`, the MMSegmentation `img_scale`
            that the random rescale multiplies by a ratio in [0.5, 2.0].
        crop_size: int, side of the square training crop.
        window_size: int, side of the sliding inference window.
        window_stride: int, stride of the sliding inference window.
        unlisted_to_ignore: bool, map raw values missing from
            `label_mapping` to `ignore_index` instead of rejecting them.
        notes: str, where the numbers come from.
    """

    name: str
    num_classes: int
    class_names: tuple
    palette: tuple
    ignore_index: int = IGNORE_INDEX
    label_mapping: dict = dataclasses.field(default_factory=dict)
    base_size: tuple = (2048, 512)
    crop_size: int = 512
    window_size: int = 512
    window_stride: int = 512
    unlisted_to_ignore: bool = False
    notes: str = ""

    def label_table(self):
        """The mapping as a 256-entry list: raw uint8 value -> label or -1.

        -1 marks a raw value that is neither a class nor ignored; the
        pipeline raises an error naming the mask file when it sees one.
        """
        default = self.ignore_index if self.unlisted_to_ignore else -1
        table = [default] * 256
        for raw, label in self.label_mapping.items():
            table[int(raw)] = int(label)
        return table


def _identity(num_classes, ignore_values=(IGNORE_INDEX,)):
    mapping = {k: k for k in range(num_classes)}
    for value in ignore_values:
        mapping[value] = IGNORE_INDEX
    return mapping


def _ade20k():
    # reduce_zero_label: 0 ("other") is ignored, k -> k - 1.
    mapping = {0: IGNORE_INDEX}
    mapping.update({k: k - 1 for k in range(1, 151)})
    return DatasetInfo(
        name="ade20k",
        num_classes=150,
        class_names=tuple(classes.ADE20K_CLASSES),
        palette=tuple(classes.bit_palette(151)[1:]),
        label_mapping=mapping,
        base_size=(2048, 512),
        crop_size=512,
        window_size=512,
        window_stride=512,
        notes="MMSegmentation ade20k config; Segmenter config.yml window.",
    )


def _pascal_context():
    return DatasetInfo(
        name="pascal_context",
        num_classes=60,
        class_names=tuple(classes.PASCAL_CONTEXT_CLASSES),
        palette=tuple(classes.bit_palette(60)),
        label_mapping=_identity(60),
        base_size=(4160, 520),
        crop_size=480,
        window_size=480,
        window_stride=320,
        notes="Segmenter pascal_context config (img_scale 520 * 8, 520).",
    )


def _cityscapes(label_ids=False):
    if label_ids:
        mapping = dict(classes.CITYSCAPES_LABEL_TO_TRAIN_ID)
        for raw in range(34):
            mapping.setdefault(raw, IGNORE_INDEX)
        mapping[IGNORE_INDEX] = IGNORE_INDEX
    else:
        mapping = _identity(19)
    return DatasetInfo(
        name="cityscapes",
        num_classes=19,
        class_names=tuple(classes.CITYSCAPES_CLASSES),
        palette=tuple(classes.CITYSCAPES_PALETTE),
        label_mapping=mapping,
        base_size=(2048, 1024),
        crop_size=768,
        window_size=768,
        window_stride=512,
        notes="MMSegmentation cityscapes config; Segmenter config.yml window.",
    )


def _camvid():
    return DatasetInfo(
        name="camvid",
        num_classes=11,
        class_names=tuple(classes.CAMVID_CLASSES),
        palette=tuple(classes.CAMVID_PALETTE),
        label_mapping=_identity(11, ignore_values=(11, IGNORE_INDEX)),
        base_size=(480, 360),
        crop_size=256,
        window_size=256,
        window_stride=224,
        notes=(
            "Not in the paper. base_size is CamVid's SegNet resolution "
            "480x360 (the bundled sample is halved to 240x180 and is "
            "rescaled to it); crop 256, stride crop - 32."
        ),
    )


def _folder(
    num_classes=None,
    ignore_index=IGNORE_INDEX,
    class_names=None,
    palette=None,
    base_size=(2048, 512),
    crop_size=512,
    window_size=None,
    window_stride=None,
    reduce_zero_label=False,
    **unused,
):
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if not isinstance(num_classes, int) or not 1 <= num_classes <= 255:
        raise UserError(
            "The `folder` dataset needs `num_classes`, an int in [1, 255] "
            f"(or `class_names`). Received: num_classes={num_classes!r}"
        )
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise UserError(
            "`ignore_index` must be an int in [0, 255] (the raw mask value "
            f"to ignore). Received: ignore_index={ignore_index!r}"
        )
    if class_names is None:
        class_names = tuple(f"class_{k}" for k in range(num_classes))
    if len(class_names) != num_classes:
        raise UserError(
            f"`class_names` must have num_classes={num_classes} entries. "
            f"Received: len(class_names)={len(class_names)}"
        )
    if palette is None:
        palette = classes.bit_palette(num_classes)
    palette = tuple(tuple(int(c) for c in rgb) for rgb in palette)
    if len(palette) != num_classes or any(len(rgb) != 3 for rgb in palette):
        raise UserError(
            f"`palette` must be {num_classes} (r, g, b) triples. Received: palette={palette!r}"
        )
    if reduce_zero_label:
        mapping = {0: IGNORE_INDEX}
        mapping.update({k: k - 1 for k in range(1, num_classes + 1)})
    else:
        mapping = {k: k for k in range(num_classes)}
    mapping[ignore_index] = IGNORE_INDEX
    mapping[IGNORE_INDEX] = IGNORE_INDEX
    crop_size = int(crop_size)
    window_size = crop_size if window_size is None else int(window_size)
    if window_stride is None:
        window_stride = max(window_size - 32, 1)
    return DatasetInfo(
        name="folder",
        num_classes=num_classes,
        class_names=tuple(class_names),
        palette=palette,
        ignore_index=IGNORE_INDEX,
        label_mapping=mapping,
        base_size=tuple(base_size),
        crop_size=crop_size,
        window_size=window_size,
        window_stride=int(window_stride),
        notes="User folder; defaults follow the ADE20K recipe.",
    )


_BUILDERS = {
    "ade20k": _ade20k,
    "pascal_context": _pascal_context,
    "cityscapes": _cityscapes,
    "camvid": _camvid,
    "folder": _folder,
}

DATASETS = tuple(_BUILDERS)


def canonical_name(name):
    """Validates a dataset name (`-` and `_` are interchangeable)."""
    key = str(name).lower().replace("-", "_").removeprefix(TFDS_PREFIX)
    if key not in _BUILDERS:
        raise UserError(
            f"Unknown dataset. Expected one of {sorted(_BUILDERS)}. Received: name={name!r}"
        )
    return key


def get_dataset_info(name, **kwargs):
    """Returns the `DatasetInfo` of a dataset.

    Args:
        name: str, one of `"ade20k"`, `"pascal_context"`, `"cityscapes"`,
            `"camvid"`, `"folder"`.
        **kwargs: for `"folder"`: `num_classes` (required unless
            `class_names` is given), `ignore_index` (raw value to ignore,
            default 255), `class_names`, `palette`, `base_size`, `crop_size`,
            `window_size`, `window_stride`, `reduce_zero_label`. For
            `"cityscapes"`: `label_ids=True` for masks in `labelIds`.
            Other keys (data-loading options) are ignored.

    Returns:
        A `DatasetInfo`.

    Example:

    >>> info = get_dataset_info("camvid")
    >>> info.num_classes, info.ignore_index
    (11, 255)
    """
    key = canonical_name(name)
    if key == "folder":
        return _folder(**kwargs)
    if key == "cityscapes":
        return _cityscapes(label_ids=bool(kwargs.get("label_ids", False)))
    return _BUILDERS[key]()
