"""Run a Segmenter exported for ONNX Runtime, OpenVINO or LiteRT, with NumPy.

    from keras_segmenter.runtime import ExportedModel, segment

    model = ExportedModel("segmenter.onnx")     # or .xml (OpenVINO), .tflite (LiteRT)
    class_map = segment(model, rgb_uint8_image, window_size=512)   # int32 (H, W)

`segment` is the paper's sliding-window inference (Segmenter, ICCV 2021,
section 4.2) as `keras_segmenter.inference.segment` does it:
images whose short side is below the window are upscaled, windows are
taken at the same anchors, window logits are averaged where they overlap,
resized bilinearly (half-pixel centres) to the image size, and the class
map is their argmax. The exported graphs take float32 pixel values in
[0, 255], so an upscaled image goes in unrounded (bilinear resizing and
the graph's normalization commute, up to float32 round-off).

This file imports only NumPy and the runtime (`onnxruntime`, `openvino` or
`ai_edge_litert`), never TensorFlow, Keras or the rest of keras_segmenter,
so it can be copied alone next to a deployed model.
"""

import pathlib

import numpy as np

# What each file type can run in (`ExportedModel(path, precision)`).
PRECISIONS = {
    ".onnx": ("float32",),
    ".xml": ("float32", "bfloat16"),
    ".tflite": ("float32",),
}


class ExportedModel:
    """An exported Segmenter file, run by its own runtime on the CPU.

    Calling it on images `(batch, height, width, 3)`, uint8 or float32
    pixel values in [0, 255], returns a dict of NumPy arrays:
    `segmentation`, `logits` (and `probabilities` if exported with them).

    Args:
        path: a `.onnx` (onnxruntime), `.xml` (openvino, with its `.bin`)
            or `.tflite` (ai-edge-litert) file from `keras_segmenter.export`.
        precision: `"float32"` (default) or, for OpenVINO only, `"bfloat16"`:
            its CPU plugin runs the matrix products and most other ops in
            bfloat16 (`INFERENCE_PRECISION_HINT`), on AMX or AVX-512 bf16
            units where the CPU has them; the class map may then differ
            from float32's on pixels where two classes are close.

    Attributes:
        image_size: `(height, width)` the file requires, or `None` if it
            takes any size.
    """

    def __init__(self, path, precision="float32"):
        path = pathlib.Path(path)
        loaders = {".onnx": self._onnx, ".xml": self._openvino, ".tflite": self._litert}
        if path.suffix not in loaders:
            raise ValueError(
                f"Expected a .onnx, .xml (OpenVINO) or .tflite file. Received: path={str(path)!r}"
            )
        if precision not in PRECISIONS[path.suffix]:
            raise ValueError(
                f"A {path.suffix} file runs in precision {' or '.join(PRECISIONS[path.suffix])}. "
                f"Received: precision={precision!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r}: no such file")
        self._run, shape = loaders[path.suffix](str(path), precision)
        self.image_size = None if None in shape[1:3] else tuple(shape[1:3])

    @staticmethod
    def _onnx(path, _precision):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        shape = [d if isinstance(d, int) else None for d in session.get_inputs()[0].shape]

        def run(images):
            return dict(zip(names, session.run(names, {"images": images})))

        return run, shape

    @staticmethod
    def _openvino(path, precision):
        import sys

        # No usage statistics: OpenVINO falls back to a no-op stub without
        # `openvino_telemetry` (see export_runtimes._block_openvino_telemetry).
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino

        # Asked for, as the CPU plugin otherwise picks bfloat16 by itself on AMX CPUs.
        hint = {"float32": "f32", "bfloat16": "bf16"}[precision]
        compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        shape = [None if d.is_dynamic else d.get_length() for d in compiled.input(0).partial_shape]

        def run(images):
            results = compiled(images)
            return {output.any_name: results[output] for output in compiled.outputs}

        return run, shape

    @staticmethod
    def _litert(path, _precision):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        shape = [
            None if d < 0 else int(d)
            for d in runner.get_input_details()["images"]["shape_signature"]
        ]
        return (lambda images: runner(images=images)), shape

    def __call__(self, images):
        images = np.asarray(images)
        if images.dtype not in (np.uint8, np.float32) or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                "Expected uint8 or float32 images (batch, height, width, 3) in [0, 255]. "
                f"Received: dtype={images.dtype}, shape={images.shape}"
            )
        if self.image_size and images.shape[1:3] != self.image_size:
            raise ValueError(
                f"This file takes images of exactly {self.image_size} (height, width); use "
                f"segment() for other sizes. Received: shape={images.shape}"
            )
        return self._run(np.ascontiguousarray(images, np.float32))


