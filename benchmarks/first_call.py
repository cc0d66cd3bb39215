"""Seconds from starting the `predict` command to its first class map, as one JSON line.

    python benchmarks/first_call.py --model seg_s16_mask --json
    python benchmarks/first_call.py --model seg_s16_mask --size 512x683 --runs 3 --json

What a user waits for on one photo: a randomly initialised model is saved
as a `.keras` file and a random photo of `--size` (HEIGHTxWIDTH, default
ADE20K's 512x683: two 512 windows) as a JPEG (neither is timed), then
`python -m keras_segmenter.predict --model M --out DIR photo.jpg` runs in a
child process, `--runs` times. `seconds_to_class_map` is from starting the
child to the class-map PNG being written (its modification time: Python's
start, the imports, loading the model, tracing the predictor, its first
run, the PNG); `seconds_total` to the child's exit (the overlay, teardown).

The split comes from a second child per run that takes the same steps
in-process with a clock between them (`--split`): `import` (the predict
command's modules, TensorFlow and Keras with them), `load` (the `.keras`
file), `trace` (the predictor's graph: `make_predictor` and
`get_concrete_function`), `first_run` (its first call on the photo: graph
optimization and kernel set-up included) and, for comparison, `second_run`.
Reported: the median of each over the runs, and the load average.
"""

import time

STARTED = time.perf_counter()  # --split: the imports below are the command's imports too

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import keras_segmenter  # noqa: E402, F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SPLIT = ("import", "load", "trace", "first_run", "second_run")


def split_case(model_path, photo):
    """The predict command's steps, timed in this (child) process; prints `{step: seconds}`."""
    import pathlib

    from keras_segmenter import predict  # noqa: F401  the command's own imports
    from keras_segmenter.images import load_image
    from keras_segmenter.inference import make_predictor
    from keras_segmenter.prediction import load_model

    marks = [time.perf_counter()]
    model = load_model(model_path)
    marks.append(time.perf_counter())
    image = load_image(pathlib.Path(photo))
    predictor = make_predictor(model)
    predictor.get_concrete_function()
    marks.append(time.perf_counter())
    for _ in range(2):
        predictor(image).numpy()
        marks.append(time.perf_counter())
    steps = [b - a for a, b in zip([STARTED] + marks, marks)]
    print(json.dumps({name: round(s, 3) for name, s in zip(SPLIT, steps)}))


def run_command(command, class_map):
    """Runs the predict command; returns (seconds to `class_map` written, seconds to exit)."""
    start_wall, start = time.time(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    total = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"predict failed: {result.stderr.strip().splitlines()[-1:]}")
    return os.stat(class_map).st_mtime - start_wall, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_s16_mask", help="a preset, or tiny (CI)")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--size", default="512x683", help="photo HEIGHTxWIDTH (default 512x683)")
    parser.add_argument("--window", type=int, default=512, help="training crop = window size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--split", nargs=2, help=argparse.SUPPRESS)  # internal: MODEL PHOTO
    args = parser.parse_args()
    if args.split:
        return split_case(*args.split)
    try:
        height, width = (int(v) for v in args.size.split("x"))
    except ValueError:
        parser.error(f"--size must be HEIGHTxWIDTH, e.g. 512x683. Received: {args.size}")
    if min(height, width, args.runs) < 1:
        parser.error("--size sides and --runs must be positive integers")

    from machine import machine_info
    from memory import predict_command
    from models import build_model

    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "model.keras")
        build_model(args.model, args.num_classes, args.window).save(model_path)
        command = predict_command(args.size, model_path, folder)
        out, photo = command[-2], command[-1]
        class_map = os.path.join(out, f"photo_{args.size}_classes.png")
        split_command = [sys.executable, os.path.abspath(__file__), "--split", model_path, photo]
        runs, splits, loads = [], [], []
        for _ in range(args.runs):
            loads.append(round(os.getloadavg()[0], 2))
            runs.append(run_command(command, class_map))
            os.remove(class_map)
            child = subprocess.run(split_command, capture_output=True, text=True, check=True)
            splits.append(json.loads(child.stdout.strip().splitlines()[-1]))
    result = {
        "benchmark": "first_call",
        "model": args.model,
        "num_classes": args.num_classes,
        "window": args.window,
        "photo": [height, width],
        "command": "python -m keras_segmenter.predict --model MODEL.keras --out DIR PHOTO.jpg",
        "seconds_to_class_map": round(statistics.median(r[0] for r in runs), 2),
        "seconds_total": round(statistics.median(r[1] for r in runs), 2),
        "runs_seconds_to_class_map": [round(r[0], 2) for r in runs],
        "split_seconds": {
            name: round(statistics.median(s[name] for s in splits), 2) for name in SPLIT
        },
        "load_average_1min": loads,
        "machine": machine_info(),
    }
    if not args.json:
        print(
            f"{args.model}, {args.size} photo: class map written {result['seconds_to_class_map']}"
            f" s after the start of predict (split: {result['split_seconds']})",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
