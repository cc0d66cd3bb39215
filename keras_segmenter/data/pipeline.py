"""`tf.data` training and evaluation pipelines (graph mode, no Python)."""

import dataclasses
import functools
import random
import typing

import tensorflow as tf

from keras_segmenter.data import augment
from keras_segmenter.data.dataset_info import TFDS_PREFIX, DatasetInfo, get_dataset_info
from keras_segmenter.data.sources import usable_scan, warn_unpaired
from keras_segmenter.errors import UserError
from keras_segmenter.images import MAX_PIXELS
from keras_segmenter.layers.normalization import check_normalization, normalize_images

_CHECK_HINT = "; run `python -m keras_segmenter.data check` for a full report"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_INFO_KEYS = (
    "num_classes",
    "ignore_index",
    "class_names",
    "palette",
    "base_size",
    "crop_size",
    "window_size",
    "window_stride",
    "reduce_zero_label",
)


def _require(condition, *message):
    """A graph assertion whose message joins strings and string tensors."""
    return tf.debugging.Assert(
        condition, [tf.strings.join([tf.convert_to_tensor(m) for m in message])]
    )


def _tail_contains(contents, marker, window):
    length = tf.strings.length(contents)
    tail = tf.strings.substr(contents, tf.maximum(length - window, 0), window)
    positions = tf.range(tf.maximum(tf.strings.length(tail) - len(marker) + 1, 0))
    pieces = tf.strings.substr(
        tf.fill(tf.shape(positions), tail),
        positions,
        tf.fill(tf.shape(positions), len(marker)),
    )
    return tf.reduce_any(tf.equal(pieces, marker))


def _not_truncated(contents):
    """False for a JPEG without end marker or a PNG without IEND chunk."""
    head = tf.strings.substr(contents, 0, 8)
    is_png = tf.equal(head, _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 2), b"\xff\xd8")
    length_ok = tf.strings.length(contents) > 8
    return tf.logical_and(
        length_ok,
        tf.logical_and(
            tf.logical_or(tf.logical_not(is_png), _tail_contains(contents, b"IEND", 16)),
            tf.logical_or(tf.logical_not(is_jpeg), _tail_contains(contents, b"\xff\xd9", 64)),
        ),
    )


# PNG colour types (IHDR byte 25) by number.
_PNG_COLOUR_TYPES = ["grayscale", "?", "RGB", "palette", "grayscale+alpha", "?", "RGBA"]


def _png_kind(bit_depth, colour_type):
    """E.g. "16-bit grayscale", "8-bit palette": what a PNG header declares."""
    colour_type = tf.cast(colour_type, tf.int32)
    name = tf.gather(_PNG_COLOUR_TYPES, tf.where(colour_type > 6, 1, colour_type))
    return tf.strings.join([tf.strings.as_string(tf.cast(bit_depth, tf.int32)), "-bit ", name])


def load_pair(image_path, mask_path, label_table, max_pixels=MAX_PIXELS):
    """Reads and checks one pair; fatal problems raise naming the file.

    Args:
        image_path: string scalar tensor.
        mask_path: string scalar tensor.
        label_table: int32 tensor (256,), raw value -> label or -1.
        max_pixels: int, refuse a file whose header declares more pixels
            (height x width), before it is decoded. Defaults to
            `keras_segmenter.images.MAX_PIXELS`.

    Returns:
        `(image, raw_mask)`: uint8 (H, W, 3) and uint8 (H, W).
    """
    return decode_pair(
        tf.io.read_file(image_path),
        tf.io.read_file(mask_path),
        image_path,
        mask_path,
        label_table,
        max_pixels,
    )


def _within(contents, path, max_pixels):
    """A check that the header of `contents` declares at most `max_pixels` pixels."""
    from keras_segmenter.image_decoding import declared_size  # the header reader of serving_bytes

    height, width = declared_size(contents)
    return _require(
        height * width <= max_pixels,
        path,
        " declares ",
        tf.strings.as_string(width),
        "x",
        tf.strings.as_string(height),
        f" (width x height) pixels, more than the limit of {max_pixels} (--max-pixels); raise it to read it",
    )


