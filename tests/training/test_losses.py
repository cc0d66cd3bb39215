"""The ignore-index cross-entropy against NumPy."""

import numpy as np
import pytest

from keras_segmenter.layers.backend import fusing
from keras_segmenter.training import SegmentationCrossEntropy


def _numpy_cross_entropy(labels, logits, ignore_index=255, class_weights=None):
    """torch's CrossEntropyLoss(weight=w): sum(w[y] * ce) / sum(w[y]) over the valid pixels."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    picked = np.take_along_axis(log_probs, safe[..., None], -1)[..., 0]
    weight = valid if class_weights is None else np.asarray(class_weights)[safe] * valid
    return -(picked * weight).sum() / weight.sum()


def test_loss_matches_numpy_with_ignored_pixels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 5, 4)).astype("float32") * 3
    labels = rng.integers(0, 4, size=(3, 7, 5)).astype("int32")
    labels[rng.random(labels.shape) < 0.3] = 255
    labels[1] = 255  # one image fully ignored: must not count in the mean
    loss = SegmentationCrossEntropy()(labels, logits)
    assert float(loss) == pytest.approx(_numpy_cross_entropy(labels, logits), rel=1e-5)
    # (B, H, W, 1) labels, other ignore index
    labels2 = np.where(labels == 255, 7, labels)[..., None]
    loss2 = SegmentationCrossEntropy(ignore_index=7)(labels2, logits)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)


def test_loss_recorded_for_inductor_matches_numpy():
    """Inside `fusing()` (the compiled PyTorch step's record) the label's logit is a sum
    over the classes, not a gather: the same loss."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 5, 4)).astype("float32") * 3
    labels = rng.integers(0, 4, size=(2, 6, 5)).astype("int32")
    labels[0, :2] = 255
    with fusing():
        loss = float(SegmentationCrossEntropy()(labels, logits))
    assert loss == pytest.approx(_numpy_cross_entropy(labels, logits), rel=1e-5)


def test_loss_all_ignored_is_zero_and_config_round_trips():
    loss = SegmentationCrossEntropy(ignore_index=3, class_weights=[1, 2, 0.5, 1])
    assert float(loss(np.full((1, 2, 2), 3), np.zeros((1, 2, 2, 4), "float32"))) == 0.0
    clone = SegmentationCrossEntropy.from_config(loss.get_config())
    assert (clone.ignore_index, clone.class_weights) == (3, [1.0, 2.0, 0.5, 1.0])


def test_class_weighted_loss_is_torchs_weighted_mean():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 3, 4)).astype("float32")
    labels = rng.integers(0, 4, size=(2, 5, 3)).astype("int32")
    labels[0, 0] = 255
    weights = np.array([0.25, 4.0, 1.0, 2.0])
    expected = _numpy_cross_entropy(labels, logits, class_weights=weights)
    loss = SegmentationCrossEntropy(class_weights=weights)(labels, logits)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(loss) != pytest.approx(_numpy_cross_entropy(labels, logits), rel=1e-3)


def test_loss_gradient_is_softmax_minus_one_hot_even_for_far_apart_logits():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    # Log-probabilities down to about -400: exp underflows in float32 there.
    logits = (rng.normal(size=(2, 6, 5, 4)) * 40).astype("float32")
    labels = rng.integers(0, 4, size=(2, 6, 5)).astype("int32")
    labels[rng.random(labels.shape) < 0.3] = 255
    weights = np.array([0.5, 2.0, 1.0, 3.0])
    x = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = SegmentationCrossEntropy(class_weights=weights)(labels, x)
    exact = logits.astype("float64")
    assert float(loss) == pytest.approx(_numpy_cross_entropy(labels, exact, 255, weights), rel=1e-6)
    probs = np.exp(exact - exact.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    pixel_weights = weights[safe] * valid
    expected = (probs - np.eye(4)[safe]) * (pixel_weights / pixel_weights.sum())[..., None]
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), expected, rtol=1e-5, atol=1e-9)


def test_median_frequency_weights_by_hand():
    from keras_segmenter.losses import median_frequency_weights

    # class 0: 4 + 1 pixels of 5 + 2 valid ones -> 5/7; class 1: 1 of 5; class 2: 1 of 2; 3: absent.
    masks = [np.array([[0, 0, 0], [0, 1, 255]]), np.array([0, 2, 255, 255])]
    freq = np.array([5 / 7, 1 / 5, 1 / 2])
    expected = list(np.median(freq) / freq) + [1.0]
    assert median_frequency_weights(masks, 4) == pytest.approx(expected)
    assert median_frequency_weights([np.full((2, 2), 255)], 3) == [1.0, 1.0, 1.0]
