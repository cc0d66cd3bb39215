"""Peak memory (resident set size) and seconds of `predict` on large photos, as one JSON line.

    python benchmarks/memory.py --json
    python benchmarks/memory.py --sizes 1536x2048 3000x4000 --model seg_ti16_mask --num-classes 150
    python benchmarks/memory.py --multi-scale --sizes 512x683 --json

Each photo size runs in a fresh Python process (so that one case's freed
memory does not hide the next one's peak): it builds the model with random
weights (memory and speed do not depend on them), reads its resident set
size, traces the graph on a small image (peak resident set size after
tracing), then runs `keras_segmenter.predict.predict` once on a random uint8
photo (normalization, sliding window of the training crop, stride window -
32, class map) and reports the process's peak resident set size
(`getrusage` `ru_maxrss`), which includes TensorFlow, the model and tracing.
The issue's targets for a 150-class Seg-Ti/16-mask on one CPU: a 3 MP photo
under 1.5 GB, a 12 MP photo under 3 GB. `--multi-scale` runs the class map
of the evaluation's multi-scale protocol instead (scales 0.5 to 1.75 with
flips, `inference.make_segment_function`) on a normalized random image.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def current_rss_mb():
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_case(args):
    """Runs one photo in this process; prints its JSON line."""
    sys.path.insert(0, REPO)
    import numpy as np

    import keras_segmenter as ks
    from keras_segmenter import inference
    from keras_segmenter.predict import predict

    height, width = (int(v) for v in args.one.split("x"))
    model = ks.build_segmenter(args.model, args.num_classes, image_size=args.window)
    photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    small = photo[: args.window // 2, : args.window // 2]  # traces the same graph
    if args.multi_scale:
        window, stride = inference.default_window(model)
        infer = inference.make_segment_function(
            model, window, stride, inference.OFFICIAL_SCALES, flip=True
        )
        normalize = ks.ImageNormalization(model.normalization)
        run = lambda image: infer(normalize(image[None])[0]).numpy()  # noqa: E731
    else:
        run = lambda image: predict(model, image)  # noqa: E731
    before = current_rss_mb()
    run(small)
    traced = peak_rss_mb()
    start = time.perf_counter()
    class_map = run(photo)
    seconds = time.perf_counter() - start
    assert class_map.shape == (height, width)
    print(
        json.dumps(
            {
                "image": [height, width],
                "megapixels": round(height * width / 1e6, 2),
                "peak_rss_mb": round(peak_rss_mb()),
                "rss_before_predict_mb": round(before),
                "peak_rss_after_tracing_mb": round(traced),
                "seconds": round(seconds, 1),
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_ti16_mask", help="a preset of keras_segmenter")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--window", type=int, default=512, help="training crop = window size")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["1536x2048", "3000x4000"],
        help="photo sizes HEIGHTxWIDTH (default: 3 MP and 12 MP)",
    )
    parser.add_argument(
        "--multi-scale", action="store_true", help="the multi-scale, flip class map instead"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one size here
    args = parser.parse_args()
    if args.one:
        return one_case(args)

    from machine import machine_info

    cases = []
    for size in args.sizes:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--one",
            size,
            "--model",
            args.model,
            "--num-classes",
            str(args.num_classes),
            "--window",
            str(args.window),
        ] + (["--multi-scale"] if args.multi_scale else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            cases.append({"image": size, "error": result.stderr.strip().splitlines()[-1:]})
            continue
        cases.append(json.loads(result.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(f"{size}: {cases[-1]}", file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "inference_memory",
                "model": args.model,
                "num_classes": args.num_classes,
                "window": args.window,
                "multi_scale": args.multi_scale,
                "cases": cases,
                "load_average": [round(v, 1) for v in os.getloadavg()],
                "machine": machine_info(),
            }
        )
    )


if __name__ == "__main__":
    main()