# The headers `tf.io.decode_image` decodes: JPEG, PNG, GIF, BMP, WebP (RIFF).
_IMAGE_MAGICS = (b"\xff\xd8", _PNG_MAGIC, b"GIF8", b"BM", b"RIFF")


def _known_image(contents):
    """True when `contents` starts like an image `tf.io.decode_image` reads."""
    return tf.reduce_any(
        [tf.equal(tf.strings.substr(contents, 0, len(m)), m) for m in _IMAGE_MAGICS]
    )


def decode_pair(image_bytes, mask_bytes, image_path, mask_path, label_table, max_pixels=MAX_PIXELS):
    """`load_pair` on file contents; the paths only name files in errors."""
    header = tf.io.decode_raw(tf.strings.substr(mask_bytes, 0, 26, unit="BYTE"), tf.uint8)
    header = tf.pad(header, [[0, tf.maximum(26 - tf.size(header), 0)]])
    is_png = tf.equal(tf.strings.substr(mask_bytes, 0, 8), _PNG_MAGIC)
    checks = [
        _require(
            _not_truncated(image_bytes), "Truncated or empty image file: ", image_path, _CHECK_HINT
        ),
        _require(
            _not_truncated(mask_bytes), "Truncated or empty mask file: ", mask_path, _CHECK_HINT
        ),
        _require(
            _known_image(image_bytes),
            "Not an image file (no JPEG, PNG, GIF, BMP or WebP header): ",
            image_path,
            _CHECK_HINT,
        ),
        _require(is_png, "Mask is not a PNG file: ", mask_path, _CHECK_HINT),
        _within(image_bytes, image_path, max_pixels),
        _within(mask_bytes, mask_path, max_pixels),
        # IHDR: byte 24 = bit depth, byte 25 = colour type (0 = grayscale).
        _require(
            tf.logical_and(tf.equal(header[24], 8), tf.equal(header[25], 0)),
            "Mask must be an 8-bit single-channel (mode 'L') PNG of label indices: ",
            mask_path,
            " is a ",
            _png_kind(header[24], header[25]),
            " PNG",
            _CHECK_HINT,
        ),
    ]
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        mask = tf.io.decode_png(mask_bytes, channels=1)[..., 0]
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)))
    size_check = _require(
        same_size,
        "Image/mask size mismatch: ",
        image_path,
        " is ",
        tf.strings.as_string(tf.shape(image)[0]),
        "x",
        tf.strings.as_string(tf.shape(image)[1]),
        " but ",
        mask_path,
        " is ",
        tf.strings.as_string(tf.shape(mask)[0]),
        "x",
        tf.strings.as_string(tf.shape(mask)[1]),
    )
    hist = tf.math.bincount(tf.cast(mask, tf.int32), minlength=256, maxlength=256)
    invalid = tf.where(tf.logical_and(hist > 0, label_table < 0))[:, 0]
    label_check = _require(
        tf.equal(tf.size(invalid), 0),
        "Mask values outside the classes in ",
        mask_path,
        ": ",
        tf.strings.reduce_join(tf.strings.as_string(invalid[:10]), separator=","),
        _CHECK_HINT,
    )
    with tf.control_dependencies([size_check, label_check]):
        return tf.identity(image), tf.identity(mask)


def _split_kwargs(kwargs):
    info_kwargs = {k: v for k, v in kwargs.items() if k in _INFO_KEYS}
    source_kwargs = {k: v for k, v in kwargs.items() if k not in _INFO_KEYS}
    return info_kwargs, source_kwargs


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """One split of a dataset, scanned once by `open_split`.

    `train_batches` and `eval_pairs` build their pipelines from it without
    scanning the folder again.

    Attributes:
        info: the dataset's `DatasetInfo`.
        size: int, the number of `(image, mask)` pairs.
        files: tuple of `(image_path, mask_path)` in sorted order; empty for
            `tfds:NAME`, whose pairs are TFRecords.
    """

    info: DatasetInfo
    size: int
    files: tuple
    _read: typing.Callable  # () -> (tf.data.Dataset of pairs, masks in Cityscapes labelIds)
    _load: typing.Callable  # load(*pair, label_table) -> (image, raw mask)

    def pipeline_parts(self):
        """`(pairs, load, label_table)`: the pairs as a `tf.data.Dataset` (its first TF op),
        `load(*pair, label_table)` reading one, and the raw value -> label table."""
        pairs, label_ids = self._read()
        info = get_dataset_info(self.info.name, label_ids=True) if label_ids else self.info
        return pairs, self._load, tf.constant(info.label_table(), tf.int32)


