"""Where the windows go: the window rule, their anchors, the upscaling of small images,
the rescaling of multi-scale views, and how many windows go into one model call."""

import tensorflow as tf

from keras_segmenter.errors import UserError

OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def check_window(window_size, window_stride, batch_size):
    if not isinstance(window_size, int) or window_size < 1:
        raise UserError(
            f"`window_size` must be a positive int. Received: window_size={window_size!r}"
        )
    if not isinstance(window_stride, int) or window_stride < 1:
        raise UserError(
            f"`window_stride` must be a positive int. Received: window_stride={window_stride!r}"
        )
    if window_stride > window_size:
        raise UserError(
            "`window_stride` must not exceed `window_size`, or pixels between windows get no "
            f"prediction. Received: window_size={window_size}, window_stride={window_stride}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")


def as_single_image(image):
    """Returns a float32 `(H, W, 3)` tensor from `(H, W, 3)` or `(1, H, W, 3)`."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 4:
        if image.shape[0] not in (None, 1):
            raise UserError(
                "Expected one image `(H, W, 3)` or `(1, H, W, 3)`. "
                f"Received: image.shape={tuple(image.shape)}"
            )
        image = image[0]
    if image.shape.rank != 3 or image.shape[-1] not in (None, 3):
        raise UserError(
            f"Expected an image `(H, W, 3)`. Received: image.shape={tuple(image.shape)}"
        )
    return tf.cast(image, tf.float32)


def window_anchors(size, window_size, window_stride):
    """Top-left window offsets along one axis, as the official `sliding_window`.

    Offsets `0, stride, 2 * stride, ...` strictly below `size - window_size`,
    then `size - window_size` itself, so the last window touches the border.

    Args:
        size: int or scalar int tensor, the axis length (at least `window_size`).
        window_size: int, the window side.
        window_stride: int, the step between windows.

    Returns:
        1-D int32 tensor of offsets.
    """
    last = tf.cast(size, tf.int32) - window_size
    return tf.concat([tf.range(0, last, window_stride), [last]], axis=0)


def upscaled_shape(height, width, window_size):
    """Shape the official `resize()` gives an image before windowing.

    Images whose short side is below `window_size` are upscaled so that the
    short side equals the window and the long side is
    `int(long / short * window_size)`; larger images keep their shape.

    Args:
        height: scalar int tensor or int.
        width: scalar int tensor or int.
        window_size: int.

    Returns:
        `(new_height, new_width)` as scalar int32 tensors.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    short = tf.minimum(height, width)
    ratio = tf.cast(tf.maximum(height, width), tf.float64) / tf.cast(short, tf.float64)
    long_side = tf.cast(tf.floor(ratio * window_size), tf.int32)
    small = short < window_size
    new_height = tf.where(small, tf.where(height < width, window_size, long_side), height)
    new_width = tf.where(small, tf.where(height < width, long_side, window_size), width)
    return new_height, new_width


def window_view(image, window_size):
    """`image`, upscaled as the official `resize()` when its short side is below the window."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    new_height, new_width = upscaled_shape(height, width, window_size)
    return tf.cond(
        tf.logical_or(new_height != height, new_width != width),
        lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
        lambda: image,
    )


def rescaled_shape(height, width, scale=1.0, base_size=None):
    """Image size for one evaluation scale.

    Without `base_size`, the image is scaled by `scale`:
    `int(H * scale + 0.5), int(W * scale + 0.5)`. With `base_size = (long,
    short)` this is the official test resize (mmseg `MultiScaleFlipAug` with
    `img_scale=base_size` and `Resize(keep_ratio=True)`, i.e. mmcv
    `rescale_size`): the image is scaled by the largest factor that keeps its
    long side at most `int(long * scale)` and its short side at most
    `int(short * scale)`, e.g. `(2048, 512)` brings ADE20K images to a short
    side of 512.

    Args:
        height: scalar int tensor or int.
        width: scalar int tensor or int.
        scale: float, the scale ratio. Defaults to 1.0.
        base_size: optional `(long, short)` ints, the dataset's `img_scale`.

    Returns:
        `(new_height, new_width)` as scalar int32 tensors.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    if base_size is None:
        factor = tf.constant(scale, tf.float64)
    else:
        long_bound = float(int(max(base_size) * scale))
        short_bound = float(int(min(base_size) * scale))
        factor = tf.minimum(long_bound / tf.maximum(h, w), short_bound / tf.minimum(h, w))
    new_height = tf.cast(tf.floor(h * factor + 0.5), tf.int32)
    new_width = tf.cast(tf.floor(w * factor + 0.5), tf.int32)
    return new_height, new_width


def num_classes_of(model):
    """Number of classes a segmentation model predicts (`model.num_classes` or its output)."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        num_classes = model.output_shape[-1]
    return int(num_classes)


def default_window(model=None, window_size=None, window_stride=None, reference=None):
    """Sliding-window size and stride: the one rule of predict, evaluate and fit's validation.

    The window is `window_size`, else the model's training crop
    (`model.backbone.image_size`, the shorter side if it is not square).
    The stride is `window_stride`; else, with `reference`, the stride of
    that official window scaled to this one (fit's validation, as the
    official `train.py` with the dataset's `config.yml` window); else
    `window - 32` (the official evaluation, `segm/eval/miou.py`), but
    never below half the window, so that tiny test models do not need
    thousands of windows.

    Args:
        model: a `Segmenter` (anything with `backbone.image_size`); only
            read when `window_size` is `None`.
        window_size: optional int, overrides the window.
        window_stride: optional int, overrides the stride.
        reference: optional `(size, stride)`, an official window and stride
            (e.g. a `DatasetInfo`'s `window_size`, `window_stride`).

    Returns:
        `(window_size, window_stride)` ints.
    """
    if window_size is None:
        image_size = getattr(getattr(model, "backbone", None), "image_size", None)
        if image_size is None:
            raise UserError(
                "The model has no `backbone.image_size` (training crop), so the sliding window "
                "size is unknown: pass `window_size` (--window-size), or use whole-image "
                "inference (--whole)."
            )
        window_size = int(min(image_size))
    if window_stride is None:
        if reference:
            size, stride = reference
            window_stride = max(1, round(window_size * stride / size))
        else:
            window_stride = max(window_size - 32, window_size // 2, 1)
    return int(window_size), int(window_stride)


# One model call returns `windows x window^2 x classes` float32 logits (157 MB
# for one 512 window of a 150-class model); by default as many windows go into
# a call as keep them near this size, and the merge buffers scale with it.
CALL_LOGITS_BYTES = 256 * 2**20
MAX_WINDOWS_PER_CALL = 8


def windows_per_call(window_size, num_classes, batch_size=None):
    """`batch_size`, or by default as many windows as fit `CALL_LOGITS_BYTES` (1 to 8)."""
    if batch_size is not None:
        return batch_size
    fitting = CALL_LOGITS_BYTES // (window_size * window_size * num_classes * 4)
    return int(min(MAX_WINDOWS_PER_CALL, max(1, fitting)))
