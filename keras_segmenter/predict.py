"""Segment your own images with a trained Segmenter.

From the command line:

    python -m keras_segmenter.predict --model model.keras photo.jpg photos/ --out results/ \
        [--dataset ade20k] [--window-size 512 --window-stride 480 | --whole] [--probabilities]

writes, per image, `<stem>_classes.png` (the class index of every pixel: a
mode "L" PNG, or 16-bit "I;16" for more than 256 classes) and
`<stem>_overlay.png` (the class colours over the photo, with a legend of the
classes present), and with `--probabilities` `<stem>_probabilities.npy`
(float16, see `segment_image`). Images are JPEG/PNG (or anything PIL reads) of any size
and mode: grayscale, RGBA, palette, 16-bit and CMYK images are converted to
RGB and the EXIF orientation is applied. A file that cannot be read is named
on stderr and skipped; the exit status is then 1.

From Python, on a file path, a PIL image or a uint8 RGB array:

    from keras_segmenter.predict import predict
    class_map = predict(model, "photo.jpg")  # int32 (H, W)

Inference follows the paper (Segmenter, ICCV 2021, section 4.2): sliding
windows of the model's training crop size, stride window - 32 (see
`default_window`), logits averaged over overlapping windows, merged band by
band so that memory stays bounded on large photos (`inference.segment`);
`whole=True` runs the model once on the whole image instead.
"""

import argparse
import os
import pathlib
import sys
import weakref

import numpy as np
from PIL import Image, ImageOps

from keras_segmenter.cli import LOG_NOTE, UserError, check_file, reports_user_errors
from keras_segmenter.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file that could not be opened or decoded."""


def to_rgb_array(image):
    """A PIL image of any mode as a uint8 RGB array `(H, W, 3)`.

    16-bit and 32-bit integer images ("I;16", "I", as PIL opens 16-bit
    PNGs) are scaled from [0, 65535] to [0, 255]; palette, grayscale, RGBA
    (alpha dropped) and CMYK images go through PIL's RGB conversion.

    Args:
        image: `PIL.Image.Image`.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P":
        # Palette images may carry transparency; going through RGBA keeps PIL quiet.
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path):
    """Reads an image file as a uint8 RGB array, EXIF orientation applied.

    Args:
        path: str or path-like.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        ImageReadError: the file is missing, not an image, or truncated; the
            message names the file.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            array = to_rgb_array(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"Cannot read image {os.fspath(path)!r}: {error}") from error
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(
            f"Cannot read image {os.fspath(path)!r}: it has no pixels ({array.shape})"
        )
    return array


def as_rgb_array(image):
    """A file path, PIL image or uint8 array as a uint8 RGB array `(H, W, 3)`.

    Arrays must be uint8 RGB `(H, W, 3)`; uint8 grayscale `(H, W)` is
    repeated over the three channels.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(ImageOps.exif_transpose(image))
    array = np.asarray(image)
    if array.dtype == np.uint8 and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            "`image` must be a file path, a PIL image or a uint8 RGB array (height, width, 3) "
            f"with values in [0, 255]. Received: dtype={array.dtype}, shape={array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"`image` has no pixels. Received: shape={array.shape}")
    return array