def open_split(name, data_dir, split="train", info=None, **dataset_kwargs):
    """Scans one split of a dataset (no TF op runs); returns a `DataSplit`.

    Args:
        name: str, dataset name (see `get_dataset_info`), or `"tfds:NAME"`.
        data_dir: str, dataset root, or the TFDS data folder.
        split: str. Defaults to `"train"`.
        info: the dataset's `DatasetInfo`, or None to build it from `name`
            and `dataset_kwargs`.
        **dataset_kwargs: dataset options, as for `train_dataset`.
    """
    info_kwargs, source_kwargs = _split_kwargs(dataset_kwargs)
    max_pixels = source_kwargs.pop("max_pixels", None) or MAX_PIXELS
    info = info or get_dataset_info(name, **info_kwargs)
    if str(name).startswith(TFDS_PREFIX):
        from keras_segmenter.data.tfds import reader

        key = name[len(TFDS_PREFIX) :]
        size = reader.num_examples(key, split, data_dir)
        read = functools.partial(reader.read, key, split, data_dir, **source_kwargs)
        return DataSplit(
            info, size, (), read, functools.partial(decode_pair, max_pixels=max_pixels)
        )
    result = usable_scan(name, data_dir, split, **source_kwargs)
    warn_unpaired(result, name, split)
    files = tuple(result.pairs)

    def read():
        images, masks = [list(column) for column in zip(*files)]
        return tf.data.Dataset.from_tensor_slices((images, masks)), result.label_ids

    return DataSplit(
        info, len(files), files, read, functools.partial(load_pair, max_pixels=max_pixels)
    )


def count_pairs(name, data_dir, split="train", **dataset_kwargs):
    """The number of `(image, mask)` pairs of a split, without running a TF op.

    Args:
        name: str, dataset name, or `"tfds:NAME"` (see `train_dataset`).
        data_dir: str, dataset root, or the TFDS data folder.
        split: str. Defaults to `"train"`.
        **dataset_kwargs: dataset options, as for `train_dataset`.
    """
    return open_split(name, data_dir, split, **dataset_kwargs).size


def _as_pair(size, name):
    if isinstance(size, int):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise UserError(
            f"`{name}` must be a positive int or (height, width). Received: {name}={size!r}"
        )
    return tuple(size)


def train_dataset(
    name,
    data_dir,
    batch_size=8,
    crop_size=None,
    normalization="vit",
    seed=None,
    split="train",
    repeat=True,
    cat_max_ratio=augment.CAT_MAX_RATIO,
    start=0,
    **dataset_kwargs,
):
    """Training batches with the MMSegmentation augmentation recipe.

    Per example: random keep-ratio rescale to the base scale times a ratio
    in [0.5, 2.0] (bilinear image, nearest mask); random crop retried until
    no class covers more than `cat_max_ratio` of it; horizontal flip
    (p=0.5); photometric distortion; normalization of the backbone family;
    padding to the crop size (0 for the image, 255 for the mask).

    Args:
        name: str, dataset name (see `get_dataset_info`), or `"tfds:NAME"`
            for its prepared TFDS copy (see `keras_segmenter.data.tfds`).
        data_dir: str, dataset root; for `tfds:NAME`, the TFDS data folder
            (None: TFDS' default).
        batch_size: int, global batch size. Defaults to 8. The last partial
            batch is dropped so every replica gets an equal share.
        crop_size: int, (height, width) or None for the dataset default.
        normalization: str, key of `keras_segmenter.NORMALIZATIONS`.
        seed: int or None. With a seed, order (a new permutation of the
            split each epoch) and augmentations are reproducible.
        split: str. Defaults to `"train"`.
        repeat: bool, repeat forever. Defaults to True.
        cat_max_ratio: float. Defaults to 0.75; 1.0 disables crop retries.
        start: int, examples to skip: with the same seed, the stream
            continues where one that yielded `start` examples stopped (to
            resume a run). Defaults to 0.
        **dataset_kwargs: dataset options (`num_classes`, `ignore_index`,
            `class_names`, `base_size`, ... for `folder`; `manual_dir` for
            `ade20k`; `split_file`, ...), and `max_pixels`: files whose
            header declares more pixels are refused before decoding
            (default `keras_segmenter.images.MAX_PIXELS`).

    Returns:
        A `tf.data.Dataset` of `(images, masks)`: float32
        (batch, crop_h, crop_w, 3) and int32 (batch, crop_h, crop_w).
    """
    return train_batches(
        open_split(name, data_dir, split, **dataset_kwargs),
        batch_size,
        crop_size,
        normalization,
        seed,
        repeat,
        cat_max_ratio,
        start,
    )


