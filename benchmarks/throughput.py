"""Inference throughput of a Segmenter model (images/s), as one JSON line.

    python benchmarks/throughput.py --model seg_s16_mask --size 512 --batch 4 \
        [--precision float32|mixed_bfloat16|mixed_float16] [--runs 5] --json

Randomly initialised weights (speed does not depend on them). Each run
times `--steps` forward passes of a compiled `tf.function` that returns the
class map (argmax of the full-resolution logits, which are computed in the
graph); the result is the median over runs, after warm-up.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_s16_mask")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--xla", action="store_true", help="compile with XLA (jit_compile=True)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    import keras_segmenter as ks
    from machine import machine_info

    model = ks.build_segmenter(
        args.model, args.num_classes, image_size=args.size, dtype=args.precision
    )
    # The class map: the full-resolution logits are computed in the graph,
    # without timing a copy of (batch, size, size, classes) floats into NumPy.
    forward = tf.function(
        lambda x: tf.argmax(model(x, training=False), axis=-1), jit_compile=args.xla
    )
    images = tf.constant(
        np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)), tf.float32
    )
    for _ in range(2):
        forward(images).numpy()
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.steps):
            forward(images).numpy()
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
    result = {
        "benchmark": "inference_throughput",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "xla": args.xla,
        "images_per_sec": round(statistics.median(rates), 3),
        "runs_images_per_sec": [round(r, 3) for r in rates],
        "params": model.count_params(),
        "machine": machine_info(),
    }
    if not args.json:
        print(f"{args.model} {args.size}px batch {args.batch} {args.precision}: "
              f"{result['images_per_sec']} images/s (median of {args.runs})", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
