"""Export a Segmenter as a TensorFlow SavedModel for TF Serving, or for other runtimes.

    python -m keras_segmenter.export --model model.keras --out models/segmenter/1 \
        [--window-size 512 --window-stride 480] [--probabilities]
    python -m keras_segmenter.export --model model.keras --format onnx --out segmenter.onnx

`--format onnx|openvino|litert` writes the model for ONNX Runtime, OpenVINO
or LiteRT instead (see `keras_segmenter.export_runtimes`); the rest of this
docstring is about the default, `--format saved_model`.

writes a SavedModel in TF Serving's versioned layout (`models/<name>/<version>/`)
with two signatures, both doing normalization and sliding-window inference
(Segmenter, ICCV 2021, section 4.2) inside the graph:

- `serving_default`: `images`, uint8 `(batch, height, width, 3)`, any size.
- `serving_bytes`: `image_bytes`, string `(batch,)` of encoded JPEG/PNG/GIF/BMP
  (for REST clients, which send `{"b64": ...}`); the images of one request
  must share their height and width.

Both return `segmentation`, int32 `(batch, height, width)` class indices at
the input size, and with `--probabilities` also `probabilities`, float32
`(batch, height, width, num_classes)`.

The export is a plain `tf.Module` holding the model's variables with
`tf.function` signatures, saved by `tf.saved_model.save`. Loading it
with `tf.saved_model.load`, `saved_model_cli` or TF Serving needs neither
keras_segmenter nor Keras. Keras' own `ExportArchive` tracks variables the
same way, but adds a `serve` endpoint and a fixed input signature per
endpoint; the `tf.Module` names the signatures, inputs and outputs exactly
as TF Serving clients see them and takes inputs of unknown rank, so that
bad requests reach the checks in the graph.
"""

import argparse
import os
import pathlib
import sys

import tensorflow as tf

from keras_segmenter.cli import LOG_NOTE
from keras_segmenter.predict import class_probabilities, default_window, load_model, num_classes_of

IMAGES_SHAPE = "(batch, height, width, 3)"


def _checked(tensor, condition, message):
    """`tensor` after a runtime check that prints `message` and the received shape."""
    check = tf.debugging.Assert(condition, [message, "Received shape:", tf.shape(tensor)], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def check_images(images):
    """Checks that a uint8 request batch is `(batch, height, width, 3)` with pixels.

    One assertion, placed before any inference op, so that a bad request
    fails with this message and the shape it had, instead of deep inside the
    sliding window.

    Args:
        images: uint8 tensor of unknown shape.

    Returns:
        `images` with static shape `(None, None, None, 3)`.
    """
    # Pad the shape so that it can be inspected whatever the rank.
    shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)[:4]
    valid = tf.logical_and(
        tf.equal(tf.rank(images), 4),
        tf.logical_and(tf.reduce_all(shape[:3] > 0), tf.equal(shape[3], 3)),
    )
    images = _checked(
        images,
        valid,
        f"`images` must be a uint8 RGB batch {IMAGES_SHAPE} with batch, height and width "
        "at least 1 and exactly 3 channels (no alpha).",
    )
    return tf.ensure_shape(images, (None, None, None, 3))


