"""Segment your own images with a trained Segmenter.

From the command line:

    python -m keras_segmenter.predict --model model.keras photo.jpg photos/ --out results/ \
        [--dataset ade20k] [--window-size 512 --window-stride 480 | --whole] [--probabilities]

writes, per image, `<stem>_classes.png` (the class index of every pixel: a
mode "L" PNG, or 16-bit "I;16" for more than 256 classes) and
`<stem>_overlay.png` (the class colours over the photo, with a legend of the
classes present), and with `--probabilities` `<stem>_probabilities.npy`
(float16, see `inference.segment_image`). Images are JPEG/PNG (or anything PIL reads) of any size
and mode: grayscale, RGBA, palette, 16-bit and CMYK images are converted to
RGB and the EXIF orientation is applied. A file that cannot be read is named
on stderr and skipped; the exit status is then 1.

`--runner NAME [Beam pipeline options]` runs the same per-image step
(`prediction_step`) as an Apache Beam pipeline (`keras_segmenter.beam`).

From Python, on a file path, a PIL image or a uint8 RGB array:

    from keras_segmenter.predict import predict
    class_map = predict(model, "photo.jpg")  # int32 (H, W)

Inference follows the paper (Segmenter, ICCV 2021, section 4.2): sliding
windows of the model's training crop size, stride window - 32 (see
`inference.default_window`), logits averaged over overlapping windows, merged band by
band so that memory stays bounded on large photos (`inference.segment`);
`whole=True` runs the model once on the whole image instead.

Image reading and writing live in `keras_segmenter.images`, the graph in
`keras_segmenter.inference` (`make_predictor`); this file is the command.
"""

import pathlib
import sys

from keras_segmenter.cli import command_parser, command_prog, reports_user_errors
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write
from keras_segmenter.images import (
    MAX_PIXELS,
    ImageReadError,
    as_rgb_array,
    find_images,
    load_image,
    save_class_map,  # noqa: F401  (re-exported: `keras_segmenter.predict.save_class_map`)
)
from keras_segmenter.prediction import load_model, prediction_step, unique_stem


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
            `window_size - 32` (see `inference.default_window`).
        whole: bool, run the model once on the whole image instead of
            sliding windows. Defaults to `False`.
        batch_size: int, windows per model call. Defaults to as many as
            keep one call's logits near 256 MB (`inference.windows_per_call`).
        probabilities: bool, also return float16 class probabilities
            `(H, W, K)`: 2 x K bytes per pixel (see `inference.segment_image`).
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
    from keras_segmenter.inference import make_predictor

    array = as_rgb_array(image)
    predictor = make_predictor(model, window_size, window_stride, whole, batch_size, probabilities)
    if probabilities:
        classes, probs = predictor(array)
        return classes.numpy(), probs.numpy()
    return predictor(array).numpy()


PROG = command_prog("predict")


def build_parser():
    """The command line of `keras-segmenter predict` (Beam pipeline options may follow --runner)."""
    parser = command_parser(
        "predict",
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
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse images whose header declares more pixels (height x width), before "
        f"decoding them (default {MAX_PIXELS})",
    )
    parser.add_argument(
        "--runner",
        help="run as an Apache Beam pipeline on this runner (DirectRunner, FlinkRunner, "
        "SparkRunner, PortableRunner, DataflowRunner); inputs are then file patterns or folders "
        "on any Beam filesystem, and Beam pipeline options (--direct_num_workers=2, --project=...) "
        "may follow. Needs pip install 'keras-segmenter[beam]'",
    )
    return parser


def _parse_args(argv):
    parser = build_parser()
    args, pipeline_args = parser.parse_known_args(argv)
    if pipeline_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(pipeline_args)}")
    args.pipeline_args = pipeline_args
    if args.max_pixels < 1:
        raise UserError(f"--max-pixels must be a positive integer. Received: {args.max_pixels}")
    if args.whole and (args.window_size or args.window_stride):
        raise UserError("--whole runs without windows; leave out --window-size/--window-stride")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1]. Received: --alpha {args.alpha}")
    return args


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 1 some images failed, 2 bad arguments)."""
    args = _parse_args(argv)
    if args.runner:
        try:
            from keras_segmenter.beam import run_pipeline
        except ModuleNotFoundError as error:
            if error.name != "apache_beam":
                raise
            raise UserError(
                f"--runner {args.runner} needs Apache Beam: pip install 'keras-segmenter[beam]'"
            ) from None
        return run_pipeline(args)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {args.out} is a file; expected an output folder (created if needed)"
        )
    step = prediction_step(load_model(args.model), args)

    paths, errors = find_images(args.inputs)
    for message in errors:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    failed, done, used = len(errors), 0, set()
    for path in paths:
        try:
            image = load_image(path, max_pixels=args.max_pixels)
        except ImageReadError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            failed += 1
            continue
        stem = unique_stem(path, used)
        for suffix, write in step(image).items():
            atomic_write(out / f"{stem}{suffix}", write)
        print(f"{path} -> {out / f'{stem}_classes.png'}, {out / f'{stem}_overlay.png'}")
        done += 1
    if failed:
        print(f"{failed} input(s) failed, {done} image(s) done", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
