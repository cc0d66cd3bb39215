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

    Example:

    >>> backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=1,
    ...                           num_heads=2, mlp_dim=32, image_size=32)
    >>> model = ks.Segmenter(backbone, num_classes=4)
    >>> probs = sliding_window_inference(model, np.zeros((20, 70, 3), "float32"), 32, 24)
    >>> probs.shape  # upscaled to 32x112 for the windows, then back
    TensorShape([20, 70, 4])
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


def multi_scale_inference(
    model,
    image,
    window_size,
    window_stride,
    scales=OFFICIAL_SCALES,
    flip=True,
    base_size=None,
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
        base_size: optional `(long, short)`, rescale as the official test
            pipeline (see `rescaled_shape`); `None` scales the input size.
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
        new_height, new_width = rescaled_shape(height, width, scale, base_size)
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
    base_size=None,
    batch_size=4,
):
    """A `tf.function` from one normalized image `(H, W, 3)` to `(H, W, K)` probabilities.

    Traced once with unknown height and width, so images of every size reuse
    the same graph. `scales=(1.0,)`, `flip=False` and `base_size=None` is
    plain `sliding_window_inference`.

    Args:
        model: a Keras segmentation model returning logits.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float scale ratios. Defaults to `(1.0,)`.
        flip: bool, flip averaging. Defaults to `False`.
        base_size: optional `(long, short)`, official test resize (see
            `rescaled_shape`).
        batch_size: int, windows per model call. Defaults to 4.

    Returns:
        A `tf.function` taking a float32 `(H, W, 3)` tensor.
    """
    _check_window(window_size, window_stride, batch_size)
    scales = tuple(float(s) for s in scales)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32)], reduce_retracing=True)
    def infer(image):
        return multi_scale_inference(
            model, image, window_size, window_stride, scales, flip, base_size, batch_size
        )

    return infer


def evaluate(
    model,
    dataset,
    info=None,
    num_classes=None,
    window_size=None,
    window_stride=None,
    multi_scale=False,
    flip=None,
    base_size=None,
    ignore_index=None,
    class_names=None,
    object_sizes=True,
    limit=None,
    batch_size=4,
    verbose=1,
):
    """Evaluates a model with the paper's protocol; ground truth at its own resolution.

    Every image is (optionally) rescaled as the official test pipeline, run
    through sliding-window inference (multi-scale and flip if asked), the
    probabilities come back at the mask's resolution, and the argmax is
    accumulated in a confusion matrix (and in small/medium/large object
    confusions, see `keras_segmenter.metrics.object_size_confusion`).
    Defaults follow the official `segm/eval/miou.py`: window = training crop,
    stride = crop - 32, rescale to `info.base_size`.

    Args:
        model: a Keras segmentation model returning logits.
        dataset: iterable of `(image, mask)`: normalized float image
            `(H, W, 3)` and int mask `(H, W)` or `(H, W, 1)`, e.g. an
            unbatched `tf.data.Dataset` from `keras_segmenter.data.eval_dataset`.
        info: optional `DatasetInfo`-like object with `num_classes`,
            `class_names`, `ignore_index`, `crop_size`, `base_size`.
        num_classes: int, overrides `info.num_classes`.
        window_size: int, defaults to `info.crop_size`.
        window_stride: int, defaults to `window_size - 32`.
        multi_scale: bool, scales (0.5, ..., 1.75). Defaults to `False`.
        flip: bool, flip averaging; defaults to `multi_scale`.
        base_size: `(long, short)` official test resize, defaults to
            `info.base_size`; pass `False` to keep the images' own size.
        ignore_index: int, defaults to `info.ignore_index` or 255.
        class_names: sequence of str, defaults to `info.class_names`.
        object_sizes: bool, also compute mIoU by object size. Defaults to `True`.
        limit: optional int, evaluate only the first `limit` pairs.
        batch_size: int, windows per model call. Defaults to 4.
        verbose: 0 silent, 1 progress (a bar on a terminal, a line every 10 % of
            the images otherwise). Defaults to 1.

    Returns:
        dict: `summarize_confusion` keys (`mIoU`, `aAcc`, `mAcc`, `IoU`,
        `Acc`, `class_names`), `size_mIoU` (`small`, `medium`, `large`) when
        `object_sizes`, `size_thresholds`, `num_images`, `confusion`
        (list of lists) and the settings used.
    """
    import numpy as np

    from keras_segmenter import metrics
    from keras_segmenter.progress import Progress

    def pick(value, attribute, default=None):
        if value is not None:
            return value
        return getattr(info, attribute, default) if info is not None else default

    num_classes = pick(num_classes, "num_classes")
    if num_classes is None:
        raise ValueError("`evaluate` needs `num_classes` or `info`. Received neither.")
    window_size = pick(window_size, "crop_size")
    if window_size is None:
        raise ValueError("`evaluate` needs `window_size` or `info.crop_size`. Received neither.")
    window_stride = window_size - 32 if window_stride is None else window_stride
    ignore_index = pick(ignore_index, "ignore_index", 255)
    class_names = pick(class_names, "class_names")
    base_size = pick(base_size, "base_size") or None
    flip = multi_scale if flip is None else flip
    scales = OFFICIAL_SCALES if multi_scale else (1.0,)
    infer = make_inference_function(
        model, window_size, window_stride, scales, flip, base_size and tuple(base_size), batch_size
    )

    confusion = np.zeros((num_classes, num_classes), np.int64)
    size_confusion = np.zeros((3, num_classes, num_classes), np.int64)
    target = limit
    if target is None and isinstance(dataset, tf.data.Dataset):
        cardinality = int(dataset.cardinality())
        target = cardinality if cardinality >= 0 else None
    progress = Progress(target, unit_name="image", stateful_metrics=["mIoU"]) if verbose else None
    count = 0
    for image, mask in dataset:
        if limit is not None and count >= limit:
            break
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        image = tf.convert_to_tensor(image, tf.float32)
        if tuple(image.shape[:2]) != mask.shape:
            raise ValueError(
                f"Image {count}: image size {tuple(image.shape[:2])} differs from mask {mask.shape}"
            )
        pred = tf.argmax(infer(image), axis=-1, output_type=tf.int32)
        confusion += metrics.confusion_matrix(mask, pred, num_classes, ignore_index).numpy()
        if object_sizes:
            size_confusion += metrics.object_size_confusion(
                mask, pred.numpy(), num_classes, ignore_index
            )
        count += 1
        if progress is not None:
            summary = metrics.summarize_confusion(confusion)
            progress.update(count, [("mIoU", summary["mIoU"])], finalize=False)
    if progress is not None:
        progress.update(count, finalize=True)

    results = metrics.summarize_confusion(
        confusion, list(class_names) if class_names is not None else None
    )
    if object_sizes:
        results["size_mIoU"] = {
            bucket: metrics.summarize_confusion(size_confusion[i])["mIoU"]
            for i, bucket in enumerate(metrics.SIZE_BUCKETS)
        }
        results["size_thresholds"] = list(metrics.SIZE_THRESHOLDS)
    results.update(
        num_images=count,
        confusion=confusion.tolist(),
        window_size=window_size,
        window_stride=window_stride,
        scales=list(scales),
        flip=bool(flip),
        base_size=list(base_size) if base_size else None,
    )
    return results
