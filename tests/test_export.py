"""SavedModel export for TF Serving: signatures, parity with predict(), fresh loading, bad requests."""

import io
import os
import pathlib
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_segmenter as ks
from keras_segmenter import export
from keras_segmenter.predict import load_image, predict
from tests.testing import ASSETS, PHOTOS, tiny_model

DATA = PHOTOS
CAMVID_JPG = DATA / "camvid_0016E5_07959.jpg"
VOC_PNG = DATA / "voc_val_sample_1_160.png"
ADE_JPG = ASSETS / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000001.jpg"
BIN = pathlib.Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
WINDOW, STRIDE = 32, 24
MAX_PIXELS = 1_000_000  # set at export by the CLI fixture
# The exported probabilities are float16: half a step is at most 2**-12 below 1,
# plus the float32 round-off between the SavedModel and the eager run (1e-6 before).
FLOAT16_ATOL = 2**-12 + 1e-6


def run(*command):
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The model exported by the CLI in a fresh process, in TF Serving's layout."""
    root = tmp_path_factory.mktemp("export")
    model.save(root / "tiny.keras")
    out = root / "models" / "segmenter" / "1"
    result = run(
        sys.executable,
        "-m",
        "keras_segmenter.export",
        "--model",
        root / "tiny.keras",
        "--out",
        out,
        "--window-size",
        WINDOW,
        "--window-stride",
        STRIDE,
        "--probabilities",
        "--max-pixels",
        MAX_PIXELS,
    )
    assert "serving_default" in result.stdout and "stride 24" in result.stdout
    assert f"at most {MAX_PIXELS} pixels" in result.stdout
    return out


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


def expected_probabilities(model, image):
    from keras_segmenter.inference import segment

    normalized = ks.ImageNormalization(model.normalization)(image[None])[0]
    return segment(model, normalized, WINDOW, STRIDE, probabilities=tf.float32)[1].numpy()


@pytest.mark.slow
def test_layout_and_saved_model_cli_show(exported):
    assert (exported / "saved_model.pb").is_file()
    assert (exported / "variables" / "variables.index").is_file()
    shown = run(BIN / "saved_model_cli", "show", "--dir", exported, "--all").stdout
    default = shown[shown.index("signature_def['serving_default']") :]
    encoded = shown[shown.index("signature_def['serving_bytes']") :]
    assert "inputs['images']" in default and "DT_UINT8" in default
    assert "inputs['image_bytes']" in encoded and "DT_STRING" in encoded
    for outputs in (default, encoded):
        assert "outputs['segmentation']" in outputs and "DT_INT32" in outputs
        assert "outputs['probabilities']" in outputs and "(-1, -1, -1, 5)" in outputs
        assert "DT_HALF" in outputs


@pytest.mark.slow
def test_saved_model_cli_run_matches_the_keras_model(model, exported, tmp_path):
    image = load_image(CAMVID_JPG)
    np.save(tmp_path / "images.npy", image[None])
    run(
        BIN / "saved_model_cli",
        "run",
        "--dir",
        exported,
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--inputs",
        f"images={tmp_path / 'images.npy'}",
        "--outdir",
        tmp_path / "outputs",
    )
    segmentation = np.load(tmp_path / "outputs" / "segmentation.npy")
    probabilities = np.load(tmp_path / "outputs" / "probabilities.npy")
    assert segmentation.dtype == np.int32 and segmentation.shape == (1, 180, 240)
    expected = predict(model, image, window_size=WINDOW, window_stride=STRIDE)
    np.testing.assert_array_equal(segmentation[0], expected)
    np.testing.assert_allclose(
        probabilities[0], expected_probabilities(model, image), atol=FLOAT16_ATOL
    )
    assert len(np.unique(expected)) > 1


