"""Sliding-window and multi-scale inference against the official Segmenter code."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_segmenter.convert import load_official
from keras_segmenter.inference import (
    make_segment_function,
    rescaled_shape,
    segment,
    sliding_window_logits,
    upscaled_shape,
    window_anchors,
)
from tests.testing import FIXTURES, FLOORS, max_difference

CASES = ("80x112_ws64_st32", "100x150_ws64_st64", "40x56_ws64_st32")
# Ours against the official float32 probabilities, by the error model in tests/testing.py.
ATOL = max_difference(FLOORS["sliding_probs"], "ours", "torch_fp32")


def probabilities(model, image, window_size, window_stride, **kwargs):
    """`segment`'s float32 probabilities, the official `inference()` output."""
    return segment(model, image, window_size, window_stride, probabilities=tf.float32, **kwargs)[1]


def _case(name):
    data = np.load(FIXTURES / "sliding" / "sliding.npz")
    window = int(name.split("_ws")[1].split("_")[0])
    stride = int(name.split("_st")[1])
    image = data[f"{name}/input"].transpose(0, 2, 3, 1)[0]
    probs = data[f"{name}/probs"].transpose(1, 2, 0)
    return image, probs, window, stride, data[f"{name}/anchors"], data[f"{name}/resized_shape"]


@pytest.fixture(scope="module")
def tiny_mask():
    return load_official(FIXTURES / "tiny_mask")


@pytest.mark.parametrize("name", CASES)
def test_anchors_and_upscaling_match_official(name):
    image, _, window, stride, anchors, resized_shape = _case(name)
    height, width = upscaled_shape(image.shape[0], image.shape[1], window)
    np.testing.assert_array_equal([int(height), int(width)], resized_shape)
    rows = window_anchors(height, window, stride).numpy()
    cols = window_anchors(width, window, stride).numpy()
    np.testing.assert_array_equal([(r, c) for r in rows for c in cols], anchors)


@pytest.mark.parametrize("name", CASES)
def test_sliding_window_matches_official(tiny_mask, name):
    image, expected, window, stride, _, _ = _case(name)
    probs = probabilities(tiny_mask, image[None], window, stride)
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs.numpy(), expected, rtol=0, atol=ATOL)


def test_one_traced_function_serves_every_image_size(tiny_mask):
    infer = make_segment_function(tiny_mask, 64, 32, probabilities=True)
    # The first image twice: the merge adds windows in place, never into what a later call reads.
    for name in ("80x112_ws64_st32", "40x56_ws64_st32", "80x112_ws64_st32"):
        image, expected, _, _, _, _ = _case(name)
        np.testing.assert_allclose(infer(image).numpy(), expected, rtol=0, atol=ATOL)
    image, expected, window, stride, _, _ = _case("100x150_ws64_st64")
    infer = make_segment_function(tiny_mask, window, stride, probabilities=True)
    np.testing.assert_allclose(infer(image).numpy(), expected, rtol=0, atol=ATOL)
    infer(np.zeros((64, 64, 3), "float32"))
    assert infer.experimental_get_tracing_count() == 1


