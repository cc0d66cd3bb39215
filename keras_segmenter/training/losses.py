"""Per-pixel cross-entropy that ignores a label, exact under tf.distribute."""

import keras
import tensorflow as tf
from keras import ops


def _sum_over_replicas(value):
    """Sums `value` over the replicas when called inside `strategy.run`."""
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

    Args:
        ignore_index: int, label of pixels that carry no loss. Defaults to 255.

    Example:

    >>> loss = SegmentationCrossEntropy()
    >>> labels = np.array([[[0, 255]]], "int32")
    >>> logits = np.zeros((1, 1, 2, 3), "float32")
    >>> round(float(loss(labels, logits)), 4)  # log(3), the ignored pixel is left out
    1.0986
    """

    def __init__(self, ignore_index=255, name="segmentation_cross_entropy", **kwargs):
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.ignore_index = ignore_index

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):  # (B, H, W, 1) labels
            labels = ops.squeeze(labels, axis=-1)
        logits = ops.cast(y_pred, "float32")
        valid = ops.not_equal(labels, self.ignore_index)
        safe_labels = ops.where(valid, labels, ops.zeros_like(labels))
        per_pixel = ops.sparse_categorical_crossentropy(safe_labels, logits, from_logits=True)
        valid = ops.cast(valid, "float32")
        local_sum = ops.sum(per_pixel * valid)
        global_count = ops.stop_gradient(_sum_over_replicas(ops.sum(valid)))
        # Scalar: Keras' reduction leaves it as it is.
        return ops.divide_no_nan(local_sum, global_count)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "ignore_index": self.ignore_index}
