"""The class map of a model's logits without its full-resolution `(B, H, W, K)` logits:
the bilinear upsample and the argmax done band by band of output rows."""

import weakref

import keras
import tensorflow as tf

from keras_segmenter.inference.model_call import model_logits
from keras_segmenter.inference.tensor_ops import resize_weights, swap01
from keras_segmenter.layers.backend import TENSORFLOW
from keras_segmenter.models.segmenter import Segmenter

# A band of output rows holds about this many bytes of float32 logits (with 150
# classes and 512 columns: 3 rows of a batch of 4), so it stays in the CPU's cache.
BAND_BYTES = 2**20

# Per Segmenter: a functional model over the same layers, from normalized images to
# the patch-level logits (the decoder's output, before `ResizeAndCrop`).
_PATCH_LOGITS = weakref.WeakKeyDictionary()


def upsampled_classes(logits, size, crop=None, band_bytes=BAND_BYTES):
    """`argmax(crop(tf.image.resize(logits, size, "bilinear")))`, band by band of rows.

    The same int32 classes as the upsample and argmax written out, ties
    included: the columns are interpolated first, by `tf.image.resize` to
    `(h, width)` on the `h` source rows (which leaves the rows untouched),
    then each band of output rows between its two source rows with the
    kernel's own `top + (bottom - top) * weight` in float32, so every
    upsampled value is bit for bit the kernel's, and `tf.argmax` breaks
    ties as it does on the whole map (the first class). Only the
    `(B, h, width, K)` column pass and one band of `band_bytes` exist at a
    time, never the `(B, H, W, K)` map.

    Args:
        logits: float `(B, h, w, K)` tensor (cast to float32, as
            `tf.image.resize` computes).
        size: `(H, W)`, the upsampled size (ints or int32 scalars).
        crop: optional `(H', W')` at most `size`: the top-left part kept
            (the model's padding crop). Defaults to `size`.
        band_bytes: int, float32 bytes of one band (at least one row).
            Defaults to `BAND_BYTES`.

    Returns:
        int32 `(B, H', W')` class indices.
    """
    logits = tf.cast(logits, tf.float32)
    crop = size if crop is None else crop
    shape = tf.shape(logits)
    columns = tf.image.resize(logits, tf.stack([shape[1], size[1]]), "bilinear")
    columns = columns[:, :, : crop[1]]
    lower, upper, weight = resize_weights(size[0], shape[1])
    row_bytes = 4 * shape[0] * crop[1] * shape[3]
    rows = tf.maximum(band_bytes // row_bytes, 1)
    count = (crop[0] + rows - 1) // rows

    def band(index, classes):
        start = index * rows
        stop = tf.minimum(start + rows, crop[0])
        top = tf.gather(columns, lower[start:stop], axis=1)
        bottom = tf.gather(columns, upper[start:stop], axis=1)
        values = top + (bottom - top) * tf.reshape(weight[start:stop], [1, -1, 1, 1])
        # (rows, B, W): the bands' rows first, so that they concatenate.
        band_classes = swap01(tf.argmax(values, axis=-1, output_type=tf.int32), 3)
        return index + 1, classes.write(index, band_classes)

    _, classes = tf.while_loop(
        lambda index, _: index < count,
        band,
        (0, tf.TensorArray(tf.int32, count, infer_shape=False)),
        parallel_iterations=1,
    )
    return swap01(classes.concat(), 3)


def model_classes(model, images):
    """int32 class map `(B, H, W)` of a batch of normalized `images`: the argmax of the
    model's logits, through `upsampled_classes` for a `Segmenter` on TensorFlow."""
    if not TENSORFLOW or not isinstance(model, Segmenter):
        return tf.argmax(model_logits(model, images), axis=-1, output_type=tf.int32)
    patch_logits = _patch_logits(model)(images, training=False)
    # As Keras casts the input of the model's `ResizeAndCrop` (bfloat16 under mixed_bfloat16).
    patch_logits = tf.cast(patch_logits, model.get_layer("resize").compute_dtype)
    grid = tf.shape(patch_logits)[1:3]
    return upsampled_classes(patch_logits, grid * model.patch_size, tf.shape(images)[1:3])


def _patch_logits(model):
    if model not in _PATCH_LOGITS:
        decoder = model.get_layer("decoder")
        _PATCH_LOGITS[model] = keras.Model(
            model.inputs, decoder.output, name=f"{model.name}_patch_logits"
        )
    return _PATCH_LOGITS[model]
