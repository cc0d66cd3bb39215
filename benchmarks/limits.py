"""How close inference is to its limits: ours against the matrix-product bound and the
official code, per precision, in interleaved rounds, as one JSON line.

    python benchmarks/limits.py --model seg_s16_mask --size 512 --batch 4 --rounds 3 \\
        [--precisions float32 mixed_bfloat16] [--peer-python /tmp/peer/bin/python] \\
        [--backend tensorflow|torch [--torch-compile]] [--train] --json

Each round runs, for each precision one after the other: our inference
(`throughput.py`'s Keras runtime: normalization, the model and the argmax of
its logits in one `tf.function`, on a random uint8 batch; with `--backend
torch` eager PyTorch, or with `--torch-compile` the same compiled by
Inductor with frozen weights), the ceiling of its matrix products alone
(`matmul_bound.py`: the same shapes, dtype and kernels: TensorFlow's, eager
`torch.matmul`, or the products compiled as the model is), and with
`--peer-python` the official model
(`../shared/peer/bench_forward.py --compile-only`, with `--amp` for
bfloat16: torch.compile, and bf16 autocast) in a child process of that
Python. Ours and the bound run in this process on one set of random
weights (the bfloat16 model gets the float32 one's); each is timed
`--runs` times per round and the round's median kept. The JSON holds,
per precision, every round's images/s, their medians, and the ratios of
the medians `ours_over_bound` and `ours_over_official`, the official
runs' `other_procs_cpu_frac` (above ~0.05: another process competed), the
load average before each round, the backend and the machine.

The official benchmark times the logits, ours the class map (the logits'
argmax at full resolution: more work, as a user gets it).

With `--train` the same rounds time the training step instead, on
`--size` crops (`train_throughput.py`'s step: `model.fit`'s, compiled
with `jit_compile=True` under `--torch-compile`; `--runs` timed steps
after two untimed ones) against the official step
(`../shared/peer/bench_train.py`: eager, as the official `train.py` runs,
with `--amp` for bfloat16); there is no bound (`null`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import set_backend_from_argv  # noqa: E402

set_backend_from_argv()  # before Keras is imported

import keras_segmenter  # noqa: E402, F401  first: TensorFlow set up as the commands do it

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(os.path.dirname(REPO), "shared", "peer")
PRECISIONS = ("float32", "mixed_bfloat16")


def rate(function, batch, runs):
    """Median images/s of `runs` timed calls of `function` (after two untimed ones)."""
    for _ in range(2):
        function()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def official_rate(args, precision):
    """`(images/s, other_procs_cpu_frac)` of the official model in a child process."""
    command = [args.peer_python, args.peer_script, "--variants", args.model]
    if args.train:
        command += ["--crop", str(args.size), "--batch", str(args.batch)]
        command += ["--classes", str(args.num_classes), "--steps", str(args.runs)]
    else:
        command += ["--batches", str(args.batch), "--size", str(args.size)]
        command += ["--runs", str(args.runs), "--compile-only"]
    command += ["--amp"] if precision != "float32" else []
    child = subprocess.run(command, capture_output=True, text=True)
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines or "images_per_s" not in lines[-1]:
        reason = (lines[-1].get("error") if lines else None) or child.stderr.strip()[-300:]
        raise SystemExit(f"--peer-python: the official benchmark failed: {reason}")
    return lines[-1]["images_per_s"], lines[-1].get("other_procs_cpu_frac")


def main():
    from matmul_bound import BACKENDS
    from models import add_backend_flag, check_backend, forward_parser

    parser = forward_parser(__doc__.split("\n\n")[0])
    add_backend_flag(parser, torch_compile=True)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per round and path")
    parser.add_argument("--peer-python", help="the official code's Python (../shared/peer)")
    parser.add_argument("--peer-script", help=argparse.SUPPRESS)
    parser.add_argument("--train", action="store_true", help="time the training step instead")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    check_backend(parser, args, BACKENDS)
    script = "bench_train.py" if args.train else "bench_forward.py"
    args.peer_script = args.peer_script or os.path.join(PEER, script)
    if min(args.size, args.batch, args.rounds, args.runs) < 1:
        parser.error("--size, --batch, --rounds and --runs must be positive integers")
    if args.peer_python and not os.path.isfile(args.peer_python):
        parser.error(f"--peer-python {args.peer_python}: no such file")
    if args.peer_python and not os.path.isfile(args.peer_script):
        parser.error(f"the official benchmark {args.peer_script} is missing")

    import keras
    from machine import machine_info

    keras.utils.set_random_seed(0)
    paths = training_paths(args) if args.train else inference_paths(args)
    rounds = {p: {"ours": [], "bound": [], "official": [], "other": []} for p in args.precisions}
    loads = []
    for _ in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for precision in args.precisions:
            found = rounds[precision]
            for name, path in paths[precision].items():
                found[name].append(round(rate(path, args.batch, args.runs), 3))
            if args.peer_python:
                official, other = official_rate(args, precision)
                found["official"].append(official)
                found["other"].append(other)
    result = {
        "benchmark": "limits",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "rounds": args.rounds,
        "runs": args.runs,
        "backend": args.backend,
        "torch_compile": args.torch_compile,
        "mode": "train" if args.train else "inference",
        "precisions": {p: summary(rounds[p]) for p in args.precisions},
        "load_average_1min": loads,
        "machine": machine_info(),
    }
    if not args.json:
        for precision, found in result["precisions"].items():
            bound = found["ours_over_bound"]
            print(
                f"{precision}: ours {found['ours_images_per_sec']} images/s, "
                + (f"{bound} of the bound, " if bound is not None else "")
                + f"{found['ours_over_official']} of the official",
                file=sys.stderr,
            )
    print(json.dumps(result))


def inference_paths(args):
    """`{precision: {"ours": class map call, "bound": products call}}`, one set of weights."""
    import numpy as np
    from matmul_bound import make_products, product_shapes
    from models import build_model
    from throughput import backend_class_map, keras_class_map

    reference = build_model(args.model, args.num_classes, args.size, "float32")
    images = np.random.default_rng(0).integers(
        0, 256, (args.batch, args.size, args.size, 3), np.uint8
    )
    shapes = product_shapes(reference, args.size, args.batch)
    paths = {}
    for precision in args.precisions:
        model = reference
        if precision != "float32":
            model = build_model(args.model, args.num_classes, args.size, precision)
            model.set_weights(reference.get_weights())
        if args.backend == "torch":
            class_map = backend_class_map(model, args.torch_compile)
        else:
            class_map = keras_class_map(model)
        paths[precision] = {
            "ours": lambda class_map=class_map: class_map(images),
            "bound": make_products(shapes, precision, args.torch_compile),
        }
    return paths


def training_paths(args):
    """`{precision: {"ours": training step call}}` (`train_throughput.training_step`)."""
    from train_throughput import training_step

    model, classes, size, batch = args.model, args.num_classes, args.size, args.batch
    return {
        precision: {
            "ours": training_step(model, classes, size, batch, precision, args.torch_compile)
        }
        for precision in args.precisions
    }


def summary(found):
    """Medians, ratios of medians and every round of one precision."""
    medians = {
        name: statistics.median(found[name]) if found[name] else None
        for name in ("ours", "bound", "official")
    }
    ours, bound, official = medians["ours"], medians["bound"], medians["official"]
    return {
        "ours_images_per_sec": round(ours, 3),
        "bound_images_per_sec": round(bound, 3) if bound else None,
        "official_images_per_sec": round(official, 3) if official else None,
        "ours_over_bound": round(ours / bound, 3) if bound else None,
        "ours_over_official": round(ours / official, 3) if official else None,
        "rounds_ours": found["ours"],
        "rounds_bound": found["bound"],
        "rounds_official": found["official"],
        "official_other_procs_cpu_frac": found["other"],
    }


if __name__ == "__main__":
    main()
