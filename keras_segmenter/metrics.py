"""Segmentation metrics with MMSegmentation's definitions.

The confusion matrix has ground truth on rows and prediction on columns.
From it, per class: IoU = TP / (TP + FP + FN) and Acc = TP / (TP + FN); a
class whose union (resp. ground-truth area) is empty gets NaN and is left
out of the means, as `mmseg.core.evaluation.mean_iou` does. mIoU and mAcc are
the NaN-ignoring means, aAcc is the fraction of valid pixels predicted right.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW

# COCO's object-area limits (pixels), applied to ground truth at its original
# resolution: ADE20K images (short side about 512) are close to COCO's in size.
SIZE_THRESHOLDS = (32**2, 96**2)
SIZE_BUCKETS = ("small", "medium", "large")


def confusion_matrix(y_true, y_pred, num_classes, ignore_index=255, sample_weight=None):
    """Confusion matrix of integer label maps, in TensorFlow.

    Pixels whose label equals `ignore_index` or lies outside
    `[0, num_classes)` are left out. Predictions must be in
    `[0, num_classes)` on the counted pixels.

    Args:
        y_true: int tensor of labels, any shape.
        y_pred: int tensor of predicted class ids, the shape of `y_true`.
        num_classes: int K.
        ignore_index: int, label to skip. Defaults to 255.
        sample_weight: optional float weights broadcastable to `y_true`.

    Returns:
        `(K, K)` tensor, rows = ground truth, columns = prediction: int64
        pixel counts, or float64 summed weights when `sample_weight` is given.
    """
    y_true = tf.cast(y_true, tf.int64)
    if sample_weight is not None:
        sample_weight = tf.reshape(
            tf.broadcast_to(tf.cast(sample_weight, tf.float64), tf.shape(y_true)), [-1]
        )
    y_true = tf.reshape(y_true, [-1])
    y_pred = tf.reshape(tf.cast(y_pred, tf.int64), [-1])
    valid = (y_true != ignore_index) & (y_true >= 0) & (y_true < num_classes)
    checks = [
        tf.debugging.assert_equal(
            tf.size(y_true), tf.size(y_pred), message="y_true and y_pred differ in size"
        ),
    ]
    with tf.control_dependencies(checks):
        y_pred_valid = tf.boolean_mask(y_pred, valid)
    checks = [
        tf.debugging.assert_non_negative(y_pred_valid, message="y_pred has negative class ids"),
        tf.debugging.assert_less(
            y_pred_valid,
            tf.constant(num_classes, tf.int64),
            message=f"y_pred has class ids >= num_classes ({num_classes})",
        ),
    ]
    with tf.control_dependencies(checks):
        index = tf.boolean_mask(y_true, valid) * num_classes + y_pred_valid
    weights = None
    if sample_weight is not None:
        weights = tf.boolean_mask(sample_weight, valid)
    counts = tf.math.bincount(
        tf.cast(index, tf.int32),
        weights=weights,
        minlength=num_classes * num_classes,
        maxlength=num_classes * num_classes,
        dtype=tf.int64 if weights is None else tf.float64,
    )
    return tf.reshape(counts, (num_classes, num_classes))


def _count_dtype():
    """float64, or float32 on JAX without `jax_enable_x64` (exact counts to 2**24 a cell)."""
    if keras.config.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _confusion_in_keras_ops(y_true, y_pred, num_classes, ignore_index, sample_weight):
    """`confusion_matrix` for the JAX and PyTorch backends (traceable: no boolean
    masks, no assertions): summed weights in `_count_dtype()`."""
    y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "int32"), (-1,))
    valid = (y_true != ignore_index) & (y_true >= 0) & (y_true < num_classes)
    weights = ops.cast(valid, _count_dtype())
    if sample_weight is not None:
        weights = weights * ops.reshape(ops.cast(sample_weight, weights.dtype), (-1,))
    index = ops.where(valid, y_true * num_classes + y_pred, 0)
    counts = ops.segment_sum(weights, index, num_segments=num_classes * num_classes)
    return ops.reshape(counts, (num_classes, num_classes))


def summarize_confusion(confusion, class_names=None):
    """MMSegmentation metrics from a `(K, K)` confusion matrix (NumPy).

    Args:
        confusion: array `(K, K)`, rows = ground truth, columns = prediction.
        class_names: optional sequence of K names, copied to the output.

    Returns:
        dict with `mIoU`, `aAcc`, `mAcc` (floats, NaN when undefined), `IoU`
        and `Acc` (per-class lists, NaN for classes absent from both
        ground truth and prediction, resp. from ground truth), and
        `class_names` when given.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"`confusion` must be square (K, K). Received: shape={confusion.shape}")
    if class_names is not None and len(class_names) != confusion.shape[0]:
        raise ValueError(
            f"`class_names` must have {confusion.shape[0]} entries. "
            f"Received: {len(class_names)} names"
        )
    true_positive = np.diag(confusion)
    label_area = confusion.sum(1)
    union = label_area + confusion.sum(0) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        acc = np.where(label_area > 0, true_positive / label_area, np.nan)
    total = label_area.sum()
    with np.errstate(invalid="ignore"):
        summary = {
            "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "aAcc": float(true_positive.sum() / total) if total > 0 else float("nan"),
            "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
        }
    if class_names is not None:
        summary["class_names"] = list(class_names)
    return summary


