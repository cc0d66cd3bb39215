"""MeanIoU, confusion matrices and object-size buckets against NumPy references."""

import collections
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_segmenter.metrics import (
    MeanIoU,
    confusion_matrix,
    connected_components,
    object_size_buckets,
    object_size_confusion,
    summarize_confusion,
)
from tests.testing import REPO


def mmseg_mean_iou(results, gt_seg_maps, num_classes, ignore_index=255):
    """Transcription of mmseg.core.evaluation.mean_iou (total_area_to_metrics)."""
    total = np.zeros((4, num_classes))
    for pred, label in zip(results, gt_seg_maps):
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
        intersect = pred[pred == label]
        bins = np.arange(num_classes + 1)
        area_intersect = np.histogram(intersect, bins=bins)[0]
        area_pred = np.histogram(pred, bins=bins)[0]
        area_label = np.histogram(label, bins=bins)[0]
        total += [area_intersect, area_pred + area_label - area_intersect, area_pred, area_label]
    intersect, union, _, label = total
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
        acc = intersect / label
    return {
        "aAcc": intersect.sum() / label.sum(),
        "IoU": iou,
        "Acc": acc,
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
    }


def random_batch(rng, batch=3, size=(17, 23), num_classes=6, absent=(2, 4)):
    """Labels and predictions that never use the `absent` classes, with ignore pixels."""
    present = [c for c in range(num_classes) if c not in absent]
    labels = rng.choice(present, size=(batch,) + size)
    preds = np.where(rng.random(labels.shape) < 0.6, labels, rng.choice(present, labels.shape))
    labels[rng.random(labels.shape) < 0.15] = 255
    return labels.astype("int32"), preds.astype("int32")


def assert_summary_equal(summary, reference):
    for key in ("mIoU", "aAcc", "mAcc"):
        np.testing.assert_allclose(summary[key], reference[key], rtol=1e-12)
    np.testing.assert_allclose(summary["IoU"], reference["IoU"], rtol=1e-12)
    np.testing.assert_allclose(summary["Acc"], reference["Acc"], rtol=1e-12)


def test_mean_iou_matches_mmseg_across_batches():
    rng = np.random.default_rng(0)
    metric = MeanIoU(num_classes=6)
    all_labels, all_preds = [], []
    for _ in range(4):
        labels, preds = random_batch(rng)
        scores = rng.normal(size=preds.shape + (6,))
        scores[..., :] -= 10 * (np.arange(6) != preds[..., None])  # argmax == preds
        metric.update_state(labels[..., None], scores.astype("float32"))
        all_labels.extend(labels)
        all_preds.extend(preds)
    reference = mmseg_mean_iou(all_preds, all_labels, 6)
    assert np.isnan(reference["IoU"][[2, 4]]).all()  # absent from both: excluded
    np.testing.assert_allclose(float(metric.result()), reference["mIoU"], rtol=1e-6)
    assert_summary_equal(metric.results(), reference)
    metric.reset_state()
    assert np.isnan(float(metric.result()))


def test_class_ids_and_labels_outside_range():
    labels = np.array([[0, 1, 2, 7, 255, -1]])
    preds = np.array([[0, 2, 2, 0, 1, 1]])
    matrix = confusion_matrix(labels, preds, 3).numpy()
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    metric = MeanIoU(3)
    metric.update_state(labels, preds)
    assert float(metric.result()) == pytest.approx((1 + 0 + 0.5) / 3)


def test_float_sample_weights_are_not_truncated():
    labels = np.array([[0, 0, 1, 1]])
    preds = np.array([[0, 1, 1, 1]])
    weights = np.array([[0.5, 0.25, 0.75, 0.5]])
    metric = MeanIoU(2)
    metric.update_state(labels, preds, sample_weight=weights)
    # class 0: TP 0.5, FN 0.25 -> 0.5 / 0.75; class 1: TP 1.25, FP 0.25 -> 1.25 / 1.5
    expected = (0.5 / 0.75 + 1.25 / 1.5) / 2
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


def test_summarize_confusion_and_config_round_trip():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    summary = summarize_confusion(confusion, ["a", "b", "c"])
    assert summary["IoU"][:2] == [5 / 8, 3 / 6] and np.isnan(summary["IoU"][2])
    assert summary["aAcc"] == 8 / 11 and summary["class_names"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="class_names"):
        summarize_confusion(confusion, ["a"])
    metric = MeanIoU(5, ignore_index=0, name="val_miou")
    clone = MeanIoU.from_config(metric.get_config())
    assert (clone.num_classes, clone.ignore_index, clone.name) == (5, 0, "val_miou")


