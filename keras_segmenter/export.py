"""Export a Segmenter as a TensorFlow SavedModel for TF Serving, or for other runtimes.

    python -m keras_segmenter.export --model model.keras --out models/segmenter/1 \
        [--window-size 512 --window-stride 480] [--probabilities] [--max-pixels N]
    python -m keras_segmenter.export --model model.keras --format onnx --out segmenter.onnx

`--format onnx|openvino|litert` writes the model for ONNX Runtime, OpenVINO
or LiteRT instead (see `keras_segmenter.export_runtimes`); the rest of this
docstring is about the default, `--format saved_model`.

writes a SavedModel in TF Serving's versioned layout (`models/<name>/<version>/`)
with two signatures, both doing normalization and sliding-window inference
(Segmenter, ICCV 2021, section 4.2) inside the graph:

- `serving_default`: `images`, uint8 `(batch, height, width, 3)`, any size.
- `serving_bytes`: `image_bytes`, string `(batch,)` of encoded JPEG/PNG/GIF/BMP
  (for REST clients, which send `{"b64": ...}`), decoded exactly as `predict`
  reads the same files (Pillow's JPEG decoding, EXIF orientation applied; see
  `keras_segmenter.image_decoding`); the images of one request must share
  their height and width.

Both return `segmentation`, int32 `(batch, height, width)` class indices at
the input size, and with `--probabilities` also `probabilities`, float16
`(batch, height, width, num_classes)` (see `inference.segment_image`). The
sliding window is merged band by band (`inference.segment`), so memory grows
with the pixels, not with pixels x classes x overlapping windows. A request
with more pixels than `--max-pixels` (counted after the upscaling of images
smaller than the window, summed over the batch) is refused with a clear
error before inference; for encoded PNG/JPEG/GIF/BMP/WebP the size their
header declares is checked before they are decoded.

The export is a plain `tf.Module` holding the model's variables with
`tf.function` signatures, saved by `tf.saved_model.save`. Loading it
with `tf.saved_model.load`, `saved_model_cli` or TF Serving needs neither
keras_segmenter nor Keras. Keras' own `ExportArchive` tracks variables the
same way, but adds a `serve` endpoint and a fixed input signature per
endpoint; the `tf.Module` names the signatures, inputs and outputs exactly
as TF Serving clients see them and takes inputs of unknown rank, so that
bad requests reach the checks in the graph.
"""

import os
import pathlib
import sys

import tensorflow as tf

from keras_segmenter.cli import command_parser, command_prog, reports_user_errors
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write
from keras_segmenter.image_decoding import declared_size, decode_image
from keras_segmenter.inference import default_window, num_classes_of, segment_image
from keras_segmenter.prediction import load_model

IMAGES_SHAPE = "(batch, height, width, 3)"