def default_window(model, window_size=None, window_stride=None):
    """Sliding-window size and stride for a model, as in the paper's evaluation.

    The window is the model's training crop (`model.backbone.image_size`,
    the shorter side if it is not square); the stride is `window - 32`
    (the official evaluation), but never below half the window, so that
    tiny test models do not need thousands of windows.

    Args:
        model: a `Segmenter` (anything with `backbone.image_size`).
        window_size: optional int, overrides the window.
        window_stride: optional int, overrides the stride.

    Returns:
        `(window_size, window_stride)` ints.
    """
    if window_size is None:
        image_size = getattr(getattr(model, "backbone", None), "image_size", None)
        if image_size is None:
            raise ValueError(
                "The model has no `backbone.image_size` (training crop), so the sliding window "
                "size is unknown: pass `window_size` (--window-size), or use whole-image "
                "inference (--whole)."
            )
        window_size = int(min(image_size))
    if window_stride is None:
        window_stride = max(window_size - 32, window_size // 2, 1)
    return int(window_size), int(window_stride)


def segment_image(
    model,
    normalize,
    image,
    window_size,
    window_stride,
    whole=False,
    batch_size=None,
    probabilities=False,
):
    """Class map and, if asked, probabilities of one RGB image, with TensorFlow ops.

    The graph shared by `predict` and the SavedModel export: normalization,
    then the sliding window of `inference.segment` (which never holds all
    window logits nor a full-resolution `(H, W, K)` float map) or, with
    `whole=True`, one pass of the model over the whole image (which does).

    Probabilities come as float16: 2 bytes per pixel and class (a 12 MP
    photo with 150 classes: 3.6 GB), half of float32, and nothing a user
    needs is lost: the error is below 2.5e-4 (half a float16 step below 1),
    probabilities down to 6e-8 stay non-zero (so log-probabilities and
    entropies stay finite), and the class map is the float32 argmax.
    uint8 quantization would halve it again but round every probability
    below 0.002 to zero.

    Args:
        model: a Keras segmentation model returning logits.
        normalize: a layer mapping [0, 255] RGB to the model's input
            (`ImageNormalization(model.normalization)`).
        image: `(H, W, 3)` tensor with values in [0, 255] (uint8 or float).
        window_size: int, sliding window side.
        window_stride: int, step between windows.
        whole: bool, run the model on the whole image instead of windows.
        batch_size: int, windows per model call (default: see
            `inference.windows_per_call`).
        probabilities: bool, also return the probabilities.

    Returns:
        `(classes, probs)`: int32 `(H, W)`, and float16 `(H, W, K)` or `None`.
    """
    import tensorflow as tf

    from keras_segmenter.inference import segment

    normalized = tf.cast(normalize(image[None]), tf.float32)[0]
    dtype = tf.float16 if probabilities else None
    if not whole:
        return segment(
            model,
            normalized,
            window_size,
            window_stride,
            batch_size=batch_size,
            probabilities=dtype,
        )
    probs = tf.nn.softmax(tf.cast(model(normalized[None], training=False)[0], tf.float32), axis=-1)
    classes = tf.argmax(probs, axis=-1, output_type=tf.int32)
    return classes, (tf.cast(probs, dtype) if probabilities else None)


# One traced predictor per (model, settings): repeated calls reuse the graph.
_PREDICTORS = weakref.WeakKeyDictionary()


def make_predictor(
    model, window_size=None, window_stride=None, whole=False, batch_size=None, probabilities=False
):
    """A `tf.function` from a uint8 RGB image `(H, W, 3)` to its int32 class map `(H, W)`.

    With `probabilities=True` it returns `(class map, float16 probabilities)`.
    Traced once for unknown height and width. Arguments as in `predict`.
    """
    import tensorflow as tf

    from keras_segmenter.inference import _check_window
    from keras_segmenter.layers.normalization import ImageNormalization

    if whole:
        window_size = window_stride = 1
    else:
        window_size, window_stride = default_window(model, window_size, window_stride)
    _check_window(window_size, window_stride, batch_size)
    key = (window_size, window_stride, bool(whole), batch_size, bool(probabilities))
    cache = _PREDICTORS.setdefault(model, {})
    if key not in cache:
        normalize = ImageNormalization(getattr(model, "normalization", "vit"))

        @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
        def predictor(image):
            classes, probs = segment_image(
                model,
                normalize,
                image,
                window_size,
                window_stride,
                whole,
                batch_size,
                probabilities,
            )
            return (classes, probs) if probabilities else classes

        cache[key] = predictor
    return cache[key]


def predict(
    model,
    image,
    window_size=None,
    window_stride=None,
    whole=False,
    batch_size=None,
    probabilities=False,
):
    """Class map of one image, in one call.

    Args:
        model: a `keras_segmenter.Segmenter` (or any Keras model mapping
            normalized images to logits; then give `window_size` or `whole`).
        image: a file path, a PIL image, or a uint8 RGB NumPy array
            `(H, W, 3)` (grayscale `(H, W)` is accepted too).
        window_size: int, sliding window side. Defaults to the training crop.
        window_stride: int, step between windows. Defaults to
            `window_size - 32` (see `default_window`).
        whole: bool, run the model once on the whole image instead of
            sliding windows. Defaults to `False`.
        batch_size: int, windows per model call. Defaults to as many as
            keep one call's logits near 256 MB (`inference.windows_per_call`).
        probabilities: bool, also return float16 class probabilities
            `(H, W, K)`: 2 x K bytes per pixel (see `segment_image`).
            Defaults to `False`.

    Returns:
        int32 NumPy array `(H, W)` of class indices; with `probabilities`,
        `(class map, float16 (H, W, K) probabilities)`.

    Example:

    >>> import keras_segmenter as ks
    >>> model = ks.Segmenter(ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2,
    ...     num_heads=2, mlp_dim=32, image_size=32), num_classes=5)
    >>> predict(model, np.zeros((40, 50, 3), np.uint8)).shape
    (40, 50)
    """
    array = as_rgb_array(image)
    predictor = make_predictor(model, window_size, window_stride, whole, batch_size, probabilities)
    if probabilities:
        classes, probs = predictor(array)
        return classes.numpy(), probs.numpy()
    return predictor(array).numpy()


def save_class_map(path, class_map, num_classes):
    """Writes a class map as a PNG: mode "L" up to 256 classes, else 16-bit "I;16"."""
    class_map = np.asarray(class_map)
    if num_classes <= 256:
        image = Image.fromarray(class_map.astype(np.uint8))
    elif num_classes <= 65536:
        image = Image.fromarray(class_map.astype(np.uint16))
    else:
        raise ValueError(
            f"A PNG class map holds at most 65536 classes. Received: num_classes={num_classes}"
        )
    atomic_write(path, image.save)


def find_images(inputs):
    """Expands files and folders into a list of image paths.

    Folders contribute their files with an image suffix (not recursively),
    sorted by name; files are taken as given whatever their suffix.

    Returns:
        `(paths, errors)`: a list of paths and a list of messages for
        inputs that do not exist or folders without images.
    """
    paths, errors = [], []
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                errors.append(f"{name}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            errors.append(f"{name}: no such file or folder")
    return paths, errors


def _unique_stem(path, used):
    stem, count = path.stem, 1
    while stem in used:
        count += 1
        stem = f"{path.stem}_{count}"
    used.add(stem)
    return stem


def _class_info(num_classes, dataset):
    from keras_segmenter import visualization

    if dataset is None:
        return [f"class {k}" for k in range(num_classes)], visualization.default_palette(
            num_classes
        )
    from keras_segmenter.data.dataset_info import get_dataset_info

    info = get_dataset_info(dataset)
    if info.num_classes != num_classes:
        raise ValueError(
            f"--dataset {dataset} has {info.num_classes} classes but the model predicts "
            f"{num_classes}. Received: --dataset {dataset}"
        )
    return list(info.class_names), visualization.as_palette(info.palette, num_classes)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m keras_segmenter.predict",
        epilog=LOG_NOTE,
        description="Segment images with a trained Segmenter: writes <stem>_classes.png "
        "(class indices) and <stem>_overlay.png (colours and legend) per image.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    parser.add_argument("--model", required=True, help="a .keras file saved from a Segmenter")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--dataset", help="dataset whose class names and palette to use (ade20k, cityscapes, ...)"
    )
    parser.add_argument(
        "--window-size", type=int, help="sliding window side (default: training crop)"
    )
    parser.add_argument(
        "--window-stride", type=int, help="sliding window step (default: window - 32)"
    )
    parser.add_argument("--whole", action="store_true", help="one model pass on the whole image")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="windows per model call (default: as many as keep their logits near 256 MB)",
    )
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <stem>_probabilities.npy, float16 (height, width, classes): 2 x classes "
        "bytes per pixel, e.g. 3.6 GB for a 12 MP photo and 150 classes",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)"
    )
    args = parser.parse_args(argv)
    if args.whole and (args.window_size or args.window_stride):
        raise UserError("--whole runs without windows; leave out --window-size/--window-stride")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1]. Received: --alpha {args.alpha}")
    return args