def test_result_inside_tf_function():
    metric = MeanIoU(3)
    labels = np.array([[[0, 1], [2, 2]]], "int32")
    preds = np.array([[[0, 1], [1, 2]]], "int32")

    @tf.function
    def step(y_true, y_pred):
        metric.update_state(y_true, y_pred)
        return metric.result()

    assert float(step(labels, preds)) == pytest.approx((1 + 0.5 + 0.5) / 3)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_segmenter.metrics import MeanIoU
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    data = np.load(sys.argv[1])
    with strategy.scope():
        metric = MeanIoU(num_classes=6)
    dataset = tf.data.Dataset.from_tensor_slices((data["labels"], data["preds"])).batch(4)
    dist = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(labels, preds):
        strategy.run(metric.update_state, args=(labels, preds))

    for labels, preds in dist:
        step(labels, preds)
    print(json.dumps({"mIoU": float(metric.result()), "confusion": metric.confusion.numpy().tolist()}))
    """
)


@pytest.mark.slow
def test_mean_iou_under_mirrored_strategy(tmp_path):
    rng = np.random.default_rng(1)
    labels, preds = random_batch(rng, batch=12)
    np.savez(tmp_path / "batch.npz", labels=labels, preds=preds)
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "batch.npz")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    reference = mmseg_mean_iou(list(preds), list(labels), 6)
    np.testing.assert_array_equal(out["confusion"], confusion_matrix(labels, preds, 6).numpy())
    np.testing.assert_allclose(out["mIoU"], reference["mIoU"], rtol=1e-6)


def flood_fill_components(mask, connectivity):
    """Reference labelling by breadth-first search."""
    height, width = mask.shape
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    labels = -np.ones(mask.shape, int)
    count = 0
    for y in range(height):
        for x in range(width):
            if labels[y, x] >= 0:
                continue
            labels[y, x] = count
            queue = collections.deque([(y, x)])
            while queue:
                cy, cx = queue.popleft()
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    inside = 0 <= ny < height and 0 <= nx < width
                    if inside and labels[ny, nx] < 0 and mask[ny, nx] == mask[cy, cx]:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
            count += 1
    return labels


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_flood_fill(connectivity):
    rng = np.random.default_rng(connectivity)
    for shape in [(1, 1), (1, 9), (13, 1), (15, 21), (30, 30)]:
        mask = rng.integers(0, 3, shape)
        got = connected_components(mask, connectivity)
        want = flood_fill_components(mask, connectivity)
        # Same partition: the pairs (got, want) are in one-to-one correspondence.
        pairs = set(zip(got.ravel(), want.ravel()))
        assert len(pairs) == len(np.unique(got)) == len(np.unique(want))


def test_object_size_buckets_and_confusion():
    labels = np.zeros((200, 200), "int32")  # class 0 background: 35,250 px, large
    labels[10:20, 10:20] = 1  # 100 px: small
    labels[50:90, 50:90] = 1  # 1,600 px: medium (a separate object of class 1)
    labels[100:200, 100:130] = 2  # 3,000 px: medium
    labels[0:5, 190:200] = 255  # ignored
    buckets = object_size_buckets(labels)
    assert buckets[15, 15] == 0 and buckets[60, 60] == 1 and buckets[150, 110] == 1
    assert buckets[0, 0] == 2 and buckets[0, 195] == -1
    preds = labels.copy()
    preds[preds == 255] = 0
    preds[10:20, 10:15] = 0  # half of the small object is missed
    matrices = object_size_confusion(labels, preds, 3)
    np.testing.assert_array_equal(matrices[0], [[0, 0, 0], [50, 50, 0], [0, 0, 0]])
    np.testing.assert_array_equal(matrices[1], [[0, 0, 0], [0, 1600, 0], [0, 0, 3000]])
    np.testing.assert_array_equal(matrices.sum(0), confusion_matrix(labels, preds, 3).numpy())
    assert summarize_confusion(matrices[0])["mIoU"] == 0.25  # class 0 IoU 0, class 1 0.5


@pytest.mark.parametrize("num_classes", [100, 150])
def test_object_size_confusion_for_many_classes(num_classes):
    # The int8 bucket map times 64 or more classes overflowed: 150 classes raised
    # OverflowError, 100 silently counted large objects in the wrong cells.
    labels = np.full((120, 120), num_classes - 1, "int32")  # 14,400 - 200 px: large
    labels[0:10, 0:10] = 140 % num_classes  # 100 px: small
    labels[60:70, 0:10] = 255  # ignored
    preds = np.zeros_like(labels)
    matrices = object_size_confusion(labels, preds, num_classes)
    assert matrices.shape == (3, num_classes, num_classes)
    assert matrices[0, 140 % num_classes, 0] == 100
    assert matrices[2, num_classes - 1, 0] == 120 * 120 - 200
    np.testing.assert_array_equal(
        matrices.sum(0), confusion_matrix(labels, preds, num_classes).numpy()
    )