def train_batches(
    data,
    batch_size=8,
    crop_size=None,
    normalization="vit",
    seed=None,
    repeat=True,
    cat_max_ratio=augment.CAT_MAX_RATIO,
    start=0,
):
    """`train_dataset` of a split already scanned: `data` is a `DataSplit` (`open_split`).

    The other arguments are those of `train_dataset`.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    check_normalization(normalization)
    pairs, load, table = data.pipeline_parts()
    info = data.info
    crop = _as_pair(info.crop_size if crop_size is None else crop_size, "crop_size")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    base_size = tuple(info.base_size)
    ignore = info.ignore_index

    def prepare(index, pair):
        example_seed = tf.stack([tf.cast(seed, tf.int64), index])
        image, raw_mask = load(*pair, table)
        image, mask = augment.rescale_and_crop(
            image,
            raw_mask,
            table,
            base_size,
            crop,
            example_seed,
            ignore_index=ignore,
            cat_max_ratio=cat_max_ratio,
        )
        image, mask = augment.random_flip(image, mask, example_seed)
        image = augment.photometric_distortion(image, example_seed)
        image = normalize_images(image, normalization)
        return augment.pad_to(image, mask, crop, ignore)

    count = int(pairs.cardinality())
    # The file paths, or for `tfds:NAME` the encoded records (held in memory).
    columns = next(iter(pairs.batch(count)))

    def epoch_order(epoch):
        # A full permutation per epoch (as PyTorch's shuffling DataLoader)
        # that depends only on (seed, epoch), not on how many iterators were
        # made before: a resumed run continues at the same example.
        keys = tf.random.stateless_uniform([count], tf.stack([tf.cast(seed, tf.int64), epoch]))
        order = tf.argsort(keys)
        return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(c, order) for c in columns))

    first_epoch, offset = divmod(start, count)
    ds = tf.data.Dataset.range(first_epoch, 2**62 if repeat else 1)
    ds = ds.flat_map(epoch_order).skip(offset)
    ds = ds.enumerate(start=start)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(name, data_dir, split="val", normalization="vit", **dataset_kwargs):
    """Unbatched evaluation pairs at their original resolution.

    The sliding-window inference resizes (as the official evaluation does);
    ground truth stays at the original resolution.

    Args:
        name: str, dataset name, or `"tfds:NAME"` (see `train_dataset`).
        data_dir: str, dataset root, or the TFDS data folder.
        split: str. Defaults to `"val"`.
        normalization: str, key of `keras_segmenter.NORMALIZATIONS`.
        **dataset_kwargs: dataset options, as for `train_dataset`.

    Returns:
        A `tf.data.Dataset` of `(image, mask)`: float32 (H, W, 3) normalized
        and int32 (H, W) with 255 = ignore, in sorted file order (TFDS'
        order for `tfds:cityscapes`).
    """
    return eval_pairs(open_split(name, data_dir, split, **dataset_kwargs), normalization)


def eval_pairs(data, normalization="vit"):
    """`eval_dataset` of a split already scanned: `data` is a `DataSplit` (`open_split`)."""
    check_normalization(normalization)
    pairs, load, table = data.pipeline_parts()

    def prepare(*pair):
        image, raw_mask = load(*pair, table)
        mask = tf.gather(table, tf.cast(raw_mask, tf.int32))
        return normalize_images(image, normalization), mask

    ds = pairs.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