@keras.saving.register_keras_serializable(package="keras_segmenter")
class MeanIoU(keras.metrics.Metric):
    """Mean IoU over classes, accumulated as an exact confusion matrix.

    MMSegmentation semantics: IoU per class is TP / (TP + FP + FN) and the
    mean is taken over classes whose union is non-empty. Pixels labelled
    `ignore_index` (or outside `[0, num_classes)`) are skipped. The
    confusion matrix is a float64 variable summed across replicas, so the
    result is the same under `tf.distribute` strategies and across batches;
    float sample weights are accumulated as they are (unlike
    `keras.metrics.MeanIoU`, whose int confusion truncates them).

    Args:
        num_classes: int K.
        ignore_index: int, label to skip. Defaults to 255.
        name: str. Defaults to `"mean_iou"`.
        dtype: dtype of `result()`. Defaults to float32.

    Example:

    >>> metric = MeanIoU(num_classes=3)
    >>> metric.update_state(np.array([[0, 1, 255]]), np.array([[0, 2, 1]]))
    >>> round(float(metric.result()), 4)  # class 0: 1/1, 1: 0/1, 2: 0/1
    0.3333
    """

    def __init__(self, num_classes, ignore_index=255, name="mean_iou", dtype=None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}"
            )
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes),
            initializer="zeros",
            dtype=_count_dtype(),
            aggregation="sum",
            name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch.

        Args:
            y_true: int labels `(B, H, W)` or `(B, H, W, 1)`.
            y_pred: scores `(B, H, W, K)` (logits or probabilities, argmax is
                taken) or class ids `(B, H, W)` / `(B, H, W, 1)`.
            sample_weight: optional weights broadcastable to `(B, H, W)`.
        """
        if not TENSORFLOW:
            return self._update_state_in_keras_ops(y_true, y_pred, sample_weight)
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_true.shape.rank is not None and y_true.shape.rank >= 1 and y_true.shape[-1] == 1:
            y_true = tf.squeeze(y_true, -1)
        if y_pred.shape.rank == y_true.shape.rank + 1:
            if y_pred.shape[-1] == 1 and self.num_classes > 1:
                y_pred = tf.squeeze(y_pred, -1)
            else:
                y_pred = tf.argmax(y_pred, axis=-1)
        if sample_weight is not None:
            sample_weight = tf.convert_to_tensor(sample_weight)
            if sample_weight.shape.rank == y_true.shape.rank + 1 and sample_weight.shape[-1] == 1:
                sample_weight = tf.squeeze(sample_weight, -1)
            sample_weight = tf.broadcast_to(tf.cast(sample_weight, tf.float64), tf.shape(y_true))
        batch = confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index, sample_weight)
        self.confusion.assign_add(tf.cast(batch, tf.float64))

    def _update_state_in_keras_ops(self, y_true, y_pred, sample_weight):
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        if len(y_true.shape) >= 1 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        if len(y_pred.shape) == len(y_true.shape) + 1:
            if y_pred.shape[-1] == 1 and self.num_classes > 1:
                y_pred = ops.squeeze(y_pred, -1)
            else:
                y_pred = ops.argmax(y_pred, axis=-1)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            if len(sample_weight.shape) == len(y_true.shape) + 1 and sample_weight.shape[-1] == 1:
                sample_weight = ops.squeeze(sample_weight, -1)
            sample_weight = ops.broadcast_to(sample_weight, ops.shape(y_true))
        batch = _confusion_in_keras_ops(
            y_true, y_pred, self.num_classes, self.ignore_index, sample_weight
        )
        self.confusion.assign_add(ops.cast(batch, self.confusion.dtype))

    def result(self):
        if not TENSORFLOW:
            confusion = ops.convert_to_tensor(self.confusion)
            true_positive = ops.diagonal(confusion)
            union = ops.sum(confusion, 0) + ops.sum(confusion, 1) - true_positive
            present = union > 0
            iou = ops.where(present, true_positive / ops.where(present, union, 1.0), 0.0)
            return ops.cast(ops.sum(iou) / ops.sum(ops.cast(present, iou.dtype)), self.dtype)
        confusion = tf.convert_to_tensor(self.confusion)
        true_positive = tf.linalg.diag_part(confusion)
        union = tf.reduce_sum(confusion, 0) + tf.reduce_sum(confusion, 1) - true_positive
        present = union > 0
        iou = tf.where(present, true_positive / tf.where(present, union, 1.0), 0.0)
        mean = tf.reduce_sum(iou) / tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(mean, self.dtype)

    def results(self, class_names=None):
        """All metrics as Python numbers (eager only), see `summarize_confusion`."""
        return summarize_confusion(keras.ops.convert_to_numpy(self.confusion), class_names)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, self.confusion.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


def connected_components(mask, connectivity=8):
    """Labels the connected regions of equal value in a 2-D integer map.

    Union-find in NumPy: every pair of neighbouring pixels with the same
    value is an edge; roots are hooked onto the smallest neighbouring root
    and paths are compressed until no edge joins two roots.

    Args:
        mask: int array `(H, W)`.
        connectivity: 4 (edge neighbours) or 8 (edges and corners).
            Defaults to 8.

    Returns:
        int64 array `(H, W)`: pixels share a value iff they lie in the same
        region. The values are pixel indices, not consecutive.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must be 2-D (H, W). Received: shape={mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"`connectivity` must be 4 or 8. Received: connectivity={connectivity!r}")
    height, width = mask.shape
    index = np.arange(height * width).reshape(height, width)
    shifts = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    starts, ends = [], []
    for dy, dx in shifts:
        # Pixel (y, x) and its neighbour (y + dy, x + dx), both inside the map.
        x0, x1 = max(0, -dx), width - max(0, dx)
        same = mask[: height - dy, x0:x1] == mask[dy:, x0 + dx : x1 + dx]
        starts.append(index[: height - dy, x0:x1][same])
        ends.append(index[dy:, x0 + dx : x1 + dx][same])
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    parent = np.arange(height * width)
    while True:
        root_a, root_b = parent[starts], parent[ends]
        apart = root_a != root_b
        if not apart.any():
            return parent.reshape(height, width)
        high = np.maximum(root_a[apart], root_b[apart])
        low = np.minimum(root_a[apart], root_b[apart])
        np.minimum.at(parent, high, low)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def object_size_buckets(y_true, ignore_index=255, thresholds=SIZE_THRESHOLDS, connectivity=8):
    """Size bucket of the ground-truth object under each pixel.

    ADE20K semantic masks have no instance ids, so an object is a connected
    component (8-connectivity by default) of one class in the ground truth.
    Its area in pixels (at the ground truth's resolution) gives the bucket:
    0 small (area < thresholds[0]), 1 medium (thresholds[0] <= area <
    thresholds[1]), 2 large (area >= thresholds[1]); COCO's 32^2 and 96^2 by
    default. Ignored pixels get -1.

    Args:
        y_true: int array `(H, W)` of labels.
        ignore_index: int, label with no object. Defaults to 255.
        thresholds: (small_max, medium_max) areas in pixels.
        connectivity: 4 or 8. Defaults to 8.

    Returns:
        int8 array `(H, W)` of bucket ids.
    """
    y_true = np.asarray(y_true)
    labels = connected_components(y_true, connectivity).ravel()
    _, inverse, areas = np.unique(labels, return_inverse=True, return_counts=True)
    area = areas[inverse].reshape(y_true.shape)
    buckets = np.digitize(area, thresholds).astype(np.int8)
    buckets[y_true == ignore_index] = -1
    return buckets


