"""The MMSegmentation training augmentations as graph-mode TensorFlow ops.

Every random draw is a `tf.random.stateless_*` call whose seed is folded
from one per-example seed, so a pipeline built with a seed is reproducible
whatever the parallelism. Images are float32 RGB in [0, 255]; masks are
int32 label maps (255 = ignore) until the end.
"""

import tensorflow as tf

CAT_MAX_RATIO = 0.75
CROP_TRIES = 10
RATIO_RANGE = (0.5, 2.0)
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # OpenCV uint8 hue units (2 degrees each), as MMSegmentation.

# Fold-in keys of the sub-seeds.
_RATIO, _CROP_Y, _CROP_X, _FLIP, _PHOTO = 1, 2, 3, 4, 5


def _sub_seed(seed, key):
    return tf.random.experimental.stateless_fold_in(seed, key)


def _uniform(seed, key, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], _sub_seed(seed, key), minval=low, maxval=high)


def rescale_size(height, width, base_size, ratio):
    """Output size of MMSegmentation `Resize(keep_ratio=True)` for a ratio.

    The scale `(int(long * ratio), int(short * ratio))` is a bounding
    (long side, short side) pair; the image is rescaled by the largest
    factor that fits it, and sizes are rounded (`int(x + 0.5)`).

    Args:
        height: int32 scalar tensor, image height.
        width: int32 scalar tensor, image width.
        base_size: tuple `(long, short)`, the base `img_scale`.
        ratio: float32 scalar tensor, the sampled ratio.

    Returns:
        `(new_height, new_width)` int32 scalar tensors.
    """
    long_side = tf.floor(float(max(base_size)) * ratio)
    short_side = tf.floor(float(min(base_size)) * ratio)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    factor = tf.minimum(long_side / tf.maximum(h, w), short_side / tf.minimum(h, w))
    new_h = tf.cast(tf.floor(h * factor + 0.5), tf.int32)
    new_w = tf.cast(tf.floor(w * factor + 0.5), tf.int32)
    return tf.maximum(new_h, 1), tf.maximum(new_w, 1)


