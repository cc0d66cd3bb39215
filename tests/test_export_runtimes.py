"""ONNX, OpenVINO and LiteRT exports, each run by its own runtime against the Keras model."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_segmenter as ks
from keras_segmenter import export, runtime
from keras_segmenter.images import load_image
from keras_segmenter.inference import default_window, sliding_window_logits
from keras_segmenter.predict import predict
from tests.testing import ASSETS, tiny_model

DATA = ASSETS / "predict"
SAMPLE = pathlib.Path(ks.__file__).parent / "data" / "sample" / "camvid" / "val"
PHOTOS = [
    DATA / "camvid_0016E5_07959.jpg",
    DATA / "voc_val_sample_1_160.png",
    SAMPLE / "0016E5_08001.jpg",
]
WINDOW, STRIDE = 32, 24
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
# LiteRT is exported without --probabilities, so both CLI variants are run.
WITH_PROBABILITIES = {"onnx": True, "openvino": True, "litert": False}
# float32 round-off of other kernels; measured values are in the README.
MAX_LOGITS_ERROR = 1e-4


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("runtimes") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def exports(model_file):
    """{format: path} of the model exported through the command line's entry point."""
    paths = {}
    for fmt in SUFFIX:
        paths[fmt] = model_file.parent / f"segmenter{SUFFIX[fmt]}"
        argv = ["--model", str(model_file), "--format", fmt, "--out", str(paths[fmt])]
        assert export.main(argv + (["--probabilities"] if WITH_PROBABILITIES[fmt] else [])) == 0
    # OpenVINO's converter ran with its no-op telemetry stub (tests never touch the network).
    assert sys.modules.get("openvino_telemetry") is None
    return paths


@pytest.fixture(params=list(SUFFIX))
def exported(request, exports):
    return request.param, exports[request.param]


@pytest.fixture(scope="module")
def references(model):
    """{photo: (Keras class map, window-averaged logits resized to the photo)}."""
    normalize = ks.ImageNormalization(model.normalization)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
    def logits_of(image):
        logits = sliding_window_logits(model, normalize(image[None])[0], WINDOW, STRIDE)
        return tf.image.resize(logits, tf.shape(image)[:2], "bilinear")

    results = {}
    for photo in PHOTOS:
        image = load_image(photo)
        class_map = predict(model, image, window_size=WINDOW, window_stride=STRIDE)
        results[photo] = class_map, logits_of(image).numpy()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_sliding_window_class_map_matches_keras_on_photos(references, exported, photo):
    fmt, path = exported
    image = load_image(photo)
    exported_model = runtime.ExportedModel(path)
    class_map, probabilities = runtime.segment(
        exported_model, image, WINDOW, STRIDE, probabilities=True
    )
    logits = runtime.sliding_window_logits(exported_model, image, WINDOW, STRIDE)
    expected, expected_logits = references[photo]
    assert len(np.unique(expected)) > 2
    agreement = (class_map == expected).mean()
    error = np.abs(logits - expected_logits).max()
    print(f"{fmt} {photo.name}: agreement {agreement:.6f}, max |d logits| {error:.2e}")
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), class_map)
    assert agreement >= 0.999
    assert error <= MAX_LOGITS_ERROR