def load_model(path):
    """Loads a `.keras` Segmenter for inference (registers keras_segmenter's layers first).

    Not compiled: inference needs no optimizer, and restoring the training
    compile of a model whose `compile()` is custom only earns a warning.

    Raises:
        UserError: `path` is missing, a folder, or not a loadable `.keras`
            model; the message names the file.
    """
    import keras

    import keras_segmenter  # noqa: F401  (registers the custom layers)

    check_file(path, "a .keras model file")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path}: cannot load it as a .keras model ({reason})") from None


@reports_user_errors
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 1 some images failed, 2 bad arguments)."""
    args = _parse_args(argv)
    from keras_segmenter import visualization
    from keras_segmenter.inference import num_classes_of

    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {args.out} is a file; expected an output folder (created if needed)"
        )
    model = load_model(args.model)
    num_classes = num_classes_of(model)
    class_names, palette = _class_info(num_classes, args.dataset)
    predictor = make_predictor(
        model,
        args.window_size,
        args.window_stride,
        args.whole,
        args.batch_size,
        args.probabilities,
    )

    paths, errors = find_images(args.inputs)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    failed, done, used = len(errors), 0, set()
    for path in paths:
        try:
            image = load_image(path)
        except ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        outputs = predictor(image)
        class_map = (outputs[0] if args.probabilities else outputs).numpy()
        stem = _unique_stem(path, used)
        classes_path = out / f"{stem}_classes.png"
        overlay_path = out / f"{stem}_overlay.png"
        save_class_map(classes_path, class_map, num_classes)
        if args.probabilities:
            probs = outputs[1].numpy()
            atomic_write(out / f"{stem}_probabilities.npy", lambda tmp: np.save(tmp, probs))
        blended = visualization.overlay(image, class_map, palette, args.alpha)
        legend = visualization.present_classes(class_map)
        drawn = visualization.draw_legend(blended, legend, class_names, palette)
        atomic_write(overlay_path, drawn.save)
        print(f"{path} -> {classes_path}, {overlay_path}")
        done += 1
    if failed:
        print(f"{failed} input(s) failed, {done} image(s) done", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
