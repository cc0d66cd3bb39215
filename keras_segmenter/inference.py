"""Sliding-window and multi-scale inference, as in the Segmenter paper.

Strudel, Garcia, Laptev, Schmid, "Segmenter: Transformer for Semantic
Segmentation", ICCV 2021, section 4.2 "Inference": the image is cut into
windows of the training crop size, window logits are averaged where windows
overlap, and the averaged logits are resized back to the image size. The
functions here follow the official `segm.model.utils.inference` step by step
(same anchors, same upscaling of small images, softmax after the resize) and
are written with TensorFlow ops only, so they run inside a `tf.function` for
images of any height and width.
"""

import tensorflow as tf

OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _check_window(window_size, window_stride, batch_size):
    if not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"`window_size` must be a positive int. Received: window_size={window_size!r}")
    if not isinstance(window_stride, int) or window_stride < 1:
        raise ValueError(
            f"`window_stride` must be a positive int. Received: window_stride={window_stride!r}"
        )
    if window_stride > window_size:
        raise ValueError(
            "`window_stride` must not exceed `window_size`, or pixels between windows get no "
            f"prediction. Received: window_size={window_size}, window_stride={window_stride}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")


def _as_single_image(image):
    """Returns a float32 `(H, W, 3)` tensor from `(H, W, 3)` or `(1, H, W, 3)`."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 4:
        if image.shape[0] not in (None, 1):
            raise ValueError(
                "Expected one image `(H, W, 3)` or `(1, H, W, 3)`. "
                f"Received: image.shape={tuple(image.shape)}"
            )
        image = image[0]
    if image.shape.rank != 3 or image.shape[-1] not in (None, 3):
        raise ValueError(f"Expected an image `(H, W, 3)`. Received: image.shape={tuple(image.shape)}")
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


def _window_logits(model, windows, batch_size):
    """Runs `model` over `(N, ws, ws, 3)` windows, `batch_size` at a time."""
    num_windows = tf.shape(windows)[0]
    num_batches = (num_windows + batch_size - 1) // batch_size
    outputs = tf.TensorArray(tf.float32, size=num_batches, infer_shape=False)

    def body(i, outputs):
        logits = model(windows[i * batch_size : (i + 1) * batch_size], training=False)
        return i + 1, outputs.write(i, tf.cast(logits, tf.float32))

    _, outputs = tf.while_loop(lambda i, _: i < num_batches, body, (0, outputs))
    return outputs.concat()


def sliding_window_logits(model, image, window_size, window_stride, batch_size=4):
    """Window-averaged logits at the (possibly upscaled) windowing resolution.

    Args:
        model: a Keras model mapping `(B, h, w, 3)` to logits `(B, h, w, K)`.
        image: float `(H, W, 3)` normalized image.
        window_size: int, window side (the training crop size).
        window_stride: int, step between windows.
        batch_size: int, windows per model call. Defaults to 4.

    Returns:
        float32 `(H', W', K)` averaged logits, where `(H', W')` is
        `upscaled_shape(H, W, window_size)`.
    """
    image = _as_single_image(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    new_height, new_width = upscaled_shape(height, width, window_size)
    image = tf.cond(
        tf.logical_or(new_height != height, new_width != width),
        lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
        lambda: image,
    )
    rows = window_anchors(new_height, window_size, window_stride)
    cols = window_anchors(new_width, window_size, window_stride)

    # Gather every window at once: (rows, ws, W, 3) then (rows, ws, cols, ws, 3).
    offsets = tf.range(window_size)
    strips = tf.gather(image, rows[:, None] + offsets[None], axis=0)
    grid = tf.gather(strips, cols[:, None] + offsets[None], axis=2)
    windows = tf.reshape(tf.transpose(grid, (0, 2, 1, 3, 4)), (-1, window_size, window_size, 3))
    logits = _window_logits(model, windows, batch_size)
    num_classes = tf.shape(logits)[-1]

    # Add windows one by one in anchor order, like the official loop, so the
    # float32 sums are the same.
    anchor_rows = tf.repeat(rows, tf.size(cols))
    anchor_cols = tf.tile(cols, [tf.size(rows)])
    pixel_grid = tf.stack(tf.meshgrid(offsets, offsets, indexing="ij"), axis=-1)

    def add_window(i, total):
        indices = pixel_grid + tf.stack([anchor_rows[i], anchor_cols[i]])
        return i + 1, tf.tensor_scatter_nd_add(total, indices, logits[i])

    total = tf.zeros(tf.stack([new_height, new_width, num_classes]), tf.float32)
    _, total = tf.while_loop(
        lambda i, _: i < tf.size(anchor_rows), add_window, (0, total)
    )

    def coverage(anchors, size):
        positions = tf.range(size)[None]
        inside = (positions >= anchors[:, None]) & (positions < anchors[:, None] + window_size)
        return tf.reduce_sum(tf.cast(inside, tf.float32), axis=0)

    count = coverage(rows, new_height)[:, None] * coverage(cols, new_width)[None, :]
    return total / count[..., None]


def _summed_probabilities(model, image, size, window_size, window_stride, batch_size, flip):
    """Softmax of the window-averaged logits resized to `size`, plus its mirror if `flip`."""
    views = [(image, False)] + ([(tf.reverse(image, axis=[1]), True)] if flip else [])
    probs = 0.0
    for view, flipped in views:
        logits = sliding_window_logits(model, view, window_size, window_stride, batch_size)
        logits = tf.image.resize(logits, size, "bilinear")
        if flipped:
            logits = tf.reverse(logits, axis=[1])
        probs += tf.nn.softmax(logits, axis=-1)
    return probs


def sliding_window_inference(
    model, image, window_size, window_stride, num_classes=None, batch_size=4, flip=False
):
    """Class probabilities of one image by sliding-window inference.

    Reproduces the official `segm.model.utils.inference` (Segmenter, ICCV
    2021, section 4.2): an image whose short side is below `window_size` is
    first upscaled bilinearly so the short side equals the window; square
    windows are taken at `window_anchors` on both axes; window logits are
    summed and divided by the number of windows covering each pixel; the
    averaged logits are resized bilinearly (half-pixel centres, no
    antialiasing, as torch `align_corners=False`) to the input size; the
    softmax comes last. With `flip=True` the probabilities of the image and
    of its left-right mirror (mirrored back) are averaged.

    Runs eagerly or inside a `tf.function` with unknown height and width.

    Args:
        model: a Keras model mapping normalized images `(B, h, w, 3)` to
            logits `(B, h, w, K)`, e.g. a `keras_segmenter.Segmenter`.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image
            (see `ImageNormalization`).
        window_size: int, window side, the training crop size.
        window_stride: int, step between windows.
        num_classes: optional int K; when given, the output's last dimension
            is checked against it and set statically.
        batch_size: int, windows per model call. Defaults to 4.
        flip: bool, also average the left-right flipped prediction.
            Defaults to `False`.

    Returns:
        float32 `(H, W, K)` softmax probabilities.
    """
    _check_window(window_size, window_stride, batch_size)
    image = _as_single_image(image)
    probs = _summed_probabilities(
        model, image, tf.shape(image)[:2], window_size, window_stride, batch_size, flip
    )
    probs = probs / (2.0 if flip else 1.0)
    if num_classes is not None:
        tf.debugging.assert_equal(
            tf.shape(probs)[-1], num_classes, message="model output classes != num_classes"
        )
        probs = tf.ensure_shape(probs, (None, None, num_classes))
    return probs


def rescaled_shape(height, width, scale=1.0, image_size=None, max_ratio=4):
    """Image size for one evaluation scale.

    Without `image_size`, the image is scaled by `scale`:
    `int(H * scale + 0.5), int(W * scale + 0.5)`. With `image_size` this is
    the official (mmseg `Resize(keep_ratio=True)`) test resize with
    `img_scale = (max_ratio * image_size * scale, image_size * scale)`: the
    image is scaled by the largest factor keeping its short side at most
    `image_size * scale` and its long side at most
    `max_ratio * image_size * scale` (mmcv `rescale_size`).

    Args:
        height: scalar int tensor or int.
        width: scalar int tensor or int.
        scale: float, the scale ratio. Defaults to 1.0.
        image_size: optional int, the official evaluation short side
            (512 ADE20K, 520 Pascal Context, 1024 Cityscapes).
        max_ratio: int, long-side bound as a multiple of the short side.

    Returns:
        `(new_height, new_width)` as scalar int32 tensors.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    if image_size is None:
        factor = tf.constant(scale, tf.float64)
    else:
        # mmcv computes the bounds as ints: int(2048 * r), int(512 * r).
        short_bound = float(int(image_size * scale))
        long_bound = float(int(max_ratio * image_size * scale))
        factor = tf.minimum(long_bound / tf.maximum(h, w), short_bound / tf.minimum(h, w))
    new_height = tf.cast(tf.floor(h * factor + 0.5), tf.int32)
    new_width = tf.cast(tf.floor(w * factor + 0.5), tf.int32)
    return new_height, new_width


