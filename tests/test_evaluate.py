"""The evaluation loop and training/evaluate.py against NumPy computations on real CamVid pairs."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

import keras_segmenter as ks
from keras_segmenter.evaluation import evaluate
from keras_segmenter.inference import segment
from keras_segmenter.metrics import SIZE_BUCKETS, object_size_confusion, summarize_confusion
from tests import testing
from tests.testing import ASSETS, REPO

CAMVID = ASSETS / "eval_camvid"


def camvid_pairs():
    """(normalized image, mask) with CamVid's unlabelled 11 mapped to 255."""
    pairs = []
    for image_path in sorted((CAMVID / "val").glob("*.jpg")):
        image = np.asarray(Image.open(image_path).convert("RGB"), "float32")
        mask = np.asarray(Image.open(CAMVID / "valannot" / (image_path.stem + ".png")), "int32")
        pairs.append(((image / 255.0 - 0.5) / 0.5, np.where(mask == 11, 255, mask)))
    return pairs


def mmseg_metrics(preds, labels, num_classes):
    """MMSegmentation's total-area metrics, with plain bincounts."""
    intersect = union = pred_area = label_area = 0
    for pred, label in zip(preds, labels):
        keep = label != 255
        pred, label = pred[keep], label[keep]
        i = np.bincount(pred[pred == label], minlength=num_classes)
        p = np.bincount(pred, minlength=num_classes)
        t = np.bincount(label, minlength=num_classes)
        intersect, union = intersect + i, union + p + t - i
        pred_area, label_area = pred_area + p, label_area + t
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = intersect / union, intersect / label_area
    return dict(
        mIoU=np.nanmean(iou),
        aAcc=intersect.sum() / label_area.sum(),
        mAcc=np.nanmean(acc),
        IoU=iou,
        Acc=acc,
    )


@pytest.fixture(scope="module")
def tiny_model():
    model = testing.tiny_model(11, num_layers=1, decoder="linear")
    # Spread the random model's predictions over several classes: a larger
    # head makes them depend on the image, not only on the bias.
    kernel, bias = model.decoder.weights
    kernel.assign(kernel * 20.0)
    bias.assign(np.linspace(-0.3, 0.3, 11).astype("float32"))
    return model


def check_against_numpy(results, preds, labels):
    reference = mmseg_metrics(preds, labels, 11)
    for key in ("mIoU", "aAcc", "mAcc"):
        np.testing.assert_allclose(results[key], reference[key], rtol=1e-12)
    np.testing.assert_allclose(results["IoU"], reference["IoU"], rtol=1e-12)
    np.testing.assert_allclose(results["Acc"], reference["Acc"], rtol=1e-12)
    sizes = sum(object_size_confusion(label, p, 11) for p, label in zip(preds, labels))
    for i, bucket in enumerate(SIZE_BUCKETS):
        np.testing.assert_allclose(
            results["size_mIoU"][bucket], summarize_confusion(sizes[i])["mIoU"], rtol=1e-12
        )


def test_evaluate_matches_numpy_on_real_pairs(tiny_model):
    pairs = camvid_pairs()
    info = types.SimpleNamespace(
        num_classes=11, class_names=None, ignore_index=255, crop_size=64, base_size=None
    )
    results = evaluate(tiny_model, pairs, info, verbose=0)
    # The window is the model's 32 training crop, not the dataset's 64 crop;
    # the stride is max(32 - 32, 32 // 2) (see inference.default_window).
    assert results["window_size"] == 32 and results["window_stride"] == 16
    preds = [segment(tiny_model, x, 32, 16)[0].numpy() for x, _ in pairs]
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) > 2
    check_against_numpy(results, preds, [m for _, m in pairs])
    assert results["num_images"] == 3 and 0 < results["mIoU"] < 1


