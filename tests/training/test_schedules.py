"""The poly learning-rate schedule."""

import pytest

from keras_segmenter.training import poly_learning_rate, poly_schedule


def test_poly_schedule_matches_formula():
    lr0, total = 1e-3, 160_000
    schedule = poly_schedule(lr0, total)
    for it in (0, 1, 999, 80_000, 159_999, 160_000, 200_000):
        expected = (lr0 - 1e-5) * (1 - min(it, total) / total) ** 0.9 + 1e-5
        assert float(schedule(it)) == pytest.approx(expected, rel=1e-5)
        assert poly_learning_rate(lr0, it, total) == pytest.approx(expected, rel=1e-12)
    assert float(schedule(0)) == pytest.approx(lr0)
    assert float(schedule(total)) == pytest.approx(1e-5)


def test_poly_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="total_iterations"):
        poly_schedule(1e-3, 0)
    with pytest.raises(ValueError, match="learning_rate"):
        poly_schedule(-1.0, 10)