def multi_scale_inference(
    model,
    image,
    window_size,
    window_stride,
    scales=OFFICIAL_SCALES,
    flip=True,
    image_size=None,
    batch_size=4,
):
    """Multi-scale (and flip) sliding-window probabilities of one image.

    For each scale the image is resized bilinearly to `rescaled_shape`, run
    through `sliding_window_inference` (with its mirror when `flip`), and the
    probabilities, resized to the input size before the softmax as in the
    official `merge_windows`, are averaged over all scales and flips
    (Segmenter, ICCV 2021, section 4.2, "multi-scale").

    Args:
        model: a Keras segmentation model returning logits.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float ratios. Defaults to
            `(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`.
        flip: bool, add left-right flipped predictions. Defaults to `True`.
        image_size: optional int, rescale as the official test pipeline
            (see `rescaled_shape`); `None` scales the input size directly.
        batch_size: int, windows per model call. Defaults to 4.

    Returns:
        float32 `(H, W, K)` averaged probabilities.
    """
    _check_window(window_size, window_stride, batch_size)
    if not scales or any(not (isinstance(s, (int, float)) and s > 0) for s in scales):
        raise ValueError(f"`scales` must be positive numbers. Received: scales={scales!r}")
    image = _as_single_image(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.stack([height, width])
    probs = 0.0
    for scale in scales:
        new_height, new_width = rescaled_shape(height, width, scale, image_size)
        scaled = tf.cond(
            tf.logical_or(new_height != height, new_width != width),
            lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
            lambda: image,
        )
        probs += _summed_probabilities(
            model, scaled, size, window_size, window_stride, batch_size, flip
        )
    return probs / (len(scales) * (2 if flip else 1))


def make_inference_function(
    model,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    image_size=None,
    batch_size=4,
):
    """A `tf.function` from one normalized image `(H, W, 3)` to `(H, W, K)` probabilities.

    Traced once with unknown height and width, so images of every size reuse
    the same graph. `scales=(1.0,)`, `flip=False` and `image_size=None` is
    plain `sliding_window_inference`.

    Args:
        model: a Keras segmentation model returning logits.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float scale ratios. Defaults to `(1.0,)`.
        flip: bool, flip averaging. Defaults to `False`.
        image_size: optional int, official test resize (see `rescaled_shape`).
        batch_size: int, windows per model call. Defaults to 4.

    Returns:
        A `tf.function` taking a float32 `(H, W, 3)` tensor.
    """
    _check_window(window_size, window_stride, batch_size)
    scales = tuple(float(s) for s in scales)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32)], reduce_retracing=True)
    def infer(image):
        return multi_scale_inference(
            model, image, window_size, window_stride, scales, flip, image_size, batch_size
        )

    return infer
