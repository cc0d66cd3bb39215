"""The ignore-index cross-entropy against NumPy."""

import numpy as np
import pytest

from keras_segmenter.training import SegmentationCrossEntropy


def _numpy_cross_entropy(labels, logits, ignore_index=255):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = labels != ignore_index
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum() / valid.sum()


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


def test_loss_all_ignored_is_zero_and_config_round_trips():
    loss = SegmentationCrossEntropy(ignore_index=3)
    assert float(loss(np.full((1, 2, 2), 3), np.zeros((1, 2, 2, 4), "float32"))) == 0.0
    clone = SegmentationCrossEntropy.from_config(loss.get_config())
    assert clone.ignore_index == 3
