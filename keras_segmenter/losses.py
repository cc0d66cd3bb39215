"""Per-pixel cross-entropy that ignores a label, exact under tf.distribute."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW, is_fusing


@tf.custom_gradient
def _pixel_cross_entropy(labels, logits):
    """Per-pixel `-log softmax(logits)[label]` and its gradient `softmax - one_hot`,
    from one `tf.nn.softmax` (oneDNN's, where TensorFlow runs oneDNN: faster forward
    and backward than the fused SparseSoftmaxCrossEntropyWithLogits kernel,
    docs/benchmarks.md; equally fast with Eigen; equally accurate: max |error| against
    float64 1.6e-6, TensorFlow's 2.0e-6, on random logits of std 3)."""
    probs = tf.nn.softmax(logits)
    # log-sum-exp = max - log(softmax at the max), which is at least 1 / classes: no underflow.
    log_sum_exp = tf.reduce_max(logits, -1) - tf.math.log(tf.reduce_max(probs, -1))
    label_logits = tf.gather(logits, labels[..., None], batch_dims=len(labels.shape))[..., 0]

    def gradient(upstream):
        one_hot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=probs.dtype)
        return None, (probs - one_hot) * upstream[..., None]

    return log_sum_exp - label_logits, gradient


def _label_logits(logits, labels):
    """`logits[..., label]` per pixel. Recorded for Inductor (`is_fusing()`), a sum
    over the classes of the logits where the class is the label: it fuses into
    the loss's other class reductions, where the gradient of a gather (a
    full-size tensor of zeros, then a scatter) would not."""
    if is_fusing():
        classes = ops.arange(logits.shape[-1], dtype=labels.dtype)
        return ops.sum(ops.where(classes == labels[..., None], logits, 0.0), axis=-1)
    return ops.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def _sum_over_replicas(value):
    """Sums `value` over the replicas when called inside `strategy.run`."""
    if not TENSORFLOW:  # tf.distribute only
        return value
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Cross-entropy over the pixels whose label is not `ignore_index`.

    The loss of the official code (torch `CrossEntropyLoss(ignore_index=255)`
    on full-resolution logits): the sum of the per-pixel losses divided by the
    number of valid pixels of the whole *global* batch.

    Under `tf.distribute` each replica sees part of the batch, and Keras sums
    the replicas' gradients. Keras' own losses return `local_mean / replicas`
    for that reason (`keras.src.losses.loss.scale_loss_for_distribution`),
    which is only exact when every replica has the same number of valid
    pixels. This loss instead returns `local_sum / global_count`, the global
    count being an all-reduce over the replicas, so that summing over the
    replicas gives exactly the single-device loss on the global batch; it is
    a scalar, so Keras does not rescale it. (Keras' loss tracker multiplies by
    the number of replicas and averages over them, which reports the global
    loss when replicas hold equal batches, as with `model.fit`.)

    With `class_weights`, torch's `CrossEntropyLoss(weight=...)`: each pixel's
    loss is multiplied by its class's weight and the sum is divided by the sum
    of the valid pixels' weights (again over the global batch).

    Args:
        ignore_index: int, label of pixels that carry no loss. Defaults to 255.
        class_weights: None (every pixel counts once) or one float per class,
            e.g. from `median_frequency_weights`.

    Example:

    >>> loss = SegmentationCrossEntropy()
    >>> labels = np.array([[[0, 255]]], "int32")
    >>> logits = np.zeros((1, 1, 2, 3), "float32")
    >>> round(float(loss(labels, logits)), 4)  # log(3), the ignored pixel is left out
    1.0986
    """

    def __init__(
        self, ignore_index=255, class_weights=None, name="segmentation_cross_entropy", **kwargs
    ):
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):  # (B, H, W, 1) labels
            labels = ops.squeeze(labels, axis=-1)
        logits = ops.cast(y_pred, "float32")
        valid = ops.not_equal(labels, self.ignore_index)
        safe_labels = ops.where(valid, labels, ops.zeros_like(labels))
        if TENSORFLOW and not is_fusing():
            per_pixel = _pixel_cross_entropy(safe_labels, logits)
        else:
            per_pixel = ops.logsumexp(logits, axis=-1) - _label_logits(logits, safe_labels)
        valid = ops.cast(valid, "float32")
        if self.class_weights is not None:
            valid = valid * ops.take(ops.convert_to_tensor(self.class_weights), safe_labels)
        local_sum = ops.sum(per_pixel * valid)
        global_count = ops.stop_gradient(_sum_over_replicas(ops.sum(valid)))
        # Scalar: Keras' reduction leaves it as it is.
        return ops.divide_no_nan(local_sum, global_count)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "ignore_index": self.ignore_index, "class_weights": self.class_weights}


def median_frequency_weights(masks, num_classes, ignore_index=255):
    """Median frequency balancing (Eigen & Fergus 2015), SegNet's CamVid loss weights.

    `weight[c] = median(freq) / freq[c]`, where `freq[c]` is the number of
    pixels of class `c` divided by the number of valid pixels of the images
    in which `c` appears. A class absent from every mask gets weight 1.

    Args:
        masks: iterable of integer label arrays (any shape), `ignore_index`
            for unlabelled pixels.
        num_classes: int.
        ignore_index: int. Defaults to 255.

    Returns:
        A list of `num_classes` floats.

    Example:

    >>> median_frequency_weights([np.array([0, 0, 0, 1]), np.array([0, 2, 255])], 3)
    [0.75, 2.0, 1.0]
    """
    pixels = np.zeros(num_classes)
    image_pixels = np.zeros(num_classes)
    for mask in masks:
        labels = np.asarray(mask).ravel()
        labels = labels[labels != ignore_index]
        counts = np.bincount(labels, minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += (counts > 0) * labels.size
    present = pixels > 0
    if not present.any():
        return [1.0] * num_classes
    freq = np.where(present, pixels / np.maximum(image_pixels, 1), 0.0)
    median = np.median(freq[present])
    return [float(median / f) if f > 0 else 1.0 for f in freq]
