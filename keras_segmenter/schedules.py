"""The "poly" learning-rate schedule of Segmenter (paper section 4.2)."""

import keras

END_LEARNING_RATE = 1e-5
POWER = 0.9


def poly_schedule(
    learning_rate, total_iterations, end_learning_rate=END_LEARNING_RATE, power=POWER
):
    """Poly decay stepped every iteration, as the official Segmenter code.

    The official `PolynomialLR` (`segm/optim/scheduler.py`, stepped after
    every iteration, no warm-up as the official `train.py` sets it): step `it`
    (0-based) uses `lr(it) = (lr0 - end) * (1 - it / total) ** power + end`,
    and `end` after `total` iterations. Keras' `PolynomialDecay` evaluated
    at `optimizer.iterations` computes exactly this (its `cycle=False` clips
    `it` to `total`), in float32; `tests/training/test_train_steps.py` checks it
    against the official rates.

    Args:
        learning_rate: float, lr0.
        total_iterations: int, number of training iterations.
        end_learning_rate: float. Defaults to 1e-5.
        power: float. Defaults to 0.9.

    Example:

    >>> schedule = poly_schedule(1e-3, 100)
    >>> round(float(schedule(50)), 8) == round(poly_learning_rate(1e-3, 50, 100), 8)
    True
    """
    if learning_rate <= 0:
        raise ValueError(
            f"`learning_rate` must be positive. Received: learning_rate={learning_rate}"
        )
    if total_iterations < 1:
        raise ValueError(
            f"`total_iterations` must be >= 1. Received: total_iterations={total_iterations}"
        )
    return keras.optimizers.schedules.PolynomialDecay(
        learning_rate,
        decay_steps=total_iterations,
        end_learning_rate=end_learning_rate,
        power=power,
    )


def poly_learning_rate(
    learning_rate, iteration, total_iterations, end_learning_rate=END_LEARNING_RATE, power=POWER
):
    """The poly formula in plain Python (the reference for `poly_schedule`)."""
    iteration = min(iteration, total_iterations)
    return (learning_rate - end_learning_rate) * (
        1 - iteration / total_iterations
    ) ** power + end_learning_rate
