"""Training throughput of a Segmenter: images/s per replica.

    python benchmarks/train_throughput.py --model seg_s16_mask --crop 512 --batch 2 \\
        --precision mixed_bfloat16 [--backend tensorflow|jax|torch [--torch-compile]] --json

One training step is the `model.fit` step of `training/fit.py` (forward,
`SegmentationCrossEntropy`, backward, SGD Nesterov with the poly schedule)
on random data; with `--torch-compile`, the model compiled with
`jit_compile=True`, whose step on PyTorch is recorded and compiled by
Inductor (`keras_segmenter.models.torch_train_step`; the first step
compiles). The median of `--steps` timed steps after `--warmup` steps is
reported, and the first step's time (tracing or compiling included).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import add_backend_flag, check_backend, set_backend_from_argv  # noqa: E402

set_backend_from_argv()  # before Keras is imported

import keras_segmenter  # noqa: E402, F401  first: TensorFlow set up as the commands do it


def training_step(name, num_classes, crop, batch, precision, jit_compile=False):
    """One training step of `training/fit.py` on random data, as a function.

    The model is a randomly initialised `name` (a preset, or `tiny`) compiled
    as `fit.py` compiles it for SGD; each call runs `train_on_batch` on the
    same random `(batch, crop, crop, 3)` images and labels and waits for it.
    `jit_compile=True` is passed to `compile` (else Keras' default).
    """
    import keras
    import numpy as np
    from models import build_model

    from keras_segmenter.training import SegmentationCrossEntropy, poly_schedule

    model = build_model(name, num_classes, crop, None if precision == "float32" else precision)
    model.compile(
        optimizer=keras.optimizers.SGD(poly_schedule(1e-3, 160_000), momentum=0.9, nesterov=True),
        loss=SegmentationCrossEntropy(),
        **({"jit_compile": True} if jit_compile else {}),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, crop, crop, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch, crop, crop)).astype("int32")
    return lambda: float(model.train_on_batch(x, y))  # float(): wait for the step


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="seg_s16_mask", help="a preset, or tiny (CI)")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--batch", type=int, default=2, help="batch per replica")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument(
        "--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16")
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    add_backend_flag(p, torch_compile=True)
    args = p.parse_args(argv)
    check_backend(p, args)
    if args.warmup < 1 or args.steps < 1:
        p.error(f"--warmup and --steps must be at least 1 (received {args.warmup}, {args.steps})")

    from machine import machine_info

    step = training_step(
        args.model, args.num_classes, args.crop, args.batch, args.precision, args.torch_compile
    )
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    first, times = times[0], times[args.warmup :]
    median = statistics.median(times)
    result = {
        "benchmark": "train_throughput",
        "backend": args.backend,
        "torch_compile": args.torch_compile,
        "model": args.model,
        "crop": args.crop,
        "batch_per_replica": args.batch,
        "precision": args.precision,
        "images_per_second_per_replica": args.batch / median,
        "median_step_seconds": median,
        "first_step_seconds": first,
        "timed_steps": args.steps,
        "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")


if __name__ == "__main__":
    main()
