"""Evaluation with the paper's protocol: a dataset in, mIoU and friends out.

    from keras_segmenter.evaluation import evaluate

    results = evaluate(model, eval_dataset("ade20k", DIR), get_dataset_info("ade20k"))
    results["mIoU"], results["size_mIoU"]

The one evaluation loop, used by `training/evaluate.py` and by fit's
validation: every image through `inference.make_segment_function` (the
sliding window of `inference.segment`, multi-scale and flip if asked), its
class map accumulated in a confusion matrix (and object-size confusions),
summarized with MMSegmentation's definitions (`keras_segmenter.metrics`).
"""

import numpy as np
import tensorflow as tf

from keras_segmenter import metrics
from keras_segmenter.errors import UserError
from keras_segmenter.inference import OFFICIAL_SCALES, default_window, make_segment_function
from keras_segmenter.progress import Progress


def evaluate(
    model,
    dataset,
    info=None,
    num_classes=None,
    window_size=None,
    window_stride=None,
    multi_scale=False,
    flip=None,
    base_size=None,
    ignore_index=None,
    class_names=None,
    object_sizes=True,
    limit=None,
    batch_size=None,
    verbose=1,
):
    """Evaluates a model with the paper's protocol; ground truth at its own resolution.

    Every image is (optionally) rescaled as the official test pipeline, run
    through sliding-window inference (multi-scale and flip if asked), the
    probabilities come back at the mask's resolution, and the argmax is
    accumulated in a confusion matrix (and in small/medium/large object
    confusions, see `keras_segmenter.metrics.object_size_confusion`).
    Defaults follow the official `segm/eval/miou.py`: window = the model's
    training crop (`model.backbone.image_size`, not the dataset's crop: a
    model trained on 128 crops is evaluated with 128 windows), stride =
    window - 32 (see `inference.default_window`), rescale to `info.base_size`.

    Args:
        model: a Keras segmentation model returning logits.
        dataset: iterable of `(image, mask)`: normalized float image
            `(H, W, 3)` and int mask `(H, W)` or `(H, W, 1)`, e.g. an
            unbatched `tf.data.Dataset` from `keras_segmenter.data.eval_dataset`.
        info: optional `DatasetInfo`-like object with `num_classes`,
            `class_names`, `ignore_index`, `crop_size`, `base_size`.
        num_classes: int, overrides `info.num_classes`.
        window_size: int, defaults to the model's training crop (to
            `info.crop_size` for a model without `backbone.image_size`).
        window_stride: int, defaults to `window_size - 32`.
        multi_scale: bool, scales (0.5, ..., 1.75). Defaults to `False`.
        flip: bool, flip averaging; defaults to `multi_scale`.
        base_size: `(long, short)` official test resize, defaults to
            `info.base_size`; pass `False` to keep the images' own size.
        ignore_index: int, defaults to `info.ignore_index` or 255.
        class_names: sequence of str, defaults to `info.class_names`.
        object_sizes: bool, also compute mIoU by object size. Defaults to `True`.
        limit: optional int, evaluate only the first `limit` pairs.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.
        verbose: 0 silent, 1 progress (a bar on a terminal, a line every 10 % of
            the images otherwise). Defaults to 1.

    Returns:
        dict: `summarize_confusion` keys (`mIoU`, `aAcc`, `mAcc`, `IoU`,
        `Acc`, `class_names`), `size_mIoU` (`small`, `medium`, `large`) when
        `object_sizes`, `size_thresholds`, `num_images`, `confusion`
        (list of lists) and the settings used.
    """

    def pick(value, attribute, default=None):
        if value is not None:
            return value
        return getattr(info, attribute, default) if info is not None else default

    num_classes = pick(num_classes, "num_classes")
    if num_classes is None:
        raise UserError("`evaluate` needs `num_classes` or `info`. Received neither.")
    if getattr(getattr(model, "backbone", None), "image_size", None) is None:
        window_size = pick(window_size, "crop_size")  # no training crop to default to
    window_size, window_stride = default_window(model, window_size, window_stride)
    ignore_index = pick(ignore_index, "ignore_index", 255)
    class_names = pick(class_names, "class_names")
    base_size = pick(base_size, "base_size") or None
    flip = multi_scale if flip is None else flip
    scales = OFFICIAL_SCALES if multi_scale else (1.0,)
    infer = make_segment_function(
        model, window_size, window_stride, scales, flip, base_size and tuple(base_size), batch_size
    )

    confusion = np.zeros((num_classes, num_classes), np.int64)
    size_confusion = np.zeros((3, num_classes, num_classes), np.int64)
    target = limit
    if target is None and isinstance(dataset, tf.data.Dataset):
        cardinality = int(dataset.cardinality())
        target = cardinality if cardinality >= 0 else None
    progress = Progress(target, unit_name="image", stateful_metrics=["mIoU"]) if verbose else None
    count = 0
    for image, mask in dataset:
        if limit is not None and count >= limit:
            break
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        image = tf.convert_to_tensor(image, tf.float32)
        if tuple(image.shape[:2]) != mask.shape:
            raise UserError(
                f"Image {count}: image size {tuple(image.shape[:2])} differs from mask {mask.shape}"
            )
        pred = infer(image)
        confusion += metrics.confusion_matrix(mask, pred, num_classes, ignore_index).numpy()
        if object_sizes:
            size_confusion += metrics.object_size_confusion(
                mask, pred.numpy(), num_classes, ignore_index
            )
        count += 1
        if progress is not None:
            summary = metrics.summarize_confusion(confusion)
            progress.update(count, [("mIoU", summary["mIoU"])], finalize=False)
    if progress is not None:
        progress.update(count, finalize=True)

    results = metrics.summarize_confusion(
        confusion, list(class_names) if class_names is not None else None
    )
    if object_sizes:
        results["size_mIoU"] = {
            bucket: metrics.summarize_confusion(size_confusion[i])["mIoU"]
            for i, bucket in enumerate(metrics.SIZE_BUCKETS)
        }
        results["size_thresholds"] = list(metrics.SIZE_THRESHOLDS)
    results.update(
        num_images=count,
        confusion=confusion.tolist(),
        window_size=window_size,
        window_stride=window_stride,
        scales=list(scales),
        flip=bool(flip),
        base_size=list(base_size) if base_size else None,
    )
    return results
