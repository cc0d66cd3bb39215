"""The training/eval pipelines: recipe, alignment, padding, determinism."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_segmenter.data import (
    SAMPLE_DIR,
    augment,
    eval_dataset,
    get_dataset_info,
    list_pairs,
    train_dataset,
)
from tests.testing import ASSETS

DATA = str(ASSETS)
CAMVID = os.path.join(DATA, "camvid")


def _camvid_pair(k=0):
    image, mask = list_pairs("camvid", CAMVID, "train")[k]
    return np.array(Image.open(image)), np.array(Image.open(mask))


def test_shapes_dtypes_and_value_ranges():
    ds = train_dataset("camvid", CAMVID, batch_size=2, crop_size=96, seed=0)
    images, masks = next(iter(ds))
    assert images.shape == (2, 96, 96, 3) and images.dtype == tf.float32
    assert masks.shape == (2, 96, 96) and masks.dtype == tf.int32
    assert images.numpy().min() >= -1.0 and images.numpy().max() <= 1.0
    values = set(np.unique(masks.numpy()))
    assert values <= set(range(11)) | {255}
    deit = train_dataset("camvid", CAMVID, batch_size=1, crop_size=32, normalization="deit", seed=0)
    low = (0.0 - 0.485) / 0.229
    assert next(iter(deit))[0].numpy().min() >= low - 1e-5
    with pytest.raises(ValueError, match="Received: normalization='imagenet'"):
        train_dataset("camvid", CAMVID, normalization="imagenet")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        train_dataset("camvid", CAMVID, batch_size=0)


def test_rescale_size_follows_mmseg_keep_ratio():
    def size(h, w, base, ratio):
        return tuple(
            int(v)
            for v in augment.rescale_size(tf.constant(h), tf.constant(w), base, tf.constant(ratio))
        )

    # ADE20K: short side 512 bounds a landscape image; long side 2048 bounds
    # a very wide one.
    assert size(512, 683, (2048, 512), 1.0) == (512, 683)
    assert size(300, 400, (2048, 512), 0.5) == (256, 341)
    assert size(100, 1000, (2048, 512), 1.0) == (205, 2048)
    assert size(1024, 2048, (2048, 1024), 2.0) == (2048, 4096)


@pytest.mark.parametrize("base", [(480, 360), (200, 150)])
def test_crop_matches_full_resize_then_crop(base):
    # (200, 150) on 240x180 images mixes down- and up-scaling.
    image, raw = _camvid_pair(1)
    table = tf.constant(get_dataset_info("camvid").label_table())
    for seed in range(4):
        crop, mask, (nh, nw, top, left) = augment.rescale_and_crop(
            tf.constant(image),
            tf.constant(raw),
            table,
            base,
            (128, 160),
            tf.constant([seed, 7]),
            return_box=True,
        )
        nh, nw, top, left = int(nh), int(nw), int(top), int(left)
        full = tf.image.resize(image.astype(np.float32), (nh, nw), "bilinear")
        ch, cw = min(128, nh), min(160, nw)
        want = np.round(full.numpy()[top : top + ch, left : left + cw])
        got = crop.numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1.0
        rows = np.arange(nh) * raw.shape[0] // nh
        cols = np.arange(nw) * raw.shape[1] // nw
        want_mask = raw[rows][:, cols][top : top + ch, left : left + cw]
        want_mask = np.where(want_mask == 11, 255, want_mask)
        np.testing.assert_array_equal(mask.numpy(), want_mask)


def _write_mask_image_dataset(tmp_path):
    """A folder dataset whose images are drawn from their own masks."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for image, mask in list_pairs("camvid", CAMVID, "train"):
        raw = np.array(Image.open(mask))
        grey = np.where(raw % 2 == 1, 255, 0).astype(np.uint8)
        stem = os.path.basename(mask)[:-4]
        Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "images" / f"{stem}.png")
        Image.open(mask).save(tmp_path / "masks" / f"{stem}.png")
    return str(tmp_path)


def test_image_and_mask_stay_aligned_through_every_augmentation(tmp_path):
    root = _write_mask_image_dataset(tmp_path)
    ds = train_dataset(
        "folder",
        root,
        batch_size=4,
        crop_size=128,
        seed=3,
        num_classes=11,
        ignore_index=11,
        base_size=(480, 360),
    )
    agreements, shuffled = [], []
    for images, masks in ds.take(4):
        for image, mask in zip(images.numpy(), masks.numpy()):
            valid = mask != 255
            grey = image.mean(-1)
            odd = (mask % 2 == 1)[valid]
            if odd.all() or not odd.any():
                continue
            # Photometric changes keep a two-level grey image two-level and
            # ordered, so a midpoint threshold recovers the mask parity.
            lo, hi = grey[valid].min(), grey[valid].max()
            recovered = (grey > (lo + hi) / 2)[valid]
            agreements.append(np.mean(recovered == odd))
            shuffled.append(np.mean(recovered == (mask[:, ::-1] % 2 == 1)[valid]))
    assert len(agreements) >= 8
    assert np.mean(agreements) > 0.97 and min(agreements) > 0.9
    # The same check on a mirrored mask fails: the test can detect a flip.
    assert np.mean(shuffled) < 0.9


