"""Latency of one image: Keras model + sliding window vs the exported SavedModel, as one JSON line.

    python benchmarks/export_latency.py [--model seg_ti16_mask] [--height 512 --width 683] \
        [--window 512] [--runs 5] --json

Randomly initialised weights (speed does not depend on them). The Keras path
is `keras_segmenter.predict.predict` (normalization + sliding window in a
`tf.function`, class map back as NumPy); the SavedModel path exports the same
model with `keras_segmenter.export`, loads it with `tf.saved_model.load`, and
calls its `serving_default` signature on a uint8 batch of one. Both are
warmed up (traced) first; the result is the median over `--runs` calls.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def median_ms(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_ti16_mask", help="a preset, or tiny (CI)")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=683)
    parser.add_argument("--window", type=int, default=512, help="training crop = window size")
    parser.add_argument("--stride", type=int, help="window stride (default window - 32)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from machine import machine_info
    from models import build_model

    from keras_segmenter.export import export_saved_model
    from keras_segmenter.inference import default_window
    from keras_segmenter.predict import predict

    model = build_model(args.model, args.num_classes, args.window)
    window, stride = default_window(model, args.window, args.stride)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)

    keras_ms = median_ms(lambda: predict(model, image, window, stride), args.runs)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "segmenter", "1")
        start = time.perf_counter()
        export_saved_model(model, path, window, stride)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        serving = tf.saved_model.load(path).signatures["serving_default"]
        load_s = time.perf_counter() - start
        batch = tf.constant(image[None])
        saved_ms = median_ms(lambda: serving(images=batch)["segmentation"].numpy(), args.runs)
        served = serving(images=batch)["segmentation"][0].numpy()
        same = bool(np.array_equal(served, predict(model, image, window, stride)))

    result = {
        "benchmark": "export_latency",
        "model": args.model,
        "num_classes": args.num_classes,
        "image": [args.height, args.width],
        "window": window,
        "stride": stride,
        "keras_sliding_window_ms": round(keras_ms, 1),
        "saved_model_ms": round(saved_ms, 1),
        "saved_model_over_keras": round(saved_ms / keras_ms, 3),
        "export_s": round(export_s, 1),
        "load_s": round(load_s, 1),
        "same_class_map": same,
        "runs": args.runs,
        **machine_info(),
    }
    if not args.json:
        print(
            f"{args.model}, {args.height}x{args.width}, window {window} stride {stride}: "
            f"Keras {keras_ms:.1f} ms, SavedModel {saved_ms:.1f} ms (median of {args.runs})"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