@pytest.mark.slow
def test_one_pass_outputs_match_the_keras_model(model, exported):
    """The graph itself: pixel values in, normalization inside; any size for ONNX and OpenVINO."""
    fmt, path = exported
    exported_model = runtime.ExportedModel(path)
    photo = load_image(PHOTOS[0])
    sizes = [(WINDOW, WINDOW)] if fmt == "litert" else [(WINDOW, WINDOW), (40, 56), (180, 240)]
    assert exported_model.image_size == ((WINDOW, WINDOW) if fmt == "litert" else None)
    for height, width in sizes:
        images = np.stack([photo[:height, :width], photo[-height:, -width:]])
        outputs = exported_model(images)
        expected = {"segmentation", "logits"} | (
            {"probabilities"} if WITH_PROBABILITIES[fmt] else set()
        )
        assert set(outputs) == expected
        logits = np.asarray(model(ks.ImageNormalization(model.normalization)(images)))
        assert outputs["segmentation"].dtype == np.int32
        assert outputs["segmentation"].shape == (2, height, width)
        np.testing.assert_allclose(outputs["logits"], logits, atol=MAX_LOGITS_ERROR)
        assert (outputs["segmentation"] == logits.argmax(-1)).mean() >= 0.999
        if WITH_PROBABILITIES[fmt]:
            np.testing.assert_allclose(
                outputs["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-5
            )


@pytest.mark.slow
def test_small_images_are_upscaled_like_keras(model, exported):
    """Short side below the window: upscaled in float32 (not rounded) before windowing."""
    fmt, path = exported
    image = load_image(PHOTOS[0])[:20, :70]
    class_map = runtime.segment(runtime.ExportedModel(path), image, WINDOW, STRIDE)
    expected = predict(model, image, window_size=WINDOW, window_stride=STRIDE)
    assert class_map.shape == (20, 70)
    assert (class_map == expected).mean() >= 0.999


@pytest.mark.slow
def test_onnx_graph_has_erf_and_no_erfc(exports):
    import onnx

    ops = {node.op_type for node in onnx.load(str(exports["onnx"])).graph.node}
    assert "Erf" in ops and "Erfc" not in ops


@pytest.mark.slow
def test_runtime_helper_runs_without_tensorflow_or_keras(references, exports, tmp_path):
    """runtime.py, copied alone, serves the ONNX file with only NumPy and onnxruntime."""
    path = exports["onnx"]
    image = load_image(PHOTOS[1])
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        """
        import importlib.util, sys
        for name in ("tensorflow", "keras", "keras_segmenter"):
            sys.modules[name] = None
        import numpy as np
        helper, model_path, image_path, out = sys.argv[1:]
        spec = importlib.util.spec_from_file_location("runtime", helper)
        runtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runtime)
        model = runtime.ExportedModel(model_path)
        np.save(out, runtime.segment(model, np.load(image_path), 32, 24))
        blocked = ("tensorflow", "keras", "keras_segmenter")
        print("loaded:", sorted(m for m, v in sys.modules.items() if m.split(".")[0] in blocked and v))
        """
    )
    (tmp_path / "serve.py").write_text(script)
    result = subprocess.run(
        [
            sys.executable,
            tmp_path / "serve.py",
            runtime.__file__,
            path,
            tmp_path / "image.npy",
            tmp_path / "out.npy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout
    assert (np.load(tmp_path / "out.npy") == references[PHOTOS[1]][0]).mean() >= 0.999


def test_resize_bilinear_matches_tensorflow():
    array = np.random.RandomState(0).randn(7, 11, 3).astype(np.float32)
    for size in [(20, 70), (3, 5), (7, 11), (9, 4)]:
        np.testing.assert_allclose(
            runtime.resize_bilinear(array, *size),
            tf.image.resize(array, size, "bilinear").numpy(),
            atol=1e-6,
        )


def test_window_rules_match_keras(model):
    from keras_segmenter import inference

    for size in (32, 33, 56, 180):
        assert (
            runtime.window_anchors(size, 32, 24)
            == inference.window_anchors(size, 32, 24).numpy().tolist()
        )
    for shape in [(20, 70), (70, 20), (31, 31), (40, 50)]:
        assert runtime.upscaled_shape(*shape, 32) == tuple(
            int(v) for v in inference.upscaled_shape(*shape, 32)
        )

    class Fixed:
        image_size = (64, 64)

        def __call__(self, windows):
            return {"logits": np.zeros(windows.shape[:3] + (2,), np.float32)}

    image = np.zeros((70, 90, 3), np.uint8)
    assert runtime.segment(Fixed(), image).shape == (70, 90)
    assert default_window(model, 64) == (64, 32)


def test_bad_arguments(model_file, tmp_path, capsys):
    def fails(argv, message):
        with pytest.raises(SystemExit) as exit_info:
            export.main(["--model", str(model_file)] + argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err

    fails(["--format", "onnx", "--out", str(tmp_path / "m.xml")], "writes a .onnx file")
    fails(
        ["--format", "litert", "--out", str(tmp_path / "m.tflite"), "--window-size", "32"],
        "the window is chosen at run time",
    )
    fails(["--out", str(tmp_path / "1"), "--image-size", "32"], "only for --format")
    fails(["--format", "tflite", "--out", str(tmp_path / "m.tflite")], "invalid choice")
    with pytest.raises(ValueError, match="Expected a .onnx"):
        runtime.ExportedModel(tmp_path / "model.pb")
    with pytest.raises(FileNotFoundError, match="no such file"):
        runtime.ExportedModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="A .onnx file runs in precision float32. Received: prec"):
        runtime.ExportedModel(tmp_path / "missing.onnx", precision="bfloat16")

    def dynamic(windows):
        return {"logits": np.zeros(windows.shape[:3] + (2,), np.float32)}

    with pytest.raises(ValueError, match="`window_size` is needed"):
        runtime.segment(dynamic, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB array"):
        runtime.segment(dynamic, np.zeros((8, 8, 4), np.uint8), 8)
