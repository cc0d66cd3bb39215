"""Export a Segmenter for ONNX Runtime, OpenVINO and LiteRT.

Each format holds one graph, traced once with TensorFlow and converted by
the format's own converter:

- input `images`: float32 `(batch, height, width, 3)` RGB pixel values in
  [0, 255] (uint8 images cast to float32; float, so that an image upscaled
  for the sliding window is fed unrounded, as `predict()` windows it);
- normalization (`ImageNormalization`) and the model, in the graph;
- outputs `segmentation`: int32 `(batch, height, width)` class indices (the
  argmax of the logits), `logits`: float32 `(batch, height, width, K)`, and
  with `probabilities=True` also `probabilities` (their softmax).

The graph runs the model once over each image, as `predict(..., whole=True)`.
The paper's sliding window (section 4.2), which averages window logits, is
done around it by `keras_segmenter.runtime.segment`, with NumPy only. ONNX
and OpenVINO take any height and width (multiples of the patch size are
fastest); LiteRT needs a fixed `image_size` (default: the training crop).

Converters used (Keras' `model.export(format=...)` wraps the same ones, but
offers no hook for the ONNX op below, needs SciPy for OpenVINO, and lets
LiteRT fall back to TensorFlow ops that the LiteRT interpreter cannot run):

- ONNX: `tf2onnx.convert.from_function`. TensorFlow writes the exact GELU
  as `0.5 * x * erfc(-x / sqrt(2))` and ONNX has no `Erfc`: it is converted
  to `1 - Erf(z)`, PyTorch's own form of the exact GELU.
- OpenVINO: `openvino.convert_model` on the concrete function; weights kept
  in float32 (`compress_to_fp16=False`).
- LiteRT: `tf.lite.TFLiteConverter.from_saved_model` restricted to the
  builtin ops, so that the file runs in `ai-edge-litert`.
"""

import os
import pathlib
import sys
import tempfile

import numpy as np
import tensorflow as tf

from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write
from keras_segmenter.layers.normalization import ImageNormalization

FORMATS = ("onnx", "openvino", "litert")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
ONNX_OPSET = 17


def serving_function(model, image_size=None, probabilities=False):
    """The `tf.function` that every format converts.

    Args:
        model: a `keras_segmenter.Segmenter`.
        image_size: optional int or `(height, width)`; fixes the input size.
            `None` leaves height and width unknown.
        probabilities: bool, also output `probabilities`.

    Returns:
        A `tf.function` with one input signature, from float32 `images` to a
        dict of `segmentation`, `logits` (and `probabilities`).
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = image_size if image_size else (None, None)
    normalize = ImageNormalization(getattr(model, "normalization", "vit"))
    spec = tf.TensorSpec((None, height, width, 3), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        logits = tf.cast(model(normalize(images), training=False), tf.float32)
        outputs = {
            "segmentation": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "logits": logits,
        }
        if probabilities:
            outputs["probabilities"] = tf.nn.softmax(logits, axis=-1)
        return outputs

    return serve


def _erfc_as_one_minus_erf(ctx, node, name, _args):
    """tf2onnx handler: `Erfc(z)` becomes `Sub(1, Erf(z))`."""
    one = ctx.make_const(f"{name}/one", np.array(1.0, np.float32))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=name)
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _export_onnx(serve, path):
    import tf2onnx

    tf2onnx.convert.from_function(
        serve,
        serve.input_signature,
        opset=ONNX_OPSET,
        custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        output_path=os.fspath(path),
    )


def _block_openvino_telemetry():
    """Keeps OpenVINO's converter from sending usage statistics.

    `openvino.convert_model` reports to Google Analytics unless the user
    opted out (outside CI); when `openvino_telemetry` cannot be imported it
    uses its own no-op stub. Only effective before `openvino` is imported.
    """
    sys.modules.setdefault("openvino_telemetry", None)


def _export_openvino(serve, path):
    _block_openvino_telemetry()
    import openvino as ov

    ov_model = ov.convert_model(serve.get_concrete_function())

    def write(xml):
        ov.save_model(ov_model, xml, compress_to_fp16=False)
        # The weights, written beside as <name>.bin, go into place before the .xml.
        weights = os.path.splitext(xml)[0] + ".bin"
        atomic_write(path.with_suffix(".bin"), lambda tmp: os.replace(weights, tmp))

    atomic_write(path, write)


def _export_litert(serve, path, model):
    # Through a SavedModel, which the converter freezes: from a concrete
    # function it keeps the weights as uninitialized resource variables.
    module = tf.Module()
    module.model_variables = [variable.value for variable in model.variables]
    with tempfile.TemporaryDirectory() as saved_model:
        tf.saved_model.save(module, saved_model, signatures={"serving_default": serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
    atomic_write(path, lambda tmp: pathlib.Path(tmp).write_bytes(flatbuffer))


def export_runtime(model, format, path, image_size=None, probabilities=False, overwrite=False):
    """Writes `model` for one runtime.

    Args:
        model: a `keras_segmenter.Segmenter`.
        format: `"onnx"`, `"openvino"` or `"litert"`.
        path: output file: `.onnx`, `.xml` (OpenVINO writes the weights to
            the `.bin` file beside it) or `.tflite`.
        image_size: optional int or `(height, width)`, the fixed input size.
            Required size for LiteRT, where it defaults to the training crop;
            `None` (any size) for ONNX and OpenVINO.
        probabilities: bool, also output `probabilities`.
        overwrite: bool, replace an existing file.

    Returns:
        the `pathlib.Path` written.
    """
    if format not in FORMATS:
        raise UserError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    path = pathlib.Path(path)
    if path.suffix != SUFFIXES[format]:
        raise UserError(
            f"The {format} export is a {SUFFIXES[format]} file. Received: path={str(path)!r}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} exists: give a new path or pass overwrite=True (--overwrite)."
        )
    if format == "litert" and image_size is None:
        image_size = tuple(int(s) for s in model.backbone.image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    serve = serving_function(model, image_size, probabilities)
    if format == "onnx":
        atomic_write(path, lambda tmp: _export_onnx(serve, tmp))
    elif format == "openvino":
        _export_openvino(serve, path)
    else:
        _export_litert(serve, path, model)
    return path
