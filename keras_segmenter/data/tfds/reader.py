"""Preparing the TFDS copies offline and reading them back as file pairs."""

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_segmenter.data.dataset_info import canonical_name
from keras_segmenter.errors import UserError

# Dataset -> (TFDS builder, image, mask, image name, mask name, labelIds).
# TFDS' own `cityscapes` stores `gtFine_labelIds`; ours store raw masks.
_SOURCES = {
    "ade20k": ("ade20k", "image", "mask", "image/filename", "mask/filename", False),
    "pascal_context": ("pascal_context", "image", "mask", "image/filename", "mask/filename", False),
    "camvid": ("camvid", "image", "mask", "image/filename", "mask/filename", False),
    "cityscapes": (
        "cityscapes/semantic_segmentation",
        "image_left",
        "segmentation_label",
        "image_id",
        "image_id",
        True,
    ),
}
_SPLITS = {"val": "validation"}
DATASETS = tuple(_SOURCES)


def builder(name, data_dir=None):
    """The TFDS builder of a dataset, never looking on GCS.

    Args:
        name: str, one of `DATASETS` (`tfds:` prefix allowed).
        data_dir: str or None, TFDS data folder (None: TFDS' default).

    Returns:
        A `tfds.core.DatasetBuilder`.
    """
    key = canonical_name(name)
    if key not in _SOURCES:
        raise UserError(
            f"No TFDS builder for dataset {key!r}: expected one of "
            f"{list(DATASETS)}. Received: name={name!r}"
        )
    return tfds.builder(_SOURCES[key][0], data_dir=data_dir, try_gcs=False)


def prepare(name, manual_dir, data_dir=None):
    """Writes the TFRecords of a dataset from its manual downloads.

    Args:
        name: str, one of `DATASETS`.
        manual_dir: str, folder holding the downloads (see the builder's
            `MANUAL_DOWNLOAD_INSTRUCTIONS`).
        data_dir: str or None, TFDS data folder (None: TFDS' default).

    Returns:
        The prepared `tfds.core.DatasetBuilder`.

    Raises:
        ValueError: `manual_dir` does not exist or is empty.
    """
    prepared = builder(name, data_dir)
    try:
        prepared.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir, try_download_gcs=False
            )
        )
    except AssertionError as error:  # TFDS' check of `manual_dir`
        if "does not exist or is empty" not in str(error):
            raise
        instructions = " ".join(prepared.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
        raise UserError(
            f"{manual_dir}: the manual download folder of tfds:{name} does not exist or is "
            f"empty; expected: {instructions}"
        ) from None
    return prepared


def _prepared(name, split, data_dir):
    """`(builder, TFDS split)` of a prepared dataset; errors name what to run or pass."""
    source = builder(name, data_dir)
    key = canonical_name(name)
    if not source.is_prepared():
        raise FileNotFoundError(
            f"tfds:{key} is not prepared in {source.data_dir}: run "
            f"`python -m keras_segmenter.data tfds --dataset {key} "
            f"--manual-dir DIR --data-dir {data_dir or 'DIR'}` first."
        )
    tfds_split = _SPLITS.get(split, split)
    if tfds_split not in source.info.splits:
        raise UserError(
            f"tfds:{key} has splits {sorted(source.info.splits)}. Received: split={split!r}"
        )
    return source, tfds_split


def num_examples(name, split, data_dir=None):
    """The number of examples of a prepared split, from TFDS' metadata (runs no TF op).

    Args:
        name: str, one of `DATASETS`.
        split: str, `"train"`, `"val"` (TFDS `"validation"`), ...
        data_dir: str or None, TFDS data folder (None: TFDS' default).
    """
    source, tfds_split = _prepared(name, split, data_dir)
    return source.info.splits[tfds_split].num_examples


def read(name, split, data_dir=None, **unexpected):
    """The encoded pairs of a prepared split, in their stored order.

    Args:
        name: str, one of `DATASETS`.
        split: str, `"train"`, `"val"` (TFDS `"validation"`), ...
        data_dir: str or None, TFDS data folder (None: TFDS' default).

    Returns:
        `(dataset, label_ids)`: a `tf.data.Dataset` of `(image_bytes,
        mask_bytes, image_name, mask_name)` string scalars, and whether the
        masks are Cityscapes `labelIds` (mapped to train ids downstream).
    """
    if unexpected:
        raise UserError(
            f"tfds:{name} reads prepared TFRecords and takes no layout "
            f"options. Received: {sorted(unexpected)}"
        )
    source, tfds_split = _prepared(name, split, data_dir)
    key = canonical_name(name)
    _, image_key, mask_key, image_name, mask_name, label_ids = _SOURCES[key]
    skip = tfds.decode.SkipDecoding()
    ds = source.as_dataset(
        split=tfds_split, shuffle_files=False, decoders={image_key: skip, mask_key: skip}
    )
    prefix = f"tfds:{key}/{tfds_split}/"

    def pair(example):
        return (
            example[image_key],
            example[mask_key],
            tf.strings.join([prefix, example[image_name]]),
            tf.strings.join([prefix, example[mask_name]]),
        )

    return ds.map(pair), label_ids