def _bilinear(array, height, width):
    """torch `F.interpolate(mode="bilinear", align_corners=False)` on (H, W, C).

    Source coordinates are computed in float32 as torch (and TF) do; the
    interpolation itself in float64.
    """

    def axis_weights(out_size, in_size):
        scale = np.float32(in_size) / np.float32(out_size)
        src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, in_size - 1), (src - low).astype(np.float64)

    y0, y1, wy = axis_weights(height, array.shape[0])
    x0, x1, wx = axis_weights(width, array.shape[1])
    rows = array[y0] * (1 - wy)[:, None, None] + array[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _official_inference(predict, image, window, stride):
    """NumPy transcription of segm.model.utils.inference for one unflipped image."""
    height, width = image.shape[:2]
    resized = image
    if min(height, width) < window:
        if height < width:
            size = (window, int(width / height * window))
        else:
            size = (int(height / width * window), window)
        resized = _bilinear(image, *size)
    rh, rw = resized.shape[:2]
    rows = [a for a in range(0, rh, stride) if a < rh - window] + [rh - window]
    cols = [a for a in range(0, rw, stride) if a < rw - window] + [rw - window]
    total, count = 0.0, np.zeros((rh, rw, 1))
    for r in rows:
        for c in cols:
            logits = predict(resized[r : r + window, c : c + window])
            total = total + np.pad(logits, ((r, rh - r - window), (c, rw - c - window), (0, 0)))
            count[r : r + window, c : c + window] += 1
    logits = _bilinear(total / count, height, width)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def pointwise_model():
    """A per-pixel affine map plus a position-dependent term (not translation invariant)."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 5)).astype("float32")
    inputs = keras.Input((None, None, 3))
    ramp = keras.layers.Lambda(lambda x: tf.cumsum(x, axis=2) * 0.05)(inputs)
    logits = keras.layers.Dense(5, use_bias=False)(keras.layers.Add()([inputs, ramp]))
    model = keras.Model(inputs, logits)
    model.layers[-1].kernel.assign(kernel)

    def predict(window):
        x = window.astype(np.float64)
        x = x + np.cumsum(x, axis=1) * 0.05
        return x @ kernel.astype(np.float64)

    return model, predict


@pytest.mark.parametrize(
    "shape,window,stride,batch_size",
    [
        ((50, 70), 24, 16, 3),
        ((24, 24), 24, 8, 3),
        ((30, 19), 24, 24, 3),
        ((61, 44), 32, 7, 3),
        ((61, 44), 32, 7, 1),  # one window column per merged block
        ((97, 83), 24, 20, 2),  # last anchors 4 px after the previous ones
        ((9, 70), 24, 10, 2),  # upscaled 2.7x: each block owns a few output rows
    ],
)
def test_pipeline_matches_numpy_transcription(pointwise_model, shape, window, stride, batch_size):
    model, predict = pointwise_model
    image = np.random.default_rng(1).normal(size=shape + (3,)).astype("float32")
    probs = probabilities(model, image, window, stride, batch_size=batch_size)
    expected = _official_inference(predict, image.astype(np.float64), window, stride)
    # float32 against a float64 transcription: observed max 2.3e-7.
    np.testing.assert_allclose(probs.numpy(), expected, rtol=0, atol=5e-7)


def test_flip_averages_mirrored_prediction(pointwise_model):
    model, _ = pointwise_model
    image = np.random.default_rng(2).normal(size=(40, 57, 3)).astype("float32")
    plain = probabilities(model, image, 32, 20).numpy()
    mirrored = probabilities(model, image[:, ::-1], 32, 20).numpy()[:, ::-1]
    assert np.abs(plain - mirrored).max() > 1e-2  # the model is not mirror symmetric
    both = probabilities(model, image, 32, 20, flip=True).numpy()
    np.testing.assert_allclose(both, (plain + mirrored) / 2, rtol=0, atol=1e-6)
    # Flip averaging makes the prediction mirror-equivariant.
    both_of_mirror = probabilities(model, image[:, ::-1], 32, 20, flip=True).numpy()
    np.testing.assert_allclose(both_of_mirror[:, ::-1], both, rtol=0, atol=1e-6)


def test_multi_scale_averages_scales(pointwise_model):
    model, _ = pointwise_model
    image = np.random.default_rng(3).normal(size=(48, 64, 3)).astype("float32")
    scales = (0.5, 1.0, 1.5)
    multi = probabilities(model, image, 32, 16, scales=scales, flip=False).numpy()
    expected = 0
    for scale in scales:
        size = (int(48 * scale + 0.5), int(64 * scale + 0.5))
        scaled = tf.image.resize(image, size, "bilinear")
        # As the official merge_windows: logits resized to the input size, then softmax.
        logits = sliding_window_logits(model, scaled, 32, 16)
        expected += tf.nn.softmax(tf.image.resize(logits, (48, 64), "bilinear")).numpy()
    np.testing.assert_allclose(multi, expected / len(scales), rtol=0, atol=1e-6)
    assert multi.shape == (48, 64, 5)


def test_traced_multi_scale_flip_merges_views_band_by_band(pointwise_model):
    """Tall image: every view has several bands, the views' strip moves down the image."""
    model, _ = pointwise_model
    image = np.random.default_rng(4).normal(size=(150, 40, 3)).astype("float32")
    scales = (0.5, 1.0, 1.5)
    expected = 0
    for scale in scales:
        size = (int(150 * scale + 0.5), int(40 * scale + 0.5))
        scaled = tf.image.resize(image, size, "bilinear")
        for flipped in (False, True):
            view = scaled[:, ::-1] if flipped else scaled
            logits = tf.image.resize(sliding_window_logits(model, view, 32, 16), (150, 40))
            probs = tf.nn.softmax(logits).numpy()
            expected += probs[:, ::-1] if flipped else probs
    expected /= 2 * len(scales)
    infer = make_segment_function(
        model, 32, 16, scales=scales, flip=True, batch_size=1, probabilities=True
    )
    np.testing.assert_allclose(infer(image).numpy(), expected, rtol=0, atol=1e-6)
    classes, probs = segment(model, image, 32, 16, scales, True, probabilities=tf.float16)
    assert probs.dtype == tf.float16 and probs.shape == (150, 40, 5)
    np.testing.assert_allclose(probs.numpy(), expected, rtol=0, atol=2.5e-4)
    margin = np.sort(expected, -1)[..., -1] - np.sort(expected, -1)[..., -2]
    sure = margin > 1e-5  # the class map is the argmax of the float32 average
    np.testing.assert_array_equal(classes.numpy()[sure], expected.argmax(-1)[sure])


def test_official_rescale_sizes():
    # mmcv rescale_size with img_scale (2048 r, 512 r), as the ADE20K test pipeline.
    def mmcv(h, w, r):
        factor = min(int(2048 * r) / max(h, w), int(512 * r) / min(h, w))
        return int(h * factor + 0.5), int(w * factor + 0.5)

    for h, w in [(512, 683), (375, 500), (1600, 2200), (300, 1500), (1024, 2048)]:
        for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75):
            got = rescaled_shape(h, w, r, base_size=(2048, 512))
            assert (int(got[0]), int(got[1])) == mmcv(h, w, r), (h, w, r)
    assert [int(v) for v in rescaled_shape(40, 57, 0.75)] == [30, 43]


def test_bad_arguments_are_named(pointwise_model):
    model, _ = pointwise_model
    image = np.zeros((32, 32, 3), "float32")
    with pytest.raises(ValueError, match="window_size"):
        probabilities(model, image, 0, 1)
    with pytest.raises(ValueError, match="window_stride"):
        probabilities(model, image, 16, 17)
    with pytest.raises(ValueError, match="image.shape"):
        probabilities(model, np.zeros((32, 32), "float32"), 16, 8)
    with pytest.raises(ValueError, match="image.shape"):
        probabilities(model, np.zeros((2, 32, 32, 3), "float32"), 16, 8)
    with pytest.raises(ValueError, match="scales"):
        probabilities(model, image, 16, 8, scales=(1.0, -1.0))