def object_size_confusion(
    y_true, y_pred, num_classes, ignore_index=255, thresholds=SIZE_THRESHOLDS, connectivity=8
):
    """Confusion matrices restricted to small, medium and large objects.

    For each bucket the confusion matrix counts only the pixels inside
    ground-truth objects of that size (see `object_size_buckets`): a pixel
    of a small car predicted as road is a false negative for car and a
    false positive for road in the "small" matrix. The per-bucket mIoU of
    the paper's Table 4 is `summarize_confusion(matrix)["mIoU"]` over the
    matrices summed across the dataset.

    Args:
        y_true: int array `(H, W)` of labels.
        y_pred: int array `(H, W)` of predicted class ids.
        num_classes: int K.
        ignore_index: int. Defaults to 255.
        thresholds: (small_max, medium_max) object areas in pixels.
        connectivity: 4 or 8. Defaults to 8.

    Returns:
        int64 array `(3, K, K)`: small, medium, large.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(
            "`y_true` and `y_pred` must be 2-D of the same shape. "
            f"Received: {y_true.shape} and {y_pred.shape}"
        )
    buckets = object_size_buckets(y_true, ignore_index, thresholds, connectivity)
    valid = (buckets >= 0) & (y_true >= 0) & (y_true < num_classes)
    # Flat index in int64 (the int8 buckets times K would overflow from K = 64 on).
    index = np.ravel_multi_index(
        (buckets[valid], y_true[valid], y_pred[valid]), (3, num_classes, num_classes)
    )
    counts = np.bincount(index, minlength=3 * num_classes * num_classes)
    return counts.reshape(3, num_classes, num_classes)


def make_metric(num_classes, ignore_index):
    """The mIoU that training reports: `MeanIoU` named `"mIoU"`."""
    return MeanIoU(num_classes, ignore_index=ignore_index, name="mIoU")
