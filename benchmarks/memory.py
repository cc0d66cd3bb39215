"""Peak memory (resident set size) and seconds of the `predict` command on large photos, as one JSON line.

    python benchmarks/memory.py --json
    python benchmarks/memory.py --sizes 1536x2048 3000x4000 --model seg_ti16_mask --num-classes 150
    python benchmarks/memory.py --multi-scale --sizes 512x683 --json

Measures what the user runs: it saves a randomly initialised model (memory
and speed do not depend on the weights) as a `.keras` file and a random
photo of each size as a JPEG, then runs `python -m keras_segmenter.predict
--model M --out DIR photo.jpg` (window: the training crop, stride window -
32; the class-map PNG and the overlay with its legend are written) in a
child process, once per size, and reports the child's peak resident set
size (`os.wait4`'s `ru_maxrss`) and wall time, which include starting
Python, importing TensorFlow, loading the model and writing the outputs.
The issue's targets for a 150-class Seg-Ti/16-mask on one CPU: a 3 MP photo
under 1.5 GB, a 12 MP photo under 3 GB. `--multi-scale` runs the class map
of the evaluation's multi-scale protocol instead (scales 0.5 to 1.75 with
flips, `inference.make_segment_function`), which no command runs on one
photo: in a child process of this script, on a normalized random image.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICT_COMMAND = "python -m keras_segmenter.predict --model MODEL.keras --out DIR PHOTO.jpg"


def run_child(command):
    """Runs `command`; returns (exit status, stderr, peak RSS in MB of the child, seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read()
    seconds = time.perf_counter() - start
    return child.returncode, stderr, usage.ru_maxrss / 1024, seconds  # Linux: kilobytes


def multi_scale_case(args):
    """The multi-scale class map of one random image, in this process (the child)."""
    sys.path.insert(0, REPO)
    import numpy as np
    from models import build_model

    import keras_segmenter as ks
    from keras_segmenter import inference

    height, width = (int(v) for v in args.one.split("x"))
    model = build_model(args.model, args.num_classes, args.window)
    photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    window, stride = inference.default_window(model)
    infer = inference.make_segment_function(
        model, window, stride, inference.OFFICIAL_SCALES, flip=True
    )
    normalize = ks.ImageNormalization(model.normalization)
    assert infer(normalize(photo[None])[0]).numpy().shape == (height, width)


def predict_command(size, model_path, folder):
    """The predict command on a random JPEG of `size` (HEIGHTxWIDTH), written into `folder`."""
    import numpy as np
    from PIL import Image

    height, width = (int(v) for v in size.split("x"))
    photo = os.path.join(folder, f"photo_{size}.jpg")
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo, quality=90)
    out = os.path.join(folder, f"out_{size}")
    return [
        sys.executable,
        "-m",
        "keras_segmenter.predict",
        "--model",
        model_path,
        "--out",
        out,
        photo,
    ]


def measure(command, size):
    """The JSON case of one child process: peak resident set size and seconds."""
    status, stderr, peak, seconds = run_child(command)
    if status != 0:
        return {"image": size, "error": stderr.strip().splitlines()[-1:]}
    height, width = (int(v) for v in size.split("x"))
    return {
        "image": [height, width],
        "megapixels": round(height * width / 1e6, 2),
        "peak_rss_mb": round(peak),
        "seconds": round(seconds, 1),
    }


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
        return multi_scale_case(args)

    from machine import machine_info

    cases = []
    with tempfile.TemporaryDirectory() as folder:
        if not args.multi_scale:
            from models import build_model

            model_path = os.path.join(folder, "model.keras")
            build_model(args.model, args.num_classes, args.window).save(model_path)
        for size in args.sizes:
            if args.multi_scale:
                command = [sys.executable, os.path.abspath(__file__), "--one", size]
                command += ["--model", args.model, "--num-classes", str(args.num_classes)]
                command += ["--window", str(args.window), "--multi-scale"]
            else:
                command = predict_command(size, model_path, folder)
            cases.append(measure(command, size))
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
                "command": None if args.multi_scale else PREDICT_COMMAND,
                "cases": cases,
                "load_average": [round(v, 1) for v in os.getloadavg()],
                "machine": machine_info(),
            }
        )
    )


if __name__ == "__main__":
    main()