def test_padding_values():
    # Base 480x360 times at most 2 fits inside 960x720: a 1000 crop pads.
    ds = train_dataset("camvid", CAMVID, batch_size=4, crop_size=1000, seed=1)
    images, masks = next(iter(ds))
    images, masks = images.numpy(), masks.numpy()
    for image, mask in zip(images, masks):
        rows = np.where((mask != 255).any(1))[0]
        cols = np.where((mask != 255).any(0))[0]
        h, w = rows.max() + 1, cols.max() + 1
        assert h <= 720 and w <= 960
        np.testing.assert_array_equal(image[h:], 0.0)
        np.testing.assert_array_equal(image[:, w:], 0.0)
        np.testing.assert_array_equal(mask[h:], 255)
        np.testing.assert_array_equal(mask[:, w:], 255)


def _balanced_share(cat_max_ratio, n=48):
    image, raw = _camvid_pair(2)
    table = tf.constant(get_dataset_info("camvid").label_table())
    fn = tf.function(
        lambda s: augment.rescale_and_crop(
            tf.constant(image),
            tf.constant(raw),
            table,
            (480, 360),
            (48, 48),
            s,
            cat_max_ratio=cat_max_ratio,
        )[1]
    )
    ok = 0
    for k in range(n):
        mask = fn(tf.constant([k, 0])).numpy()
        counts = np.bincount(mask[mask != 255].ravel(), minlength=11)
        ok += (counts > 0).sum() > 1 and counts.max() < 0.75 * counts.sum()
    return ok / n


def test_cat_max_ratio_crop_statistics():
    plain = _balanced_share(1.0)
    retried = _balanced_share(0.75)
    assert plain < 0.85  # Small crops are often one class (sky, road).
    assert retried > 0.95 and retried > plain + 0.1


def test_crop_is_balanced_rule():
    def hist(**counts):
        h = np.zeros(256, np.int32)
        for k, v in counts.items():
            h[int(k[1:])] = v
        return tf.constant(h)

    assert not augment.crop_is_balanced(hist(c1=100))
    assert not augment.crop_is_balanced(hist(c1=75, c2=25))
    assert augment.crop_is_balanced(hist(c1=74, c2=26))
    # The ignore label is not counted.
    assert augment.crop_is_balanced(hist(c1=60, c2=40, c255=1000))
    assert not augment.crop_is_balanced(hist(c1=60, c255=1000))


def test_photometric_distortion_is_pixelwise_and_in_range():
    image, _ = _camvid_pair(0)
    x = tf.constant(image, tf.float32)
    outs = [augment.photometric_distortion(x, tf.constant([s, 1])).numpy() for s in range(6)]
    for out in outs:
        assert out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(out, np.floor(out))
    assert any(np.abs(out - image).mean() > 1 for out in outs)
    # A constant image stays constant: no spatial mixing.
    flat = tf.fill([8, 8, 3], 100.0)
    for s in range(6):
        out = augment.photometric_distortion(flat, tf.constant([s, 2]))
        assert np.ptp(out.numpy().reshape(-1, 3), 0).max() == 0


def test_determinism_with_seed():
    def first(seed):
        ds = train_dataset("camvid", CAMVID, batch_size=2, crop_size=64, seed=seed)
        return [b.numpy() for b in next(iter(ds))]

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_eval_dataset_keeps_original_resolution_and_maps_labels():
    ds = eval_dataset("ade20k", DATA, split="val")
    pairs = list_pairs("ade20k", DATA, split="val")
    for (image, mask), (image_path, mask_path) in zip(ds, pairs):
        raw = np.array(Image.open(mask_path)).astype(np.int32)
        assert image.shape == raw.shape + (3,) and mask.dtype == tf.int32
        np.testing.assert_array_equal(mask.numpy(), np.where(raw == 0, 255, raw - 1))
        want = np.array(Image.open(image_path)) / 127.5 - 1.0
        # JPEG decoders (Pillow, TensorFlow) differ by a few grey levels.
        diff = np.abs(image.numpy() - want)
        assert diff.max() <= 5 / 127.5 and diff.mean() < 2 / 127.5


def test_sample_dir_and_distribution_strategy():
    strategy = tf.distribute.get_strategy()
    ds = train_dataset("camvid", SAMPLE_DIR, batch_size=4, crop_size=32, seed=0)
    images, masks = next(iter(strategy.experimental_distribute_dataset(ds)))
    assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32)
    assert ds.element_spec[0].shape == (4, 32, 32, 3)
