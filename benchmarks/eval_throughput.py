"""Evaluation throughput (images/s) of single-scale sliding-window inference, as one JSON line.

    python benchmarks/eval_throughput.py --model seg_ti16_mask --json
    python benchmarks/eval_throughput.py --model seg_s16_mask --height 512 --width 683 \
        --window 512 --stride 480 --runs 5 --images 2 --json

An ADE20K-sized image (683x512 by default: two 512 windows at stride 480),
randomly initialised weights (speed does not depend on them), 150 classes.
Each image goes through what `keras_segmenter.evaluation.evaluate` does per
image, object sizes aside: the traced sliding-window `tf.function`, argmax
and the confusion-matrix update. The result is the median over runs, after
one warm-up image.
"""

import argparse
import json
import os
import statistics
import sys
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_ti16_mask", help="a preset, or tiny (CI)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=683)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=480)
    parser.add_argument("--window-batch", type=int, default=4, help="windows per model call")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=2, help="images per run")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from machine import machine_info
    from models import build_model

    from keras_segmenter.inference import make_segment_function
    from keras_segmenter.metrics import confusion_matrix

    model = build_model(args.model, args.num_classes, args.window)
    infer = make_segment_function(
        model, args.window, args.stride, batch_size=args.window_batch, probabilities=True
    )
    rng = np.random.default_rng(0)
    image = tf.constant(rng.normal(size=(args.height, args.width, 3)), tf.float32)
    mask = tf.constant(rng.integers(0, args.num_classes, (args.height, args.width)), tf.int32)
    confusion = np.zeros((args.num_classes, args.num_classes), np.int64)

    def evaluate_one():
        nonlocal confusion
        pred = tf.argmax(infer(image), axis=-1, output_type=tf.int32)
        confusion += confusion_matrix(mask, pred, args.num_classes).numpy()

    evaluate_one()
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.images):
            evaluate_one()
        rates.append(args.images / (time.perf_counter() - start))
    result = {
        "benchmark": "eval_throughput",
        "model": args.model,
        "image": [args.height, args.width],
        "window": args.window,
        "stride": args.stride,
        "num_classes": args.num_classes,
        "images_per_sec": round(statistics.median(rates), 4),
        "runs_images_per_sec": [round(r, 4) for r in rates],
        "traces": infer.experimental_get_tracing_count(),
        "params": model.count_params(),
        "machine": machine_info(),
    }
    if not args.json:
        print(
            f"{args.model} {args.height}x{args.width} window {args.window} stride {args.stride}: "
            f"{result['images_per_sec']} images/s (median of {args.runs})",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
