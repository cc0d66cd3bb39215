"""Predicting on your own images: image loading, `predict()`, the CLI, and the colouring helpers."""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_segmenter as ks
from keras_segmenter import inference, visualization
from keras_segmenter import predict as predict_module
from keras_segmenter.data.classes import CAMVID_PALETTE
from keras_segmenter.inference import segment
from keras_segmenter.predict import ImageReadError, load_image, predict
from tests.testing import PHOTOS, tiny_model

DATA = PHOTOS
CAMVID_JPG = DATA / "camvid_0016E5_07959.jpg"
VOC_PNG = DATA / "voc_val_sample_1_160.png"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """The real sample images plus odd-mode variants and two unreadable files."""
    folder = tmp_path_factory.mktemp("images")
    for path in DATA.glob("*.*"):
        if path.suffix in (".jpg", ".png"):
            shutil.copy(path, folder / path.name)
    photo = Image.open(CAMVID_JPG).convert("RGB")
    photo.convert("L").save(folder / "gray.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(folder / "rgba.png")
    photo.quantize(64).save(folder / "palette.png")
    gray16 = np.asarray(photo.convert("L"), np.uint16) * 257
    Image.fromarray(gray16).save(folder / "gray16.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90 degrees clockwise.
    photo.save(folder / "rotated.jpg", exif=exif, quality=95)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    png = io.BytesIO()
    photo.save(png, format="PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    return folder


UNREADABLE = ("broken.jpg", "truncated.png")


def reference_classes(model, image, window_size=32, window_stride=16):
    normalized = ks.ImageNormalization(model.normalization)(image[None])[0]
    return segment(model, normalized, window_size, window_stride)[0].numpy()


# --- Image loading --------------------------------------------------------


def test_load_image_converts_every_mode_to_rgb(images_dir):
    photo = np.asarray(Image.open(CAMVID_JPG).convert("RGB"))
    gray = np.asarray(Image.open(images_dir / "gray.png"))
    loaded = {
        name: load_image(images_dir / name)
        for name in ("gray.png", "rgba.png", "palette.png", "gray16.png", "cmyk.jpg")
    }
    for name, array in loaded.items():
        assert array.dtype == np.uint8 and array.shape == photo.shape, name
    np.testing.assert_array_equal(loaded["gray.png"], np.repeat(gray[..., None], 3, -1))
    # 16-bit grayscale is scaled back to the 8-bit values it was made from.
    assert Image.open(images_dir / "gray16.png").mode.startswith("I")
    np.testing.assert_array_equal(loaded["gray16.png"], loaded["gray.png"])
    # RGBA keeps the colours under the alpha channel.
    np.testing.assert_array_equal(loaded["rgba.png"], photo)
    palette = np.asarray(Image.open(images_dir / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(loaded["palette.png"], palette)
    # CMYK JPEG is lossy, but must come back as the same photo.
    assert np.abs(loaded["cmyk.jpg"].astype(int) - photo).mean() < 8


def test_load_image_applies_exif_orientation(images_dir):
    stored = np.asarray(Image.open(images_dir / "rotated.jpg"))
    loaded = load_image(images_dir / "rotated.jpg")
    assert stored.shape == (180, 240, 3)
    np.testing.assert_array_equal(loaded, np.rot90(stored, k=-1))


@pytest.mark.parametrize("name", UNREADABLE + ("missing.png",))
def test_load_image_names_unreadable_files(images_dir, name):
    with pytest.raises(ImageReadError, match=name):
        load_image(images_dir / name)


# --- predict() ------------------------------------------------------------


def test_predict_on_path_array_and_pil_match_sliding_window(model):
    image = np.asarray(Image.open(CAMVID_JPG).convert("RGB"))
    from_path = predict(model, CAMVID_JPG)
    assert from_path.dtype == np.int32 and from_path.shape == (180, 240)
    np.testing.assert_array_equal(from_path, predict(model, image))
    np.testing.assert_array_equal(from_path, predict(model, str(CAMVID_JPG)))
    np.testing.assert_array_equal(from_path, predict(model, Image.open(CAMVID_JPG)))
    # Default window: the 32-pixel training crop, stride max(32 - 32, 32 // 2) = 16.
    np.testing.assert_array_equal(from_path, reference_classes(model, image, 32, 16))
    # The untrained model still predicts more than one class on a real photo.
    assert len(np.unique(from_path)) > 1


def test_predict_with_explicit_window_and_whole_image(model):
    image = np.asarray(Image.open(VOC_PNG).convert("RGB"))
    np.testing.assert_array_equal(
        predict(model, image, window_size=32, window_stride=24),
        reference_classes(model, image, 32, 24),
    )
    whole = predict(model, image, whole=True)
    logits = model(ks.ImageNormalization(model.normalization)(image[None]))[0]
    np.testing.assert_array_equal(whole, np.argmax(logits.numpy(), axis=-1))


# float16 keeps probabilities to half a step (at most 2**-12 below 1), plus the
# float32 round-off between the traced and the eager run (the 1e-6 used before).
FLOAT16_ATOL = 2**-12 + 1e-6


def test_predict_probabilities_are_compact_and_match_sliding_window(
    model, model_path, tmp_path, capsys
):
    image = np.asarray(Image.open(VOC_PNG).convert("RGB"))
    class_map, probs = predict(model, image, window_size=32, window_stride=24, probabilities=True)
    assert probs.dtype == np.float16 and probs.shape == image.shape[:2] + (5,)
    np.testing.assert_array_equal(
        class_map, predict(model, image, window_size=32, window_stride=24)
    )
    normalized = ks.ImageNormalization(model.normalization)(image[None])[0]
    expected = segment(model, normalized, 32, 24, probabilities=tf.float32)[1].numpy()
    np.testing.assert_allclose(probs.astype(np.float32), expected, rtol=0, atol=FLOAT16_ATOL)

    status = predict_module.main(
        [
            "--model",
            str(model_path),
            str(VOC_PNG),
            "--out",
            str(tmp_path),
            "--probabilities",
            "--window-size",
            "32",
            "--window-stride",
            "24",
        ]
    )
    assert status == 0, capsys.readouterr().err
    saved = np.load(tmp_path / f"{VOC_PNG.stem}_probabilities.npy")
    np.testing.assert_array_equal(saved, probs)


def test_predict_rejects_bad_input(model):
    with pytest.raises(ValueError, match=r"uint8 RGB array \(height, width, 3\)"):
        predict(model, np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape=\(20, 20, 4\)"):
        predict(model, np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        predict(model, np.zeros((0, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="window_stride"):
        predict(model, np.zeros((40, 40, 3), np.uint8), window_size=32, window_stride=48)
    with pytest.raises(ImageReadError, match="nothere.jpg"):
        predict(model, "nothere.jpg")


def test_default_window_follows_the_paper(model):
    assert inference.default_window(model) == (32, 16)
    big = ks.build_segmenter("seg_ti16_mask", 3, image_size=64)
    assert inference.default_window(big) == (64, 32)
    assert inference.default_window(big, window_size=512) == (512, 480)
    assert inference.default_window(big, window_stride=8) == (64, 8)


def test_save_class_map_uses_16_bits_above_256_classes(tmp_path):
    class_map = np.array([[0, 255], [256, 999]], np.int32)
    predict_module.save_class_map(tmp_path / "big.png", class_map, num_classes=1000)
    with Image.open(tmp_path / "big.png") as image:
        assert image.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(image), class_map)
    predict_module.save_class_map(tmp_path / "small.png", class_map[:1], num_classes=256)
    with Image.open(tmp_path / "small.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), class_map[:1])


# --- CLI ------------------------------------------------------------------


def test_cli_writes_class_maps_and_overlays_and_reports_unreadable_files(
    model, model_path, images_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    missing = tmp_path / "missing.jpg"
    status = predict_module.main(
        ["--model", str(model_path), str(images_dir), str(missing), "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert status == 1
    for name in UNREADABLE:
        assert name in captured.err
    assert str(missing) in captured.err and "3 input(s) failed" in captured.err
    readable = sorted(p for p in images_dir.iterdir() if p.name not in UNREADABLE)
    assert len(readable) == 9
    for path in readable:
        image = load_image(path)
        with Image.open(out / f"{path.stem}_classes.png") as classes:
            assert classes.mode == "L" and classes.size == (image.shape[1], image.shape[0])
            class_map = np.asarray(classes)
        np.testing.assert_array_equal(class_map, predict(model, image), err_msg=path.name)
        with Image.open(out / f"{path.stem}_overlay.png") as overlay:
            # The overlay keeps the image on the left and adds a legend on the right.
            assert overlay.mode == "RGB" and overlay.height == image.shape[0]
            assert overlay.width > image.shape[1]
            left = np.asarray(overlay)[:, : image.shape[1]]
        expected = visualization.overlay(
            image, class_map, visualization.default_palette(model.num_classes)
        )
        np.testing.assert_array_equal(left, expected, err_msg=path.name)
        assert path.name in captured.out


def test_cli_uses_the_dataset_palette(tmp_path):
    model = tiny_model(num_classes=11)
    model.save(tmp_path / "camvid.keras")
    out = tmp_path / "out"
    status = predict_module.main(
        [
            "--model",
            str(tmp_path / "camvid.keras"),
            str(CAMVID_JPG),
            "--out",
            str(out),
            "--dataset",
            "camvid",
            "--alpha",
            "1",
            "--whole",
        ]
    )
    assert status == 0
    class_map = np.asarray(Image.open(out / f"{CAMVID_JPG.stem}_classes.png"))
    np.testing.assert_array_equal(class_map, predict(model, CAMVID_JPG, whole=True))
    overlay = np.asarray(Image.open(out / f"{CAMVID_JPG.stem}_overlay.png"))
    np.testing.assert_array_equal(overlay[:180, :240], np.asarray(CAMVID_PALETTE)[class_map])


def test_cli_rejects_bad_arguments(model_path, tmp_path, capsys):
    def error_of(*argv):
        with pytest.raises(SystemExit) as exit_info:
            predict_module.main([*argv, str(CAMVID_JPG), "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "camvid has 11 classes but the model predicts 5" in error_of(
        "--model", str(model_path), "--dataset", "camvid"
    )
    assert "Unknown dataset" in error_of("--model", str(model_path), "--dataset", "nope")
    assert "no such file" in error_of("--model", str(tmp_path / "none.keras"))
    assert "--whole runs without windows" in error_of(
        "--model", str(model_path), "--whole", "--window-size", "32"
    )
    assert "window_stride" in error_of(
        "--model", str(model_path), "--window-size", "32", "--window-stride", "64"
    )


@pytest.mark.slow
def test_cli_runs_as_a_module(model_path, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_segmenter.predict",
            "--model",
            str(model_path),
            str(VOC_PNG),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{VOC_PNG.stem}_classes.png").is_file()
    assert (tmp_path / f"{VOC_PNG.stem}_overlay.png").is_file()


# --- visualization ----------------------------------------------------------


def test_colorize_and_overlay():
    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    class_map = np.array([[0, 1], [2, 1]])
    colours = visualization.colorize(class_map, palette)
    np.testing.assert_array_equal(colours[1, 0], [0, 0, 255])
    image = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(visualization.overlay(image, class_map, palette, alpha=0), image)
    np.testing.assert_array_equal(
        visualization.overlay(image, class_map, palette, alpha=1), colours
    )
    np.testing.assert_array_equal(
        visualization.overlay(image, class_map, palette, alpha=0.5)[0, 1], [178, 50, 50]
    )
    with pytest.raises(ValueError, match=r"outside the palette's 3 colours.*\[0, 3\]"):
        visualization.colorize(np.array([[0, 3]]), palette)
    with pytest.raises(ValueError, match="same|height and width"):
        visualization.overlay(np.zeros((3, 2, 3), np.uint8), class_map, palette)
    with pytest.raises(ValueError, match="alpha"):
        visualization.overlay(image, class_map, palette, alpha=2)
    with pytest.raises(ValueError, match=r"ints in \[0, 255\]"):
        visualization.as_palette([(0, 0, 300)])


def test_default_palette_is_deterministic_and_distinct():
    palette = visualization.default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 300
    np.testing.assert_array_equal(palette[:3], [[0, 0, 0], [128, 0, 0], [0, 128, 0]])


def test_legends():
    names = ["sky", "road", "car"]
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    class_map = np.array([[1, 1, 1], [2, 2, 1]])
    assert visualization.present_classes(class_map) == [1, 2]
    assert visualization.present_classes(class_map, min_fraction=0.4) == [1]
    image = np.zeros((40, 30, 3), np.uint8)
    drawn = visualization.draw_legend(image, [1, 2], names, palette)
    assert drawn.height == 40 and drawn.width > 30
    pixels = np.asarray(drawn)
    np.testing.assert_array_equal(pixels[:, :30], image)
    # Both swatches are drawn with the class colours.
    colours = {tuple(c) for c in pixels[:, 30:].reshape(-1, 3)}
    assert (40, 50, 60) in colours and (70, 80, 90) in colours and (10, 20, 30) not in colours
    # Many classes on a short image go into several columns, not off the bottom.
    tall = visualization.legend_panel(list(range(3)) * 10, names, palette, height=40)
    assert tall.height == 40 and tall.width > drawn.width - 30
    patches = visualization.legend_patches([2, 0], names, palette)
    assert [p.get_label() for p in patches] == ["car", "sky"]
    np.testing.assert_allclose(patches[0].get_facecolor()[:3], np.array([70, 80, 90]) / 255)
    with pytest.raises(ValueError, match="Class 3 has no name"):
        visualization.draw_legend(image, [3], names, palette)