def resize_bilinear(array, height, width):
    """`tf.image.resize(array, (height, width), "bilinear")` in float32 NumPy.

    Half-pixel centres, no antialiasing (PyTorch's `align_corners=False`),
    with TensorFlow's order of float32 operations.
    """
    array = np.asarray(array, np.float32)

    def weights(out_size, in_size):
        scale = np.float32(in_size / out_size)
        source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = np.floor(source)
        lower = np.maximum(floor, 0).astype(np.int64)
        upper = np.minimum(np.ceil(source), in_size - 1).astype(np.int64)
        return lower, upper, (source - floor).astype(np.float32)

    top, bottom, y = weights(height, array.shape[0])
    left, right, x = weights(width, array.shape[1])
    x = x[None, :, None]
    upper_row, lower_row = array[top], array[bottom]
    upper_row = upper_row[:, left] + (upper_row[:, right] - upper_row[:, left]) * x
    lower_row = lower_row[:, left] + (lower_row[:, right] - lower_row[:, left]) * x
    return upper_row + (lower_row - upper_row) * y[:, None, None]


def window_anchors(size, window_size, window_stride):
    """Window offsets `0, stride, ...` below `size - window_size`, then `size - window_size`."""
    last = size - window_size
    return list(range(0, last, window_stride)) + [last]


def upscaled_shape(height, width, window_size):
    """The official upscaling of images whose short side is below the window."""
    short = min(height, width)
    if short >= window_size:
        return height, width
    long_side = int(max(height, width) / short * window_size)
    return (window_size, long_side) if height < width else (long_side, window_size)


def _check_window(model, window_size, window_stride):
    """`(window_size, window_stride)` with the defaults filled in and checked."""
    fixed = getattr(model, "image_size", None)
    if window_size is None:
        if fixed is None or fixed[0] != fixed[1]:
            raise ValueError(
                "`window_size` is needed: this model takes any size, give the training crop."
            )
        window_size = fixed[0]
    elif fixed is not None and fixed != (window_size, window_size):
        raise ValueError(
            f"This file runs {fixed} windows only. Received: window_size={window_size}"
        )
    if window_stride is None:
        window_stride = max(window_size - 32, window_size // 2, 1)
    if not 1 <= window_stride <= window_size:
        raise ValueError(
            f"`window_stride` must be in [1, window_size]. Received: window_stride={window_stride}"
        )
    return window_size, window_stride


def sliding_window_logits(model, image, window_size=None, window_stride=None, batch_size=4):
    """Window-averaged logits of one image, resized to its size.

    Args:
        model: an `ExportedModel` (or any callable from float32 windows
            `(n, window, window, 3)` to a dict with `logits`).
        image: uint8 RGB array `(height, width, 3)`.
        window_size: int, the window side: the training crop. Defaults to
            the file's fixed input size (LiteRT); required for files that
            take any size (ONNX, OpenVINO).
        window_stride: int, step between windows. Defaults to
            `max(window - 32, window // 2)`, as `keras_segmenter.inference.default_window`.
        batch_size: int, windows per runtime call. Defaults to 4.

    Returns:
        float32 `(height, width, K)` logits.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(
            f"`image` must be a uint8 RGB array (height, width, 3). Received: dtype={image.dtype}, "
            f"shape={image.shape}"
        )
    window_size, window_stride = _check_window(model, window_size, window_stride)
    height, width = image.shape[:2]
    new_height, new_width = upscaled_shape(height, width, window_size)
    if (new_height, new_width) != (height, width):
        image = resize_bilinear(image, new_height, new_width)  # float32, not rounded
    anchors = [
        (row, col)
        for row in window_anchors(new_height, window_size, window_stride)
        for col in window_anchors(new_width, window_size, window_stride)
    ]
    total = count = None
    for start in range(0, len(anchors), batch_size):
        batch = anchors[start : start + batch_size]
        windows = np.stack([image[r : r + window_size, c : c + window_size] for r, c in batch])
        windows = windows.astype(np.float32)
        logits = np.asarray(model(windows)["logits"], np.float32)
        if total is None:
            total = np.zeros((new_height, new_width, logits.shape[-1]), np.float32)
            count = np.zeros((new_height, new_width, 1), np.float32)
        # Added one window after the other, in anchor order, as the official loop.
        for (r, c), window_logits in zip(batch, logits):
            total[r : r + window_size, c : c + window_size] += window_logits
            count[r : r + window_size, c : c + window_size] += 1
    return resize_bilinear(total / count, height, width)


def segment(model, image, window_size=None, window_stride=None, batch_size=4, probabilities=False):
    """Class map of one image of any size by sliding-window inference.

    Arguments as in `sliding_window_logits`; `probabilities=True` also
    returns the softmax of the logits.

    Returns:
        int32 `(height, width)` class map, or `(class_map, probabilities)`
        with float32 probabilities `(height, width, K)`.
    """
    logits = sliding_window_logits(model, image, window_size, window_stride, batch_size)
    class_map = np.argmax(logits, axis=-1).astype(np.int32)
    if not probabilities:
        return class_map
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return class_map, exp / exp.sum(axis=-1, keepdims=True)