@pytest.mark.slow
def test_loads_and_runs_without_keras_segmenter_or_keras(model, exported, tmp_path):
    """A fresh process that cannot import keras_segmenter nor keras serves both signatures."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["keras_segmenter"] = None
        sys.modules["keras"] = None
        import numpy as np
        import tensorflow as tf

        export_dir, image_path, out = sys.argv[1:]
        serving = tf.saved_model.load(export_dir)
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        default = serving.signatures["serving_default"](images=tf.stack([image, image[::-1]]))
        np.savez(
            out,
            default=default["segmentation"].numpy(),
            probabilities=default["probabilities"].numpy(),
        )
        blocked = ("keras", "keras_segmenter")
        imported = [m for m, v in sys.modules.items() if m.split(".")[0] in blocked and v]
        print("modules:", sorted(imported))
        """
    )
    (tmp_path / "serve.py").write_text(script)
    result = run(sys.executable, tmp_path / "serve.py", exported, VOC_PNG, tmp_path / "out.npz")
    assert "modules: []" in result.stdout
    outputs = np.load(tmp_path / "out.npz")
    voc = load_image(VOC_PNG)
    assert outputs["default"].shape == (2, 160, 160)
    np.testing.assert_array_equal(
        outputs["default"][0], predict(model, voc, window_size=WINDOW, window_stride=STRIDE)
    )
    np.testing.assert_array_equal(
        outputs["default"][1],
        predict(model, voc[::-1].copy(), window_size=WINDOW, window_stride=STRIDE),
    )
    np.testing.assert_allclose(
        outputs["probabilities"][0], expected_probabilities(model, voc), atol=FLOAT16_ATOL
    )


@pytest.mark.slow
def test_serving_bytes_gives_the_predict_commands_class_maps(exported, tmp_path):
    """A REST client sending a file gets what `keras-segmenter predict` writes for it.

    JPEGs in every EXIF orientation (Pillow's decoding, rotated as predict
    rotates them), an ADE20K photo and a PNG, each sent alone to the
    exported model loaded in a fresh process without keras_segmenter.
    """
    photos = tmp_path / "photos"
    photos.mkdir()
    files = [VOC_PNG, ADE_JPG]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        files.append(photos / f"camvid_{orientation}.jpg")
        Image.open(CAMVID_JPG).save(files[-1], quality=90, exif=exif.tobytes())
    script = textwrap.dedent(
        """
        import sys
        sys.modules["keras_segmenter"] = None
        import numpy as np
        import tensorflow as tf

        export_dir, out, *files = sys.argv[1:]
        serving = tf.saved_model.load(export_dir).signatures["serving_bytes"]
        maps = [
            serving(image_bytes=tf.stack([tf.io.read_file(f)]))["segmentation"][0].numpy()
            for f in files
        ]
        np.savez(out, *maps)
        """
    )
    (tmp_path / "serve.py").write_text(script)
    run(sys.executable, tmp_path / "serve.py", exported, tmp_path / "out.npz", *files)
    model_file = exported.parents[2] / "tiny.keras"
    window = ("--window-size", WINDOW, "--window-stride", STRIDE)
    run(
        BIN / "keras-segmenter",
        "predict",
        "--model",
        model_file,
        "--out",
        tmp_path / "out",
        *window,
        *files,
    )
    served = np.load(tmp_path / "out.npz")
    for index, path in enumerate(files):
        expected = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_classes.png"))
        np.testing.assert_array_equal(served[f"arr_{index}"], expected, err_msg=path.name)
    assert served["arr_7"].shape == (240, 180)  # orientation 6, rotated


