"""`segment`: the paper's sliding-window, multi-scale and flip inference of one
normalized image; `make_segment_function`, its one traced factory; and
`sliding_window_logits`, the window-averaged logits map (for tests and
analysis, which compare logits)."""

import tensorflow as tf

from keras_segmenter.errors import UserError
from keras_segmenter.inference.band_merge import BandMerge, Strip
from keras_segmenter.inference.views import ViewsMerge, stream
from keras_segmenter.inference.windows import (
    as_single_image,
    check_window,
    num_classes_of,
    rescaled_shape,
    window_view,
    windows_per_call,
)


def segment(
    model,
    image,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    base_size=None,
    batch_size=None,
    probabilities=None,
):
    """Class map (and probabilities) of one image by the paper's sliding-window inference.

    The official `segm.model.utils.inference` (Segmenter, ICCV 2021, section
    4.2), for each view of the image: an image whose short side is below
    `window_size` is first upscaled bilinearly so the short side equals the
    window; square windows are taken at `window_anchors` on both axes;
    window logits are summed and divided by the number of windows covering
    each pixel; the averaged logits are resized bilinearly (half-pixel
    centres, no antialiasing, as torch `align_corners=False`) to the input
    size; the softmax comes last. The views are the image rescaled to each
    of `scales` (see `rescaled_shape`) and, with `flip`, their left-right
    mirrors (mirrored back); their probabilities are averaged, and the class
    map is their argmax.

    Memory: windows are merged band by band (see `BandMerge`), so one
    view never holds all window logits nor a `(H, W, K)` logits map. Several
    views (`flip` or more than one scale) advance band by band together, and
    their probabilities are summed in a strip of output rows that leaves as
    soon as every view has finished it (see `ViewsMerge`).

    Runs eagerly or inside a `tf.function` with unknown height and width.

    Args:
        model: a Keras model mapping normalized images `(B, h, w, 3)` to
            logits `(B, h, w, K)`, e.g. a `keras_segmenter.Segmenter`.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image
            (see `ImageNormalization`).
        window_size: int, window side, the training crop size.
        window_stride: int, step between windows.
        scales: sequence of float ratios. Defaults to `(1.0,)`.
        flip: bool, also average the left-right mirrored prediction.
            Defaults to `False`.
        base_size: optional `(long, short)`, rescale as the official test
            pipeline (see `rescaled_shape`); `None` scales the input size.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call` (about 256 MB of logits per call).
        probabilities: optional dtype (e.g. `tf.float32`, `tf.float16`):
            also return the probabilities in it. Defaults to `None` (class
            map only).

    Returns:
        `(classes, probs)`: int32 `(H, W)` class indices, and `(H, W, K)`
        probabilities of dtype `probabilities` (`None` without it).

    Example:

    >>> backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=1,
    ...                           num_heads=2, mlp_dim=32, image_size=32)
    >>> model = ks.Segmenter(backbone, num_classes=4)
    >>> classes, probs = segment(model, np.zeros((20, 70, 3), "float32"), 32, 24,
    ...                          probabilities=tf.float16)
    >>> classes.shape, probs.dtype  # windowed at 32x112, then back to 20x70
    (TensorShape([20, 70]), tf.float16)
    """
    num_classes = num_classes_of(model)
    check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes, batch_size)
    if not scales or any(not (isinstance(s, (int, float)) and s > 0) for s in scales):
        raise UserError(f"`scales` must be positive numbers. Received: scales={scales!r}")
    image = as_single_image(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.stack([height, width])

    def window_args(view):
        view = window_view(view, window_size)
        return model, view, size, window_size, window_stride, batch_size, num_classes

    def classes_of(probs):
        return tf.argmax(probs, axis=-1, output_type=tf.int32)

    views = []
    for scale in scales:
        new_height, new_width = rescaled_shape(height, width, scale, base_size)
        scaled = tf.cond(
            tf.logical_or(new_height != height, new_width != width),
            lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
            lambda: image,
        )
        views += [(scaled, False)] + ([(tf.reverse(scaled, axis=[1]), True)] if flip else [])

    if len(views) == 1:

        def finish(logits):  # softmax is monotonic: the class map is the logits' argmax
            classes = (classes_of(logits),)
            if not probabilities:
                return classes
            return classes + (tf.cast(tf.nn.softmax(logits, axis=-1), probabilities),)

        specs = [(tf.int32, 2)] + ([(tf.as_dtype(probabilities), 3)] if probabilities else [])
        outputs = stream(*window_args(views[0][0]), finish, specs)
        classes, probs = outputs[0], (outputs[1] if probabilities else None)
    else:
        merges = [BandMerge(*window_args(view), Strip(width, flipped)) for view, flipped in views]
        classes, probs = ViewsMerge(merges, size, num_classes, probabilities).run()
    if probs is not None:
        probs = tf.ensure_shape(probs, (None, None, num_classes))
    return classes, probs


def sliding_window_logits(model, image, window_size, window_stride, batch_size=None):
    """Window-averaged logits at the (possibly upscaled) windowing resolution.

    Holds the whole `(H', W', K)` map, so it is meant for tests and analysis;
    `segment` never holds it.

    Args:
        model: a Keras model mapping `(B, h, w, 3)` to logits `(B, h, w, K)`.
        image: float `(H, W, 3)` normalized image.
        window_size: int, window side (the training crop size).
        window_stride: int, step between windows.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.

    Returns:
        float32 `(H', W', K)` averaged logits, where `(H', W')` is
        `upscaled_shape(H, W, window_size)`.
    """
    num_classes = num_classes_of(model)
    check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes, batch_size)
    view = window_view(as_single_image(image), window_size)
    (logits,) = stream(
        model,
        view,
        tf.shape(view)[:2],
        window_size,
        window_stride,
        batch_size,
        num_classes,
        lambda logits: (logits,),
        [(tf.float32, 3)],
    )
    return logits


def make_segment_function(
    model,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    base_size=None,
    batch_size=None,
    probabilities=False,
):
    """A `tf.function` from one normalized image `(H, W, 3)` to its int32 class map `(H, W)`.

    `segment` traced once with unknown height and width, so images of every
    size reuse the same graph: the one traced factory of `segment`.
    `scales=(1.0,)`, `flip=False` and `base_size=None` is plain
    sliding-window inference; the paper's multi-scale inference is
    `scales=OFFICIAL_SCALES, flip=True`.

    Args:
        model: a Keras segmentation model returning logits.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float scale ratios. Defaults to `(1.0,)`.
        flip: bool, flip averaging. Defaults to `False`.
        base_size: optional `(long, short)`, official test resize (see
            `rescaled_shape`).
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.
        probabilities: bool, return float32 `(H, W, K)` probabilities instead
            of the class map. Defaults to `False`.

    Returns:
        A `tf.function` taking a float32 `(H, W, 3)` tensor.
    """
    check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes_of(model), batch_size)
    scales = tuple(float(s) for s in scales)

    @tf.function(  # no autograph: see `make_predictor`
        input_signature=[tf.TensorSpec((None, None, 3), tf.float32)],
        reduce_retracing=True,
        autograph=False,
    )
    def infer(image):
        classes, probs = segment(
            model,
            image,
            window_size,
            window_stride,
            scales,
            flip,
            base_size,
            batch_size,
            tf.float32 if probabilities else None,
        )
        return probs if probabilities else classes

    return infer
