"""Where inference or training time goes: seconds per TensorFlow op type, from the TF profiler, as one JSON line.

    python benchmarks/op_profile.py --model seg_s16_mask --size 512 --batch 4 \\
        [--precision float32|mixed_bfloat16] [--num-classes 150] [--steps 2] [--train] --json

Profiles the same graph as `throughput.py`'s `keras` runtime (normalization,
model, argmax of the full-resolution logits) on a random uint8 batch, or with
`--train` the training step of `train_throughput.py` (`--size` crops), after
two warm-up calls, for `--steps` calls. Set `TF_NUM_INTEROP_THREADS=1` for
op times that add up to the wall time (ops then run one at a time). The host
plane of the profile holds one event per op kernel run (`name:type`); `ops`
sums their durations per op type and divides by `--steps`: seconds per batch
(per step with `--train`), which the kernel names show
(`_MklNativeFusedMatMul` is a oneDNN matrix product with its bias and
activation fused in, `_MklMatMul` one without). `op_seconds_per_batch` is
their sum and `wall_seconds_per_batch` the time of a call while profiled
(profiling adds a few per cent).
"""

import collections
import glob
import json
import os
import sys
import tempfile
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Host-plane events that wrap op kernels rather than being one.
WRAPPERS = {"StatefulPartitionedCall", "PartitionedCall"}


def op_seconds(xplane_path, steps):
    """`{op type: (seconds per step, kernel runs per step)}` from a profile's host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as file:
        space.ParseFromString(file.read())
    seconds, runs = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Kernel events are "op_name:OpType"; runtime ones ("ExecutorState::Process") are not.
                op_type = name.rpartition(":")[2] if ":" in name and "::" not in name else ""
                if not op_type[:1].isupper() and not op_type.startswith("_") or op_type in WRAPPERS:
                    continue
                seconds[op_type] += event.duration_ps * 1e-12
                runs[op_type] += 1
    return {op: (seconds[op] / steps, runs[op] // steps) for op, _ in seconds.most_common()}


def main():
    from models import forward_parser

    parser = forward_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"]
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="profile the training step")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from machine import machine_info

    if args.train:
        from train_throughput import training_step

        step = training_step(args.model, args.num_classes, args.size, args.batch, args.precision)
    else:
        from models import build_model
        from throughput import runtime_function

        args.runtime, args.xla = "keras", False  # throughput.py's default graph
        reference = build_model(args.model, args.num_classes, args.size)
        class_map, _ = runtime_function(args, reference, folder=None)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), np.uint8)

        def step():
            class_map(images)

    for _ in range(2):
        step()

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        ops = op_seconds(path, args.steps)

    result = {
        "benchmark": "op_profile",
        "mode": "train" if args.train else "inference",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "wall_seconds_per_batch": round(wall, 4),
        "op_seconds_per_batch": round(sum(s for s, _ in ops.values()), 4),
        "ops": {op: {"seconds": round(s, 4), "runs": n} for op, (s, n) in ops.items()},
        "machine": machine_info(),
    }
    if not args.json:
        for op, (s, n) in list(ops.items())[:20]:
            print(f"{s:8.3f} s {n:5d}x  {op}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
