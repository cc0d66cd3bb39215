"""Each file the README's export command writes, run by its own runtime as a deployment runs it.

No project code on the runtime side: what a user of ONNX Runtime or LiteRT
gets from the file alone, in the runtime's default configuration. OpenVINO
is compiled with the one setting docs/serving.md gives for OpenVINO Model
Server (`"plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}`): its CPU
plugin runs bfloat16 by default on CPUs with AVX-512 bf16 or AMX (99.18 % of
this test's pixels on such a CPU), and OpenVINO 2026.4 does not read that
hint from the IR (see docs/serving.md). The SavedModel in a fresh process:
tests/test_export.py.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_segmenter as ks
from keras_segmenter.images import load_image
from tests.testing import PHOTOS, tiny_model

PHOTO = PHOTOS / "camvid_0016E5_07959.jpg"
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
RUN_DEFAULTS = textwrap.dedent(
    """
    import sys
    sys.modules["keras_segmenter"] = None
    sys.modules["openvino_telemetry"] = None  # tests never touch the network
    import numpy as np

    onnx, openvino_xml, litert, images_path, small_path, out = sys.argv[1:]
    images, small = np.load(images_path), np.load(small_path)

    import onnxruntime
    session = onnxruntime.InferenceSession(onnx)
    onnx_map = session.run(["segmentation"], {"images": images})[0]

    import openvino
    compiled = openvino.Core().compile_model(openvino_xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    openvino_map = compiled(images)[compiled.output("segmentation")]

    from ai_edge_litert.interpreter import Interpreter
    litert_map = Interpreter(model_path=litert).get_signature_runner()(images=small)["segmentation"]
    np.savez(out, onnx=onnx_map, openvino=openvino_map, litert=litert_map)
    """
)


def keras_class_map(model, images):
    logits = model(ks.ImageNormalization(model.normalization)(images))
    return np.asarray(logits).argmax(-1)


@pytest.mark.slow
def test_each_format_run_by_its_runtime_alone_gives_the_keras_class_map(tmp_path):
    model = tiny_model(seed=1)
    model.save(tmp_path / "tiny.keras")
    paths = {}
    for fmt, suffix in SUFFIXES.items():
        paths[fmt] = tmp_path / f"segmenter{suffix}"
        command = [
            sys.executable,
            "-m",
            "keras_segmenter.export",
            "--model",
            tmp_path / "tiny.keras",
        ]
        command += ["--format", fmt, "--out", paths[fmt]]
        result = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
    photo = load_image(PHOTO).astype(np.float32)
    images, small = photo[None], photo[None, :32, :32]  # LiteRT: the training crop
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "small.npy", small)
    (tmp_path / "run.py").write_text(RUN_DEFAULTS)
    files = [paths[fmt] for fmt in SUFFIXES]
    command = [sys.executable, tmp_path / "run.py", *files, tmp_path / "images.npy"]
    command += [tmp_path / "small.npy", tmp_path / "out.npz"]
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    outputs = np.load(tmp_path / "out.npz")
    expected = keras_class_map(model, images)
    assert len(np.unique(expected)) > 2
    for fmt in ("onnx", "openvino"):
        agreement = (outputs[fmt] == expected).mean()
        print(f"{fmt}: agreement {agreement:.6f}")
        assert agreement >= 0.999, fmt
    assert (outputs["litert"] == keras_class_map(model, small)).mean() >= 0.999
