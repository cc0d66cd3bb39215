"""uint8 RGB images in: the graph of `predict` and the SavedModel export
(`segment_image`), and `predict`'s cached traced predictor (`make_predictor`)."""

import weakref

import tensorflow as tf

from keras_segmenter.inference.class_map import model_classes
from keras_segmenter.inference.model_call import model_logits
from keras_segmenter.inference.segment import segment
from keras_segmenter.inference.windows import check_window, default_window


def segment_image(
    model,
    normalize,
    image,
    window_size,
    window_stride,
    whole=False,
    batch_size=None,
    probabilities=False,
):
    """Class map and, if asked, probabilities of one RGB image, with TensorFlow ops.

    The graph shared by `predict` and the SavedModel export: normalization,
    then the sliding window of `segment` (which never holds all
    window logits nor a full-resolution `(H, W, K)` float map) or, with
    `whole=True`, one pass of the model over the whole image (which holds
    that map only when the probabilities are asked for).

    Probabilities come as float16: 2 bytes per pixel and class (a 12 MP
    photo with 150 classes: 3.6 GB), half of float32, and nothing a user
    needs is lost: the error is below 2.5e-4 (half a float16 step below 1),
    probabilities down to 6e-8 stay non-zero (so log-probabilities and
    entropies stay finite), and the class map is the float32 argmax.
    uint8 quantization would halve it again but round every probability
    below 0.002 to zero.

    Args:
        model: a Keras segmentation model returning logits.
        normalize: maps [0, 255] RGB to the model's input: the
            normalization of the model's preprocessor
            (`preprocessor_of(model).normalize`).
        image: `(H, W, 3)` tensor with values in [0, 255] (uint8 or float).
        window_size: int, sliding window side.
        window_stride: int, step between windows.
        whole: bool, run the model on the whole image instead of windows.
        batch_size: int, windows per model call (default: see
            `inference.windows_per_call`).
        probabilities: bool, also return the probabilities.

    Returns:
        `(classes, probs)`: int32 `(H, W)`, and float16 `(H, W, K)` or `None`.
    """
    normalized = tf.cast(normalize(image[None]), tf.float32)[0]
    dtype = tf.float16 if probabilities else None
    if not whole:
        return segment(
            model,
            normalized,
            window_size,
            window_stride,
            batch_size=batch_size,
            probabilities=dtype,
        )
    if not probabilities:  # no (H, W, K) map: see `class_map.model_classes`
        return model_classes(model, normalized[None])[0], None
    probs = tf.nn.softmax(model_logits(model, normalized[None])[0], axis=-1)
    return tf.argmax(probs, axis=-1, output_type=tf.int32), tf.cast(probs, dtype)


# One traced predictor per (model, settings): repeated calls reuse the graph.
_PREDICTORS = weakref.WeakKeyDictionary()


def make_predictor(
    model, window_size=None, window_stride=None, whole=False, batch_size=None, probabilities=False
):
    """A `tf.function` from a uint8 RGB image `(H, W, 3)` to its int32 class map `(H, W)`.

    With `probabilities=True` it returns `(class map, float16 probabilities)`.
    Traced once for unknown height and width, and kept per model and
    settings, so repeated calls reuse the graph. Arguments as in
    `keras_segmenter.predict.predict`.
    """
    from keras_segmenter.models.segmenter_preprocessor import preprocessor_of

    if whole:
        window_size = window_stride = 1
    else:
        window_size, window_stride = default_window(model, window_size, window_stride)
    check_window(window_size, window_stride, batch_size)
    key = (window_size, window_stride, bool(whole), batch_size, bool(probabilities))
    cache = _PREDICTORS.setdefault(model, {})
    if key not in cache:
        normalize = preprocessor_of(model).normalize

        # autograph=False: the inference writes its loops as `tf.while_loop`, so autograph's
        # source conversion only added to the trace time (docs/benchmarks.md).
        @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)], autograph=False)
        def predictor(image):
            classes, probs = segment_image(
                model,
                normalize,
                image,
                window_size,
                window_stride,
                whole,
                batch_size,
                probabilities,
            )
            return (classes, probs) if probabilities else classes

        cache[key] = predictor
    return cache[key]