def _nearest_indices(start, size, in_size, out_size):
    # OpenCV INTER_NEAREST: src = floor(dst * in / out), in exact integers.
    dst = start + tf.range(size)
    return tf.minimum((dst * in_size) // out_size, in_size - 1)


def crop_is_balanced(label_hist, ignore_index=255, cat_max_ratio=0.75):
    """MMSegmentation's test: >1 class and none above `cat_max_ratio`.

    Args:
        label_hist: int32 tensor (256,), pixel count of each label value.
        ignore_index: int, label not counted.
        cat_max_ratio: float, largest allowed share of one class.

    Returns:
        A boolean scalar tensor.
    """
    keep = tf.one_hot(ignore_index, 256, on_value=0, off_value=1, dtype=label_hist.dtype)
    counts = label_hist * keep
    total = tf.cast(tf.reduce_sum(counts), tf.float32)
    largest = tf.cast(tf.reduce_max(counts), tf.float32)
    several = tf.math.count_nonzero(counts) > 1
    return tf.logical_and(several, largest < cat_max_ratio * total)


def rescale_and_crop(
    image,
    raw_mask,
    label_table,
    base_size,
    crop_size,
    seed,
    ignore_index=255,
    cat_max_ratio=CAT_MAX_RATIO,
    return_box=False,
):
    """Random keep-ratio rescale then `RandomCrop(cat_max_ratio)`.

    Only the crop is ever resampled: the mask crop is gathered with nearest
    indices (OpenCV `INTER_NEAREST`) and the image crop is bilinearly
    sampled with `tf.image.crop_and_resize` from the one-pixel edge-padded
    source window it needs, which reproduces half-pixel bilinear resizing
    with border clamping
    (OpenCV `INTER_LINEAR`, `tf.image.resize`) of the whole image followed
    by a crop. Crop offsets are drawn up to 11 times: the first of the first
    10 whose mask passes `crop_is_balanced` is kept, else the 11th, as in
    MMSegmentation.

    Args:
        image: uint8 tensor (H, W, 3).
        raw_mask: uint8 or int32 tensor (H, W), raw values of the file.
        label_table: int32 tensor (256,), raw value -> label.
        base_size: tuple `(long, short)`.
        crop_size: tuple `(crop_h, crop_w)` of ints.
        seed: int32/int64 tensor (2,), the per-example seed.
        ignore_index: int, ignored label.
        cat_max_ratio: float, see `crop_is_balanced`; 1.0 disables retries.
        return_box: bool, also return `(new_h, new_w, top, left)`.

    Returns:
        `(image, mask)`: float32 (h, w, 3) in [0, 255], rounded to integers
        like an OpenCV uint8 resize, and int32 (h, w) labels, where
        `h = min(crop_h, new_h)` and `w = min(crop_w, new_w)`.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    ratio = _uniform(seed, _RATIO, *RATIO_RANGE)
    new_h, new_w = rescale_size(height, width, base_size, ratio)
    crop_h = tf.minimum(crop_size[0], new_h)
    crop_w = tf.minimum(crop_size[1], new_w)
    tops = tf.random.stateless_uniform(
        [CROP_TRIES + 1],
        _sub_seed(seed, _CROP_Y),
        minval=0,
        maxval=new_h - crop_h + 1,
        dtype=tf.int32,
    )
    lefts = tf.random.stateless_uniform(
        [CROP_TRIES + 1],
        _sub_seed(seed, _CROP_X),
        minval=0,
        maxval=new_w - crop_w + 1,
        dtype=tf.int32,
    )
    raw_mask = tf.cast(raw_mask, tf.int32)

    def mask_crop(k):
        rows = _nearest_indices(tops[k], crop_h, height, new_h)
        cols = _nearest_indices(lefts[k], crop_w, width, new_w)
        return tf.gather(tf.gather(raw_mask, rows), cols, axis=1)

    def balanced(k):
        labels = tf.gather(label_table, mask_crop(k))
        hist = tf.math.bincount(tf.maximum(labels, 0), minlength=256, maxlength=256)
        return crop_is_balanced(hist, ignore_index, cat_max_ratio)

    if cat_max_ratio < 1.0:
        # The loop stops at the first balanced crop among the first 10; its
        # counter then names the crop to keep (10 = the unchecked 11th).
        chosen = tf.while_loop(
            lambda k: tf.logical_and(
                k < CROP_TRIES, tf.logical_not(balanced(tf.minimum(k, CROP_TRIES - 1)))
            ),
            lambda k: k + 1,
            [tf.constant(0)],
        )
    else:
        chosen = tf.constant(0)
    mask = tf.gather(label_table, mask_crop(chosen))

    # Bilinear image crop (half-pixel centres, clamped borders), sampled
    # from the source window it needs plus one replicated edge pixel.
    scale_y = tf.cast(height, tf.float32) / tf.cast(new_h, tf.float32)
    scale_x = tf.cast(width, tf.float32) / tf.cast(new_w, tf.float32)
    y_start = (tf.cast(tops[chosen], tf.float32) + 0.5) * scale_y - 0.5
    x_start = (tf.cast(lefts[chosen], tf.float32) + 0.5) * scale_x - 0.5
    y_end = y_start + tf.cast(crop_h - 1, tf.float32) * scale_y
    x_end = x_start + tf.cast(crop_w - 1, tf.float32) * scale_x

    def window(start, end, size):
        first = tf.clip_by_value(tf.cast(tf.floor(start), tf.int32), 0, size - 1)
        last = tf.clip_by_value(tf.cast(tf.floor(end), tf.int32) + 1, 0, size - 1)
        return first, last

    row0, row1 = window(y_start, y_end, height)
    col0, col1 = window(x_start, x_end, width)
    source = image[row0 : row1 + 1, col0 : col1 + 1]
    source = tf.concat([source[:1], source, source[-1:]], 0)
    source = tf.concat([source[:, :1], source, source[:, -1:]], 1)
    span_y = tf.cast(row1 - row0 + 2, tf.float32)
    span_x = tf.cast(col1 - col0 + 2, tf.float32)
    offset_y = 1.0 - tf.cast(row0, tf.float32)
    offset_x = 1.0 - tf.cast(col0, tf.float32)
    box = tf.stack(
        [
            (y_start + offset_y) / span_y,
            (x_start + offset_x) / span_x,
            (y_end + offset_y) / span_y,
            (x_end + offset_x) / span_x,
        ]
    )
    crop = tf.image.crop_and_resize(
        source[tf.newaxis], box[tf.newaxis], [0], tf.stack([crop_h, crop_w])
    )[0]
    crop = tf.round(tf.clip_by_value(crop, 0.0, 255.0))
    if return_box:
        return crop, mask, (new_h, new_w, tops[chosen], lefts[chosen])
    return crop, mask


def random_flip(image, mask, seed, prob=0.5):
    """Flips image and mask left-right together with probability `prob`."""
    flip = _uniform(seed, _FLIP) < prob
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    return image, mask


def _to_uint8_range(image):
    # MMSegmentation clips to [0, 255] and casts to uint8 (truncation).
    return tf.floor(tf.clip_by_value(image, 0.0, 255.0))


def photometric_distortion(image, seed):
    """MMSegmentation `PhotoMetricDistortion` on a float [0, 255] image.

    In order: brightness (add U(-32, 32)); then at random either contrast
    first or last; saturation (scale S of HSV by U(0.5, 1.5)); hue (add an
    integer in [-18, 18) OpenCV hue units, i.e. 2 degrees each). Each step
    is applied with probability 0.5; contrast multiplies the pixel values by
    U(0.5, 1.5) as MMSegmentation does. After each step values are clipped
    and truncated to integers, as the uint8 casts of the original.

    Args:
        image: float32 tensor (H, W, 3), RGB in [0, 255].
        seed: tensor (2,), per-example seed.

    Returns:
        The distorted float32 image in [0, 255].
    """
    seed = _sub_seed(seed, _PHOTO)
    draws = tf.random.stateless_uniform([10], seed)

    def maybe(k, fn, x):
        return tf.cond(draws[k] < 0.5, lambda: fn(x), lambda: x)

    def value(k, low, high):
        return low + (high - low) * draws[k + 1]

    def brightness(x):
        delta = value(0, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
        return _to_uint8_range(x + delta)

    def contrast(x):
        return _to_uint8_range(x * value(2, *CONTRAST_RANGE))

    def saturation(x):
        x = tf.image.adjust_saturation(x / 255.0, value(4, *SATURATION_RANGE))
        return _to_uint8_range(x * 255.0)

    def hue(x):
        shift = tf.floor(value(6, -HUE_DELTA, HUE_DELTA))
        x = tf.image.adjust_hue(x / 255.0, shift / 180.0)
        return _to_uint8_range(x * 255.0)

    contrast_first = draws[8] < 0.5
    image = maybe(0, brightness, image)
    image = tf.cond(contrast_first, lambda: maybe(2, contrast, image), lambda: image)
    image = maybe(4, saturation, image)
    image = maybe(6, hue, image)
    image = tf.cond(contrast_first, lambda: image, lambda: maybe(2, contrast, image))
    return image


def pad_to(image, mask, crop_size, ignore_index=255):
    """Pads bottom/right to `crop_size`: 0 for the image, ignore for masks."""
    pad_h = crop_size[0] - tf.shape(image)[0]
    pad_w = crop_size[1] - tf.shape(image)[1]
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    mask = tf.pad(mask, [[0, pad_h], [0, pad_w]], constant_values=ignore_index)
    image.set_shape([crop_size[0], crop_size[1], 3])
    mask.set_shape([crop_size[0], crop_size[1]])
    return image, mask