@pytest.mark.slow
def test_bytes_signature_matches_the_array_signature_on_png_variants(loaded, tmp_path):
    """Lossless PNGs (RGB, grayscale, RGBA) give exactly the uint8 signature's class map."""
    photo = Image.open(VOC_PNG)
    variants = {
        "rgb": photo.convert("RGB"),
        "gray": photo.convert("L"),
        "rgba": photo.convert("RGBA"),
    }
    encoded = []
    for name, image in variants.items():
        image.save(tmp_path / f"{name}.png")
        encoded.append((tmp_path / f"{name}.png").read_bytes())
    from_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    pixels = np.stack([np.asarray(v.convert("RGB")) for v in variants.values()])
    from_arrays = loaded.signatures["serving_default"](images=tf.constant(pixels))
    np.testing.assert_array_equal(
        from_bytes["segmentation"].numpy(), from_arrays["segmentation"].numpy()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((8, 8, 3), np.uint8), r"Received shape:\] \[8 8 3\]"),
        (np.zeros((1, 0, 8, 3), np.uint8), r"Received shape:\] \[1 0 8 3\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"Received shape:\] \[0 8 8 3\]"),
        (np.zeros((1, 8, 8, 4), np.uint8), r"Received shape:\] \[1 8 8 4\]"),
    ],
    ids=["rank3", "zero_height", "empty_batch", "four_channels"],
)
def test_bad_image_requests_fail_with_the_expected_shape(loaded, images, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as error:
        loaded.signatures["serving_default"](images=tf.constant(images))
    assert r"uint8 RGB batch (batch, height, width, 3)" in str(error.value)


@pytest.mark.slow
def test_bad_requests_of_wrong_dtype_or_bytes(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 3), tf.float32))
    encoded = loaded.signatures["serving_bytes"]
    png = tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8))
    taller = tf.io.encode_png(tf.zeros((9, 8, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        encoded(image_bytes=tf.constant([b"not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same height and width"):
        encoded(image_bytes=tf.stack([png, taller]))
    for bad in (png, tf.constant([], tf.string), tf.reshape(png, (1, 1))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"string tensor \(batch,\)"):
            encoded(image_bytes=bad)
    assert encoded(image_bytes=tf.stack([png, png]))["segmentation"].shape == (2, 8, 8)


@pytest.mark.slow
def test_loaded_model_refuses_requests_above_its_pixel_limit(loaded):
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"limit of {MAX_PIXELS} pixels"
    ) as error:
        loaded.signatures["serving_default"](images=tf.zeros((5, 500, 500, 3), tf.uint8))
    assert "--max-pixels" in str(error.value) and "[5 500 500]" in str(error.value)


def huge_png(height, width):
    """A valid 1-bit grayscale PNG of `height x width` zeros: about 48 KB for 20000 x 20000."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(row * height, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_declared_size_reads_the_headers():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8))
    encoded = {}
    for name, kwargs in {
        "PNG": {},
        "JPEG": {},
        "GIF": {},
        "BMP": {},
        "WEBP": {"lossless": True},
        "WEBP lossy": {"quality": 80},
    }.items():
        buffer = io.BytesIO()
        image.save(buffer, format=name.split()[0], **kwargs)
        encoded[name] = buffer.getvalue()
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="WEBP", quality=80, exif=b"Exif\0\0")
    encoded["WEBP extended"] = buffer.getvalue()
    for name, data in encoded.items():
        height, width = export.declared_size(tf.constant(data))
        assert (int(height), int(width)) == (37, 53), name
    assert [int(v) for v in export.declared_size(tf.constant(huge_png(20000, 20000)))] == [
        20000,
        20000,
    ]
    assert [int(v) for v in export.declared_size(tf.constant(b"not an image"))] == [0, 0]


def test_module_refuses_requests_above_the_pixel_limit(model):
    module = export.SegmenterServingModule(model, max_pixels=2000)
    assert module.serving_default(tf.zeros((1, 40, 50, 3), tf.uint8))["segmentation"].shape == (
        1,
        40,
        50,
    )
    # Two 40 x 50 images, and one 10 x 150 image windowed at 32 x 480 (upscaled to the window).
    for images in (tf.zeros((2, 40, 50, 3), tf.uint8), tf.zeros((1, 10, 150, 3), tf.uint8)):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match="limit of 2000 pixels per request"
        ):
            module.serving_default(images)
    jpeg = tf.io.encode_jpeg(tf.zeros((64, 64, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="headers declare") as error:
        module.serving_bytes(tf.stack([jpeg]))
    assert "[1 64 64]" in str(error.value)


def test_a_small_png_declaring_20000x20000_is_refused_before_decoding(model):
    data = huge_png(20000, 20000)
    assert len(data) < 60_000
    module = export.SegmenterServingModule(model)  # default limit: one 24 GB machine
    assert module.max_pixels < 20000 * 20000
    with pytest.raises(tf.errors.InvalidArgumentError, match="headers declare") as error:
        module.serving_bytes(tf.constant([data]))
    assert "[1 20000 20000]" in str(error.value)


def test_module_signatures_in_process(model):
    """Without --probabilities only `segmentation` is returned; default window from the crop."""
    module = export.SegmenterServingModule(model)
    assert (module.window_size, module.window_stride) == (32, 16)
    image = load_image(VOC_PNG)
    outputs = module.serving_default(tf.constant(image[None]))
    assert set(outputs) == {"segmentation"}
    np.testing.assert_array_equal(outputs["segmentation"][0].numpy(), predict(model, image))


def test_export_refuses_bad_arguments(model, tmp_path, capsys):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_saved_model(model, tmp_path / "1")
    with pytest.raises(ValueError, match="window_stride"):
        export.SegmenterServingModule(model, window_size=32, window_stride=40)
    with pytest.raises(ValueError, match="max_pixels"):
        export.SegmenterServingModule(model, max_pixels=0)
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "2")])
    assert exit_info.value.code == 2
    assert "no such file" in capsys.readouterr().err
