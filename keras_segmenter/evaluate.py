"""Evaluates a saved Segmenter with the paper's protocol (section 4.2, "Inference").

    python training/evaluate.py --model model.keras --dataset ade20k --data-dir DIR
    python training/evaluate.py --model model.keras --dataset ade20k --data-dir DIR --multi-scale
    python training/evaluate.py --model model.keras --dataset folder --data-dir DIR --output r.json

As the official `segm/eval/miou.py`: each image is rescaled as the dataset's
test pipeline (`base_size`, e.g. ADE20K short side 512; `--original-size`
keeps it as it is), predicted with sliding windows of the model's training
crop size (not the dataset's) and stride crop - 32, the probabilities are
resized to the ground truth's original resolution, and mIoU, per-class IoU, aAcc and mAcc are computed with
MMSegmentation's definitions. mIoU by object size (paper Table 4) uses
connected components of each ground-truth class as objects: small < 32^2,
medium 32^2..96^2, large >= 96^2 pixels (COCO's limits). `--multi-scale`
averages scales 0.5..1.75 with flips. Prints a table and writes JSON with a
top-level `mIoU`. `keras-segmenter evaluate` and
`python -m keras_segmenter.evaluate` are the same command.
"""

import argparse
import json
import math
import os
import sys

from keras_segmenter.cli import command_parser, command_prog, reports_user_errors
from keras_segmenter.data.download import download_hint
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write_text

PROG = command_prog("evaluate")


def build_parser():
    """The command line of `keras-segmenter evaluate`."""
    p = command_parser(
        "evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="a .keras model saved by fit.py or the converter")
    p.add_argument(
        "--dataset",
        required=True,
        help="ade20k, pascal_context, cityscapes, camvid, folder or tfds:NAME",
    )
    p.add_argument(
        "--data-dir", required=True, help="dataset root (for tfds:NAME, the TFDS data folder)"
    )
    p.add_argument("--split", default="val", help="evaluation split (default: val)")
    p.add_argument("--multi-scale", action="store_true", help="scales 0.5..1.75 with flips")
    p.add_argument("--flip", action="store_true", help="flip averaging (on with --multi-scale)")
    p.add_argument(
        "--window-size",
        type=int,
        help="default: the model's training crop (its backbone image_size)",
    )
    p.add_argument("--window-stride", type=int, help="default: window size - 32")
    p.add_argument(
        "--window-batch-size",
        type=int,
        help="windows per model call (default: as many as keep their logits near 256 MB)",
    )
    p.add_argument(
        "--original-size",
        action="store_true",
        help="do not rescale images to the dataset's base size before windowing",
    )
    p.add_argument("--no-object-sizes", action="store_true", help="skip mIoU by object size")
    p.add_argument("--num-classes", type=int, help="for --dataset folder (default: the model's)")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument(
        "--max-pixels",
        type=int,
        help="refuse files whose header declares more pixels, before decoding (default 50000000)",
    )
    p.add_argument("--output", help="write the results as JSON here")
    return p


def _json_safe(value):
    """NaN (classes absent from both truth and prediction) becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def format_table(results):
    """Per-class IoU / Acc table and the summary lines, in percent.

    A value that is not defined (a class absent from both truth and
    prediction, an object size with no object) is shown as `-`.
    """
    names = results.get("class_names") or [str(i) for i in range(len(results["IoU"]))]
    width = max(12, max(len(n) for n in names))
    pct = lambda v: "     -" if math.isnan(v) else f"{100 * v:6.2f}"  # noqa: E731
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
    for name, iou, acc in zip(names, results["IoU"], results["Acc"]):
        lines.append(f"{name:<{width}}  {pct(iou)}  {pct(acc)}")
    lines.append("-" * (width + 16))
    lines.append(
        f"mIoU {pct(results['mIoU'])}   aAcc {pct(results['aAcc'])}   mAcc {pct(results['mAcc'])}"
    )
    if "size_mIoU" in results:
        small, medium = results["size_thresholds"]
        sizes = results["size_mIoU"]
        lines.append(
            f"mIoU by object size: small (< {small} px) {pct(sizes['small'])}   "
            f"medium (< {medium} px) {pct(sizes['medium'])}   large {pct(sizes['large'])}"
        )
    return "\n".join(lines)


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    if not args.model.endswith(".keras"):
        raise UserError(f"--model must be a .keras file. Received: --model={args.model}")
    if not os.path.isdir(args.data_dir):
        raise UserError(
            f"--data-dir must be a folder{download_hint(args.dataset)}. "
            f"Received: --data-dir={args.data_dir}"
        )
    for flag in (
        "window_size",
        "window_stride",
        "window_batch_size",
        "num_classes",
        "limit",
        "max_pixels",
    ):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(
                f"--{flag.replace('_', '-')} must be a positive integer. Received: {value}"
            )
    if args.num_classes is not None and args.dataset != "folder":
        raise UserError(
            f"--num-classes is for --dataset folder; {args.dataset} has its own classes. "
            f"Received: --num-classes {args.num_classes}"
        )
    if args.output and os.path.isdir(args.output):
        raise UserError(
            f"--output {args.output} is a folder; expected the path of the JSON file to write"
        )

    from keras_segmenter.data import eval_dataset, get_dataset_info
    from keras_segmenter.evaluation import evaluate
    from keras_segmenter.inference import num_classes_of
    from keras_segmenter.prediction import load_model

    model = load_model(args.model)
    num_classes = num_classes_of(model)
    info_kwargs = {}
    if args.dataset == "folder":
        info_kwargs["num_classes"] = args.num_classes or num_classes
    info = get_dataset_info(args.dataset, **info_kwargs)
    if info.num_classes != num_classes:
        raise UserError(
            f"{args.model} predicts {num_classes} classes but --dataset {args.dataset} "
            f"has {info.num_classes}"
        )
    normalization = getattr(model, "normalization", "vit")
    dataset = eval_dataset(
        args.dataset,
        args.data_dir,
        split=args.split,
        normalization=normalization,
        max_pixels=args.max_pixels,
        **info_kwargs,
    )

    results = evaluate(
        model,
        dataset,
        info,
        window_size=args.window_size,
        window_stride=args.window_stride,
        multi_scale=args.multi_scale,
        flip=args.multi_scale or args.flip,
        base_size=False if args.original_size else None,
        object_sizes=not args.no_object_sizes,
        limit=args.limit,
        batch_size=args.window_batch_size,
    )
    results.update(model=args.model, dataset=args.dataset, split=args.split)
    print(format_table(results))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_write_text(args.output, json.dumps(_json_safe(results), indent=1))
        print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