def _checked(tensor, condition, message):
    """`tensor` after a runtime check that prints `message` and the received shape."""
    check = tf.debugging.Assert(
        condition, [message, "Received shape:", tf.shape(tensor)], summarize=8
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


# Bytes of memory per windowed pixel: 64, plus half a byte per class for the
# strip of `window - stride` rows carried between window rows (two float32
# copies of 32 rows, a quarter byte per class at its worst, 993-row images);
# 139 for 150 classes, above the 31-65 that benchmarks/memory.py measures
# between 3 MP and 12 MP photos. Plus the process itself (TensorFlow, the
# model, the window buffers); the default limit fits one 24 GB machine.
BYTES_PER_PIXEL = 64
FIXED_BYTES = 4 * 2**30
MACHINE_BYTES = 24 * 2**30


def default_max_pixels(num_classes, probabilities):
    """Pixels per request that fit `MACHINE_BYTES`; with `probabilities`, 4 bytes more per
    pixel and class (float16 probabilities and their copy into the response)."""
    per_pixel = BYTES_PER_PIXEL + num_classes / 2 + (4 * num_classes if probabilities else 0)
    return int((MACHINE_BYTES - FIXED_BYTES) // per_pixel)


def windowed_pixels(batch, height, width, window_size):
    """Pixels the sliding window runs on: `batch x` the `inference.upscaled_shape` area.

    In float64, so that untrusted header sizes (up to 2**32 per side) cannot
    overflow the int32 arithmetic of `upscaled_shape`.
    """
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    upscaled = window_size * tf.floor(long / tf.maximum(short, 1.0) * window_size)
    return tf.cast(batch, tf.float64) * tf.where(short < window_size, upscaled, height * width)


def check_pixel_limit(tensor, batch, height, width, window_size, max_pixels, what):
    """`tensor` after a check that `batch` images of `height x width` fit `max_pixels`."""
    pixels = windowed_pixels(batch, height, width, window_size)
    check = tf.debugging.Assert(
        pixels <= max_pixels,
        [
            f"{what} exceed this model's limit of {max_pixels} pixels per request (batch x "
            f"height x width, after upscaling images whose short side is below the {window_size} "
            "window), set at export with --max-pixels; send smaller or fewer images. Received "
            "batch, height, width:",
            tf.stack([tf.cast(v, tf.int64) for v in (batch, height, width)]),
        ],
        summarize=3,
    )
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


def decode_images(image_bytes, window_size, max_pixels):
    """Decodes a `(batch,)` string tensor of JPEG/PNG/GIF/BMP into uint8 `(batch, H, W, 3)`.

    Each image is decoded as `predict` reads the same file
    (`image_decoding.decode_image`: Pillow's JPEG decoding, EXIF orientation
    applied, any mode to RGB). All images must have the same height and
    width, after orientation. Each image's declared size (`declared_size`)
    is checked against `max_pixels` (for the whole batch) before it is
    decoded.
    """
    valid = tf.logical_and(tf.equal(tf.rank(image_bytes), 1), tf.size(image_bytes) > 0)
    image_bytes = _checked(
        image_bytes,
        valid,
        "`image_bytes` must be a string tensor (batch,) of at least one encoded JPEG/PNG image.",
    )
    image_bytes = _checked(
        image_bytes,
        tf.reduce_all(tf.strings.length(image_bytes) > 0),
        "`image_bytes` holds an empty string; each element must be an encoded JPEG/PNG image.",
    )

    def decode(data):
        height, width = declared_size(data)
        data = check_pixel_limit(
            data,
            tf.size(image_bytes),
            height,
            width,
            window_size,
            max_pixels,
            "`image_bytes` whose headers declare images that",
        )
        return decode_image(data)

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


def make_segment_fn(model, window_size, window_stride, probabilities=False, batch_size=None):
    """A function from a checked uint8 batch `(B, H, W, 3)` to the serving outputs.

    Normalization, then sliding-window inference on each image
    (`inference.segment_image`), mapped over the batch.

    Returns:
        A function returning `{"segmentation": int32 (B, H, W)}`, plus
        `"probabilities"`: float16 `(B, H, W, K)` when `probabilities`.
    """
    from keras_segmenter.models.segmenter_preprocessor import preprocessor_of

    normalize = preprocessor_of(model).normalize
    num_classes = num_classes_of(model)
    signature = {"segmentation": tf.TensorSpec((None, None), tf.int32)}
    if probabilities:
        signature["probabilities"] = tf.TensorSpec((None, None, num_classes), tf.float16)

    def one(image):
        classes, probs = segment_image(
            model,
            normalize,
            image,
            window_size,
            window_stride,
            batch_size=batch_size,
            probabilities=probabilities,
        )
        return {"segmentation": classes, **({"probabilities": probs} if probabilities else {})}

    def segment(images):
        return tf.map_fn(one, images, fn_output_signature=signature, parallel_iterations=1)

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
            `window_size - 32` (see `inference.default_window`).
        probabilities: bool, also return `probabilities` (float16, 2 x K bytes
            per pixel). Defaults to `False`.
        batch_size: int, windows per model call. Defaults to
            `inference.windows_per_call` (about 256 MB of logits per call).
        max_pixels: int, refuse requests with more pixels than this
            (batch x height x width, after upscaling images smaller than the
            window). Defaults to `default_max_pixels` (one 24 GB machine).

    Example:

    >>> import keras_segmenter as ks
    >>> model = ks.Segmenter(ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2,
    ...     num_heads=2, mlp_dim=32, image_size=32), num_classes=5)
    >>> module = SegmenterServingModule(model)
    >>> module.serving_default(tf.zeros((1, 40, 50, 3), tf.uint8))["segmentation"].shape
    TensorShape([1, 40, 50])
    """

    def __init__(
        self,
        model,
        window_size=None,
        window_stride=None,
        probabilities=False,
        batch_size=None,
        max_pixels=None,
    ):
        super().__init__(name="segmenter_serving")
        from keras_segmenter.inference import check_window

        window_size, window_stride = default_window(model, window_size, window_stride)
        check_window(window_size, window_stride, batch_size)
        self.window_size = window_size
        self.window_stride = window_stride
        self.num_classes = num_classes_of(model)
        self.with_probabilities = bool(probabilities)
        self.batch_size = batch_size
        if max_pixels is None:
            max_pixels = default_max_pixels(self.num_classes, probabilities)
        if not isinstance(max_pixels, int) or max_pixels < window_size**2:
            raise UserError(
                f"`max_pixels` (--max-pixels) must be an int of at least one {window_size}x"
                f"{window_size} window, {window_size**2} pixels (smaller images are upscaled to "
                f"the window), or every request is refused. Received: max_pixels={max_pixels!r}"
            )
        self.max_pixels = max_pixels
        # The tf.Variable behind each Keras variable (see the class docstring).
        self.model_variables = [variable.value for variable in model.variables]
        segment = make_segment_fn(model, window_size, window_stride, probabilities, batch_size)

        # Inputs have unknown rank: loaded signatures check only the dtype, so
        # the shapes are checked in the graph, where the message can be clear.
        def limited(images):
            shape = tf.shape(images)
            return check_pixel_limit(
                images, shape[0], shape[1], shape[2], window_size, max_pixels, "`images` that"
            )

        self.serving_default = tf.function(
            lambda images: segment(limited(check_images(images))),
            input_signature=[tf.TensorSpec(None, tf.uint8, name="images")],
        )
        self.serving_bytes = tf.function(
            lambda image_bytes: segment(
                limited(decode_images(image_bytes, window_size, max_pixels))
            ),
            input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")],
        )

    def signatures(self):
        """The `signatures=` dict for `tf.saved_model.save`."""
        return {"serving_default": self.serving_default, "serving_bytes": self.serving_bytes}


def export_saved_model(
    model,
    path,
    window_size=None,
    window_stride=None,
    probabilities=False,
    batch_size=None,
    overwrite=False,
    max_pixels=None,
):
    """Writes `model` as a SavedModel with the TF Serving signatures.

    Args:
        model: a `keras_segmenter.Segmenter`.
        path: output folder, e.g. `models/segmenter/1` (TF Serving loads
            the numbered version folders of `models/segmenter`).
        window_size, window_stride, probabilities, batch_size, max_pixels: as
            in `SegmenterServingModule`.
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
    module = SegmenterServingModule(
        model, window_size, window_stride, probabilities, batch_size, max_pixels
    )

    def save(folder):
        tf.saved_model.save(module, os.fspath(folder), signatures=module.signatures())

    if path.is_dir() and any(path.iterdir()):
        save(path)  # overwrite=True: written into the folder, as documented
    else:
        atomic_write(path, save)  # TF Serving never finds a half-written version folder
    return module


PROG = command_prog("export")


def build_parser():
    """The command line of `keras-segmenter export`."""
    from keras_segmenter.export_runtimes import FORMATS

    parser = command_parser(
        "export",
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
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="also output class probabilities, float16 (batch, height, width, classes): 2 x classes "
        "bytes per pixel, e.g. 3.6 GB for a 12 MP photo and 150 classes",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="saved_model: windows per model call (default: as many as keep their logits near 256 MB)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="saved_model: refuse requests with more pixels (batch x height x width; default: what one 24 GB "
        f"machine holds at {BYTES_PER_PIXEL} + classes / 2 bytes per pixel, plus 4 x classes "
        "with --probabilities)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out folder"
    )
    return parser


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 2 bad arguments)."""
    from keras_segmenter.export_runtimes import SUFFIXES

    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: no such file (expected a .keras model file)")
    if args.format != "saved_model":
        if pathlib.Path(args.out).suffix != SUFFIXES[args.format]:
            raise UserError(
                f"--out {args.out}: --format {args.format} writes a {SUFFIXES[args.format]} file"
            )
        for flag in ("window_size", "window_stride", "batch_size", "max_pixels"):
            if getattr(args, flag) is not None:
                raise UserError(
                    f"--{flag.replace('_', '-')}: only for --format saved_model; --format "
                    f"{args.format} exports one pass of the model, the window is chosen at run "
                    "time (keras_segmenter.runtime.segment)"
                )
        if args.image_size is not None and args.image_size < 1:
            raise UserError(f"--image-size {args.image_size}: expected a positive int")
    elif args.image_size is not None:
        raise UserError("--image-size: only for --format onnx, openvino or litert")
    if args.format == "saved_model" and not pathlib.Path(args.out).name.isdigit():
        print(
            f"warning: TF Serving loads numbered version folders (models/<name>/<version>); "
            f"--out {args.out} does not end in a number",
            file=sys.stderr,
        )
    parent = os.path.abspath(args.out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        what = "not a folder" if not os.path.isdir(parent) else "a folder you cannot write to"
        raise UserError(f"--out {args.out}: {parent} is {what}")
    try:
        model = load_model(args.model)
    except UserError:
        raise
    except Exception as error:  # Keras raises many types for a bad file.
        raise UserError(f"--model {args.model}: cannot load the model: {error}") from None
    if args.format != "saved_model":
        return _export_runtime(model, args)
    module = export_saved_model(
        model,
        args.out,
        args.window_size,
        args.window_stride,
        args.probabilities,
        args.batch_size,
        args.overwrite,
        args.max_pixels,
    )
    outputs = "segmentation" + (", probabilities" if module.with_probabilities else "")
    print(
        f"Wrote {args.out}: signatures serving_default (images uint8 {IMAGES_SHAPE}) and "
        f"serving_bytes (image_bytes string (batch,)) -> {outputs}; window "
        f"{module.window_size}, stride {module.window_stride}, {module.num_classes} classes, "
        f"at most {module.max_pixels} pixels per request"
    )
    return 0


def _export_runtime(model, args):
    """`main` for --format onnx, openvino, litert."""
    from keras_segmenter.export_runtimes import export_runtime

    try:
        path = export_runtime(
            model, args.format, args.out, args.image_size, args.probabilities, args.overwrite
        )
    except ImportError as error:
        raise UserError(
            f"--format {args.format}: {error} (pip install 'keras-segmenter[export]')"
        ) from None
    if args.image_size is not None:
        size = f"{args.image_size}x{args.image_size} only"
    elif args.format == "litert":
        size = "{}x{} only".format(*model.backbone.image_size)
    else:
        size = "any size"
    outputs = "segmentation, logits" + (", probabilities" if args.probabilities else "")
    print(
        f"Wrote {path} ({args.format}): images float32 in [0, 255] {IMAGES_SHAPE}, {size} -> {outputs}; "
        f"{num_classes_of(model)} classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