def test_fit_validation_runs_the_evaluation_loop(tiny_model):
    """fit's validation gives what its own loop (MeanIoU over the class maps) gave."""
    from keras_segmenter.inference import make_segment_function
    from keras_segmenter.training.factories import make_evaluate_fn

    pairs = camvid_pairs()
    results = make_evaluate_fn(pairs, 11, 255, 32, 24, max_images=2)(tiny_model)
    infer = make_segment_function(tiny_model, 32, 24)
    metric = ks.MeanIoU(11, ignore_index=255)
    for image, mask in pairs[:2]:
        metric.update_state(mask[None], infer(image)[None])
    expected = metric.results()
    assert results["num_images"] == 2 and "size_mIoU" not in results
    for key in ("mIoU", "aAcc", "mAcc", "IoU"):
        np.testing.assert_array_equal(results[key], expected[key])


def test_evaluate_window_falls_back_to_the_dataset_crop_without_a_training_crop():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(11)(inputs))  # no backbone.image_size
    info = types.SimpleNamespace(
        num_classes=11, class_names=None, ignore_index=255, crop_size=64, base_size=None
    )
    results = evaluate(model, camvid_pairs()[:1], info, object_sizes=False, verbose=0)
    assert results["window_size"] == 64 and results["window_stride"] == 32


def test_evaluate_rescales_like_the_official_pipeline(tiny_model):
    pairs = camvid_pairs()[:2]
    results = evaluate(
        tiny_model,
        pairs,
        num_classes=11,
        window_size=64,
        window_stride=48,
        base_size=(480, 360),
        object_sizes=False,
        verbose=0,
    )
    preds = [segment(tiny_model, x, 64, 48, base_size=(480, 360))[0].numpy() for x, _ in pairs]
    reference = mmseg_metrics(preds, [m for _, m in pairs], 11)
    np.testing.assert_allclose(results["mIoU"], reference["mIoU"], rtol=1e-12)
    assert results["base_size"] == [480, 360] and "size_mIoU" not in results


def test_evaluate_rejects_mismatched_pairs(tiny_model):
    image, mask = camvid_pairs()[0]
    with pytest.raises(ValueError, match="differs from mask"):
        evaluate(tiny_model, [(image, mask[:-1])], num_classes=11, window_size=64, verbose=0)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(tiny_model, [(image, mask)], window_size=64, verbose=0)


@pytest.mark.slow
def test_evaluate_cli_end_to_end(tiny_model, tmp_path):
    from keras_segmenter.data import eval_dataset, get_dataset_info

    model_path = tmp_path / "tiny.keras"
    tiny_model.save(model_path)
    output = tmp_path / "results.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [
            sys.executable,
            "training/evaluate.py",
            "--model",
            str(model_path),
            "--dataset",
            "camvid",
            "--data-dir",
            str(CAMVID),
            "--window-size",
            "128",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mIoU" in done.stdout and get_dataset_info("camvid").class_names[0] in done.stdout
    results = json.loads(output.read_text())
    assert results["num_images"] == 3 and results["window_stride"] == 96

    # The same numbers from the same dataset in NumPy.
    images, labels = zip(
        *[
            (x.numpy(), m.numpy())
            for x, m in eval_dataset("camvid", str(CAMVID), split="val", normalization="vit")
        ]
    )
    np.testing.assert_array_equal(labels, [m for _, m in camvid_pairs()])
    base_size = tuple(results["base_size"]) if results["base_size"] else None
    preds = [segment(tiny_model, x, 128, 96, base_size=base_size)[0].numpy() for x in images]
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) > 2
    nan_to_none = lambda v: None if np.isnan(v) else v  # noqa: E731
    reference = mmseg_metrics(preds, labels, 11)
    np.testing.assert_allclose(results["mIoU"], reference["mIoU"], rtol=1e-12)
    np.testing.assert_allclose(results["aAcc"], reference["aAcc"], rtol=1e-12)
    assert [nan_to_none(v) is None for v in reference["IoU"]] == [v is None for v in results["IoU"]]


def test_evaluate_cli_names_bad_arguments(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "training/evaluate.py",
            "--model",
            str(tmp_path / "missing.keras"),
            "--dataset",
            "camvid",
            "--data-dir",
            str(CAMVID),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2 and "missing.keras: no such file" in done.stderr