def decode_images(image_bytes):
    """Decodes a `(batch,)` string tensor of JPEG/PNG/GIF/BMP into uint8 `(batch, H, W, 3)`.

    Grayscale and RGBA images become RGB (alpha dropped), 16-bit PNGs are
    scaled to 8 bits, animated GIFs give their first frame. All images must
    have the same height and width. EXIF orientation is not applied.
    """
    valid = tf.logical_and(tf.equal(tf.rank(image_bytes), 1), tf.size(image_bytes) > 0)
    image_bytes = _checked(
        image_bytes,
        valid,
        "`image_bytes` must be a string tensor (batch,) of at least one encoded JPEG/PNG image.",
    )

    def decode(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return tf.ensure_shape(image, (None, None, 3))

    size = tf.shape(decode(image_bytes[0]))[:2]

    def decode_same_size(data):
        image = decode(data)
        same = tf.debugging.assert_equal(
            tf.shape(image)[:2],
            size,
            message="All images in one `image_bytes` request must have the same height and "
            "width; send differently sized images in separate requests",
        )
        with tf.control_dependencies([same]):
            return tf.identity(image)

    return tf.map_fn(
        decode_same_size, image_bytes, fn_output_signature=tf.TensorSpec((None, None, 3), tf.uint8)
    )


def make_segment_fn(model, window_size, window_stride, probabilities=False, batch_size=4):
    """A function from a checked uint8 batch `(B, H, W, 3)` to the serving outputs.

    Normalization, then sliding-window inference on each image
    (`predict.class_probabilities`), mapped over the batch.

    Returns:
        A function returning `{"segmentation": int32 (B, H, W)}`, plus
        `"probabilities"`: float32 `(B, H, W, K)` when `probabilities`.
    """
    from keras_segmenter.layers.normalization import ImageNormalization

    normalize = ImageNormalization(getattr(model, "normalization", "vit"))
    num_classes = num_classes_of(model)
    signature = {"segmentation": tf.TensorSpec((None, None), tf.int32)}
    if probabilities:
        signature["probabilities"] = tf.TensorSpec((None, None, num_classes), tf.float32)

    def one(image):
        probs = class_probabilities(
            model, normalize, image, window_size, window_stride, batch_size=batch_size
        )
        outputs = {"segmentation": tf.argmax(probs, axis=-1, output_type=tf.int32)}
        if probabilities:
            outputs["probabilities"] = probs
        return outputs

    def segment(images):
        return tf.map_fn(one, images, fn_output_signature=signature)

    return segment


class SegmenterServingModule(tf.Module):
    """A Segmenter with TF Serving signatures, ready for `tf.saved_model.save`.

    The module tracks the model's TensorFlow variables, not the Keras model
    itself: a SavedModel holding Keras 3 objects restores under
    `tf.saved_model.load` but not under the TF1/C++ loader that
    `saved_model_cli run` and TF Serving use ("Could not find variable").
    The model is only reached through the traced functions.

    Args:
        model: a `keras_segmenter.Segmenter` (logits from normalized images).
        window_size: int, sliding window side. Defaults to the training crop.
        window_stride: int, step between windows. Defaults to
            `window_size - 32` (see `predict.default_window`).
        probabilities: bool, also return `probabilities`. Defaults to `False`.
        batch_size: int, windows per model call. Defaults to 4.

    Example:

    >>> import keras_segmenter as ks
    >>> model = ks.Segmenter(ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2,
    ...     num_heads=2, mlp_dim=32, image_size=32), num_classes=5)
    >>> module = SegmenterServingModule(model)
    >>> module.serving_default(tf.zeros((1, 40, 50, 3), tf.uint8))["segmentation"].shape
    TensorShape([1, 40, 50])
    """

    def __init__(self, model, window_size=None, window_stride=None, probabilities=False, batch_size=4):
        super().__init__(name="segmenter_serving")
        from keras_segmenter.inference import _check_window

        window_size, window_stride = default_window(model, window_size, window_stride)
        _check_window(window_size, window_stride, batch_size)
        self.window_size = window_size
        self.window_stride = window_stride
        self.num_classes = num_classes_of(model)
        self.with_probabilities = bool(probabilities)
        self.batch_size = batch_size
        # The tf.Variable behind each Keras variable (see the class docstring).
        self.model_variables = [variable.value for variable in model.variables]
        segment = make_segment_fn(model, window_size, window_stride, probabilities, batch_size)

        # Inputs have unknown rank: loaded signatures check only the dtype, so
        # the shapes are checked in the graph, where the message can be clear.
        self.serving_default = tf.function(
            lambda images: segment(check_images(images)),
            input_signature=[tf.TensorSpec(None, tf.uint8, name="images")],
        )
        self.serving_bytes = tf.function(
            lambda image_bytes: segment(decode_images(image_bytes)),
            input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")],
        )

    def signatures(self):
        """The `signatures=` dict for `tf.saved_model.save`."""
        return {"serving_default": self.serving_default, "serving_bytes": self.serving_bytes}


def export_saved_model(
    model, path, window_size=None, window_stride=None, probabilities=False, batch_size=4, overwrite=False
):
    """Writes `model` as a SavedModel with the TF Serving signatures.

    Args:
        model: a `keras_segmenter.Segmenter`.
        path: output folder, e.g. `models/segmenter/1` (TF Serving loads
            the numbered version folders of `models/segmenter`).
        window_size, window_stride, probabilities, batch_size: as in
            `SegmenterServingModule`.
        overwrite: bool, allow writing into a non-empty folder. Defaults to
            `False`.

    Returns:
        the `SegmenterServingModule` that was saved.
    """
    path = pathlib.Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise FileExistsError(
            f"The export folder {str(path)!r} exists and is not empty: give a new version folder "
            "(e.g. models/segmenter/2) or pass overwrite=True (--overwrite)."
        )
    module = SegmenterServingModule(model, window_size, window_stride, probabilities, batch_size)
    tf.saved_model.save(module, os.fspath(path), signatures=module.signatures())
    return module


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    from keras_segmenter.export_runtimes import FORMATS, SUFFIXES

    parser = argparse.ArgumentParser(
        prog="python -m keras_segmenter.export",
        epilog=LOG_NOTE,
        description="Export a Segmenter .keras model as a SavedModel for TF Serving (default), "
        "or for ONNX Runtime, OpenVINO or LiteRT.",
    )
    parser.add_argument("--model", required=True, help="a .keras file saved from a Segmenter")
    parser.add_argument(
        "--out",
        required=True,
        help="saved_model: a version folder such as models/segmenter/1; onnx, openvino, litert: "
        "a .onnx, .xml (plus its .bin) or .tflite file",
    )
    parser.add_argument(
        "--format",
        choices=("saved_model",) + FORMATS,
        default="saved_model",
        help="saved_model (TF Serving, sliding window in the graph; default), or a one-pass graph "
        "for onnx, openvino, litert (sliding window in keras_segmenter.runtime)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="onnx, openvino, litert: fixed input side (litert default: training crop; "
        "onnx and openvino default: any size)",
    )
    parser.add_argument(
        "--window-size", type=int, help="saved_model: sliding window side (default: training crop)"
    )
    parser.add_argument(
        "--window-stride", type=int, help="saved_model: sliding window step (default: window - 32)"
    )
    parser.add_argument("--probabilities", action="store_true", help="also output class probabilities")
    parser.add_argument(
        "--batch-size", type=int, default=4, help="saved_model: windows per model call (default 4)"
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file (expected a .keras model file)")
    if args.format != "saved_model":
        if pathlib.Path(args.out).suffix != SUFFIXES[args.format]:
            parser.error(f"--out {args.out}: --format {args.format} writes a {SUFFIXES[args.format]} file")
        window_options = (args.window_size, args.window_stride)
        if window_options != (None, None):
            parser.error(
                f"--window-size/--window-stride: --format {args.format} exports one pass of the "
                "model; the window is chosen at run time (keras_segmenter.runtime.segment)"
            )
        if args.image_size is not None and args.image_size < 1:
            parser.error(f"--image-size {args.image_size}: expected a positive int")
    elif args.image_size is not None:
        parser.error("--image-size: only for --format onnx, openvino or litert")
    if args.format == "saved_model" and not pathlib.Path(args.out).name.isdigit():
        print(
            f"warning: TF Serving loads numbered version folders (models/<name>/<version>); "
            f"--out {args.out} does not end in a number",
            file=sys.stderr,
        )
    try:
        model = load_model(args.model)
    except Exception as error:  # Keras raises many types for a bad file.
        parser.error(f"--model {args.model}: cannot load the model: {error}")
    if args.format != "saved_model":
        return _export_runtime(parser, model, args)
    try:
        module = export_saved_model(
            model, args.out, args.window_size, args.window_stride, args.probabilities,
            args.batch_size, args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    outputs = "segmentation" + (", probabilities" if module.with_probabilities else "")
    print(
        f"Wrote {args.out}: signatures serving_default (images uint8 {IMAGES_SHAPE}) and "
        f"serving_bytes (image_bytes string (batch,)) -> {outputs}; window "
        f"{module.window_size}, stride {module.window_stride}, {module.num_classes} classes"
    )
    return 0


def _export_runtime(parser, model, args):
    """`main` for --format onnx, openvino, litert."""
    from keras_segmenter.export_runtimes import export_runtime

    try:
        path = export_runtime(
            model, args.format, args.out, args.image_size, args.probabilities, args.overwrite
        )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    except ImportError as error:
        parser.error(f"--format {args.format}: {error} (pip install 'keras-segmenter[export]')")
    if args.image_size is not None:
        size = f"{args.image_size}x{args.image_size} only"
    elif args.format == "litert":
        size = "{}x{} only".format(*model.backbone.image_size)
    else:
        size = "any size"
    outputs = "segmentation, logits" + (", probabilities" if args.probabilities else "")
    print(
        f"Wrote {path} ({args.format}): images uint8 {IMAGES_SHAPE}, {size} -> {outputs}; "
        f"{num_classes_of(model)} classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
