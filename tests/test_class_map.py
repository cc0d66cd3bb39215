"""The class map without the full-resolution logits (`inference.class_map`) is exactly the
argmax of the bilinear upsample, ties included."""

import numpy as np
import pytest
import tensorflow as tf

from keras_segmenter.inference.class_map import (
    fused_upsampled_classes,
    model_classes,
    upsampled_classes,
)
from tests.testing import tiny_model


def reference(logits, size, crop):
    """The upsample and argmax written out, as the model and `tf.argmax` do them."""
    full = tf.image.resize(logits, size, "bilinear")[:, : crop[0], : crop[1]]
    return tf.argmax(full, axis=-1, output_type=tf.int32).numpy()


# (batch, grid h, grid w, classes), upsampled size, crop: integer and fractional
# factors, a crop of padding, one source pixel, a size kept as is.
CASES = [
    ((2, 5, 7, 9), (80, 112), (80, 112)),
    ((1, 3, 4, 6), (48, 64), (45, 61)),
    ((1, 1, 1, 4), (16, 16), (16, 16)),
    ((1, 4, 4, 3), (4, 4), (3, 4)),
]


@pytest.mark.parametrize("shape, size, crop", CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_upsampled_classes_is_the_argmax_of_the_upsample(shape, size, crop, ties):
    rng = np.random.default_rng(0)
    # Integer logits in {0, 1, 2}: most pixels have tied classes, which argmax
    # gives to the first; the interpolated values are then exact sums, so a
    # differently rounded upsample would still tie, and only the tie-break is tested.
    values = rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)
    logits = tf.constant(values, tf.float32)
    expected = reference(logits, size, crop)
    # 1 byte: a band per row; 1 MB: one band for these sizes.
    for band_bytes in (1, 2**20):
        got = upsampled_classes(logits, size, crop, band_bytes=band_bytes).numpy()
        np.testing.assert_array_equal(got, expected)


def assert_argmax_but_near_ties(got, full):
    """`got` is the argmax of the float32 logits `full` (`(..., K)`) wherever their best two
    classes are more than float32 round-off apart; elsewhere it is one of those best."""
    best = full.max(axis=-1)
    chosen = np.take_along_axis(full, got[..., None].astype(np.int64), axis=-1)[..., 0]
    assert got.shape == best.shape and got.dtype == np.int32
    np.testing.assert_allclose(chosen, best, rtol=0, atol=1e-5 * (1 + np.abs(best).max()))
    assert (got == full.argmax(axis=-1)).mean() > 0.99


@pytest.mark.parametrize("shape, size, crop", CASES)
def test_fused_upsampled_classes_is_the_argmax_of_the_upsample(shape, size, crop):
    logits = tf.constant(np.random.default_rng(3).standard_normal(shape), tf.float32)
    got = np.asarray(fused_upsampled_classes(logits, size, crop))
    full = tf.image.resize(logits, size, "bilinear")[:, : crop[0], : crop[1]].numpy()
    assert_argmax_but_near_ties(got, full)


def test_upsampled_classes_in_a_graph_and_from_bfloat16():
    logits = tf.constant(np.random.default_rng(1).standard_normal((2, 4, 5, 150)), tf.bfloat16)
    traced = tf.function(lambda x: upsampled_classes(x, (64, 80), (60, 75), band_bytes=2**16))
    expected = reference(tf.cast(logits, tf.float32), (64, 80), (60, 75))
    np.testing.assert_array_equal(traced(logits).numpy(), expected)


@pytest.mark.parametrize(
    "decoder, dtype", [("mask", "float32"), ("mask", "mixed_bfloat16"), ("linear", "float32")]
)
def test_model_classes_is_the_argmax_of_the_model_logits(decoder, dtype):
    model = tiny_model(num_classes=5, decoder=decoder, dtype=dtype)
    # 37 x 45 is not a multiple of the patch: the model pads, upsamples and crops.
    images = tf.constant(np.random.default_rng(2).standard_normal((2, 37, 45, 3)), tf.float32)
    # Both traced: the bfloat16 model's logits differ between eager and traced runs (the
    # graph optimizer's rewrites round differently), and so would a few classes.
    expected = tf.function(
        lambda x: tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
    )(images)
    got = tf.function(lambda x: model_classes(model, x))(images)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
