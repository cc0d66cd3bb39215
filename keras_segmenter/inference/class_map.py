"""The class map of a model's logits without its full-resolution `(B, H, W, K)` logits:
the bilinear upsample and the argmax done band by band of output rows (TensorFlow), or
written for a compiler to fuse (`fused_upsampled_classes`, the compiled PyTorch path)."""

import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_segmenter.inference.model_call import backend_call, model_logits
from keras_segmenter.inference.tensor_ops import resize_weights, swap01
from keras_segmenter.inference.torch_compile import CompiledFunction, compiled_forward
from keras_segmenter.layers.backend import TENSORFLOW
from keras_segmenter.models.segmenter import Segmenter

# A band of output rows holds about this many bytes of float32 logits (with 150
# classes and 512 columns: 3 rows of a batch of 4), so it stays in the CPU's cache.
BAND_BYTES = 2**20

# Per Segmenter: a functional model over the same layers, from normalized images to
# the patch-level logits (the decoder's output, before `ResizeAndCrop`).
_PATCH_LOGITS = weakref.WeakKeyDictionary()
# Per Segmenter after `compile_for_torch`: its compiled `patch_classes`.
_COMPILED_CLASSES = weakref.WeakKeyDictionary()


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


def interpolation(size, source):
    """`(lower, upper, weight)` per output position of a bilinear resize of one axis from
    `source` to `size` positions (half-pixel centres, no antialiasing), in `keras.ops`:
    int32 source indices and the float32 weight of `upper`, as PyTorch's CPU kernel
    computes them. Computed in the graph from `arange`, so that a compiler sees the
    indices as arithmetic of its loop counters, not as loads."""
    ops = keras.ops
    scale = np.float32(source) / np.float32(size)
    position = ops.maximum((ops.arange(size, dtype="float32") + 0.5) * scale - 0.5, 0.0)
    lower = ops.cast(ops.floor(position), "int32")
    return lower, ops.minimum(lower + 1, source - 1), position - ops.floor(position)


def fused_upsampled_classes(logits, size, crop):
    """`argmax(crop(resize(logits, size, "bilinear")))` in `keras.ops`, for a compiler.

    Written so that a compiler (Inductor) fuses the row interpolation into
    the class reduction and never writes the `(B, K, H, W)` values: the
    columns are interpolated first, as a matrix product with the
    interpolation weights (`(B, K, h, W)`: small), then each output row is
    `top * (1 - w) + bottom * w` of its two source rows, as PyTorch's kernel
    computes it, and the class is the first one that reaches the maximum.
    Run eagerly it would hold all those values: use it in a compiled graph.
    The product rounds as float32 does, so the classes are the written-out
    argmax's but at near-ties (tests/test_class_map.py).

    Args:
        logits: float `(B, h, w, K)` tensor with static shape (cast to float32).
        size: `(H, W)` ints, the upsampled size.
        crop: `(H', W')` ints at most `size`: the top-left part kept.

    Returns:
        int32 `(B, H', W')` class indices.
    """
    ops = keras.ops
    _, h, w, k = logits.shape
    lower, upper, weight = interpolation(size[1], w)
    # (W, w): row j holds 1 - weight at `lower[j]` and weight at `upper[j]`.
    source = ops.arange(w, dtype="int32")[None, :]
    weight = weight[:, None]
    columns = ops.where(source == lower[:, None], 1 - weight, 0.0) + ops.where(
        source == upper[:, None], weight, 0.0
    )
    # (B, K, h, crop W): the class axis outside, so each row's reduction runs along W.
    values = ops.matmul(
        ops.transpose(ops.cast(logits, "float32"), (0, 3, 1, 2)), ops.transpose(columns)
    )
    values = values[..., : crop[1]]
    lower, upper, weight = (a[: crop[0]] for a in interpolation(size[0], h))
    weight = weight[:, None]
    values = (
        ops.take(values, lower, axis=2) * (1 - weight) + ops.take(values, upper, axis=2) * weight
    )
    best = ops.max(values, axis=1, keepdims=True)
    classes = ops.arange(k, dtype="int32")[:, None, None]
    # The first class at the maximum; `minimum` keeps an index valid even if the compiler
    # evaluated the two reductions' values differently.
    return ops.minimum(ops.min(ops.where(values == best, classes, k), axis=1), k - 1)


def model_classes(model, images):
    """int32 class map `(B, H, W)` of a batch of normalized `images`: the argmax of the
    model's logits, through `upsampled_classes` for a `Segmenter` on TensorFlow and
    `fused_upsampled_classes` compiled after `torch_compile.compile_for_torch`."""
    if not TENSORFLOW and compiled_forward(model) and isinstance(model, Segmenter):
        return backend_call(_compiled_classes(model), images, "int32", images.shape[:-1])
    if not TENSORFLOW or not isinstance(model, Segmenter):
        return tf.argmax(model_logits(model, images), axis=-1, output_type=tf.int32)
    patch_logits = _patch_logits(model)(images, training=False)
    # As Keras casts the input of the model's `ResizeAndCrop` (bfloat16 under mixed_bfloat16).
    patch_logits = tf.cast(patch_logits, model.get_layer("resize").compute_dtype)
    grid = tf.shape(patch_logits)[1:3]
    return upsampled_classes(patch_logits, grid * model.patch_size, tf.shape(images)[1:3])


def patch_classes(model):
    """`keras.ops` function of normalized images to the int32 class map of `model` (a
    Segmenter on a backend with static shapes): its patch logits, then
    `fused_upsampled_classes`. For compiled graphs (`CompiledFunction`)."""

    def classes(images):
        patch_logits = _patch_logits(model)(images, training=False)
        # As Keras casts the input of the model's `ResizeAndCrop` (see `model_classes`).
        patch_logits = keras.ops.cast(patch_logits, model.get_layer("resize").compute_dtype)
        grid = patch_logits.shape[1:3]
        size = (grid[0] * model.patch_size, grid[1] * model.patch_size)
        return fused_upsampled_classes(patch_logits, size, images.shape[1:3])

    return classes


def _compiled_classes(model):
    if model not in _COMPILED_CLASSES:
        _COMPILED_CLASSES[model] = CompiledFunction(patch_classes(model), model)
    return _COMPILED_CLASSES[model]


def _patch_logits(model):
    if model not in _PATCH_LOGITS:
        decoder = model.get_layer("decoder")
        _PATCH_LOGITS[model] = keras.Model(
            model.inputs, decoder.output, name=f"{model.name}_patch_logits"
        )
    return _PATCH_LOGITS[model]
