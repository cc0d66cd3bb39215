"""Inference throughput of a Segmenter (images/s), as one JSON line.

    python benchmarks/throughput.py --model seg_s16_mask --size 512 --batch 4 \\
        [--precision float32|mixed_bfloat16|mixed_float16] [--xla] [--runs 5] \\
        [--backend tensorflow|jax|torch [--torch-compile]] --json
    python benchmarks/throughput.py --runtime openvino [--precision mixed_bfloat16] \\
        --model seg_s16_mask --json

Randomly initialised weights (speed does not depend on them), the same
random uint8 batch for every runtime. Each run times `--steps` calls that
return the class map of the batch; the result is the median over runs,
after two warm-up calls.

`--runtime` picks what runs the model:

- `keras` (default): a compiled `tf.function` of the Keras model, in
  `--precision`, optionally with XLA; normalization, the full-resolution
  logits and their argmax are in the graph (no copy of the logits to NumPy).
  With `--backend jax`, the same in one `jax.jit`; with `--backend torch`,
  eager PyTorch without autograd, or with `--torch-compile` the same
  compiled by Inductor with frozen weights
  (`keras_segmenter.inference.torch_compile`; compiled in the warm-up).
- `saved_model`: `keras_segmenter.export.export_saved_model`, loaded with
  `tf.saved_model.load`, its `serving_default` signature (one window per
  image: the window is `--size`).
- `onnx`, `openvino`, `litert`: `keras_segmenter.export_runtimes.export_runtime`
  (any input size for ONNX and OpenVINO, `--size` for LiteRT), run by
  `keras_segmenter.runtime.ExportedModel` on the whole batch (which returns
  `segmentation` and the `logits`). OpenVINO also runs `--precision
  mixed_bfloat16`: its CPU plugin's bfloat16 inference precision
  (`ExportedModel(path, precision="bfloat16")`) on the float32 file.

Export and loading are not timed. `class_map_agreement` is the fraction of
pixels whose class equals the float32 Keras model's (same weights), for
every path but that reference itself.
"""

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import set_backend_from_argv  # noqa: E402

set_backend_from_argv()  # before Keras is imported

import keras_segmenter  # noqa: E402, F401  first: TensorFlow set up as the commands do it
from keras_segmenter.runtime import PRECISIONS as FILE_PRECISIONS  # noqa: E402

RUNTIMES = ("keras", "saved_model", "onnx", "openvino", "litert")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
# The --precision values of each runtime but keras (which runs them all); an
# exported file's "bfloat16" (`keras_segmenter.runtime.PRECISIONS`) is "mixed_bfloat16".
PRECISIONS = {
    "saved_model": ("float32",),
    **{
        name: tuple(p if p == "float32" else "mixed_" + p for p in FILE_PRECISIONS[suffix])
        for name, suffix in SUFFIXES.items()
    },
}


def runtime_function(args, reference, folder):
    """`(class map function of a uint8 batch, timed model or None)` for `args.runtime`."""
    import keras
    import tensorflow as tf
    from models import build_model

    if args.runtime == "keras":
        model = reference
        if args.precision != "float32":
            model = build_model(args.model, args.num_classes, args.size, args.precision)
            model.set_weights(reference.get_weights())
        if keras.config.backend() != "tensorflow":
            return backend_class_map(model, args.torch_compile), model
        return keras_class_map(model, args.xla), model
    if args.runtime == "saved_model":
        from keras_segmenter.export import export_saved_model

        path = os.path.join(folder, "segmenter", "1")
        export_saved_model(reference, path, window_size=args.size, batch_size=args.batch)
        serving = tf.saved_model.load(path).signatures["serving_default"]
        return lambda images: serving(images=tf.constant(images))["segmentation"].numpy(), None

    from keras_segmenter.export_runtimes import export_runtime
    from keras_segmenter.runtime import ExportedModel

    # Any input size for ONNX and OpenVINO (the export's default; OpenVINO
    # 2026.0 fails to convert the fixed-size graph), --size for LiteRT.
    path = export_runtime(
        reference, args.runtime, os.path.join(folder, "model" + SUFFIXES[args.runtime])
    )
    exported = ExportedModel(path, args.precision.removeprefix("mixed_"))
    return lambda images: exported(images)["segmentation"], None


def keras_class_map(model, xla=False):
    """The class map function of a uint8 batch on TensorFlow: normalization, the model
    and the argmax of its logits in one `tf.function` (with XLA: `xla=True`)."""
    import tensorflow as tf

    from keras_segmenter.layers.normalization import ImageNormalization

    normalize = ImageNormalization(getattr(model, "normalization", "vit"))
    forward = tf.function(
        lambda x: tf.argmax(model(normalize(x), training=False), axis=-1, output_type=tf.int32),
        jit_compile=xla,
    )
    return lambda images: forward(tf.constant(images)).numpy()


def backend_class_map(model, torch_compile=False):
    """The class map function of a model on JAX (normalization, logits and argmax in
    one `jax.jit` of `stateless_call`) or PyTorch (eager, without autograd, or
    with `torch_compile` one `CompiledFunction` of normalization and
    `class_map.patch_classes`: the model's patch logits, then the fused
    upsample and argmax)."""
    import keras
    import numpy as np

    from keras_segmenter.layers.normalization import ImageNormalization

    normalize = ImageNormalization(getattr(model, "normalization", "vit"))
    if keras.config.backend() == "jax":
        import jax

        def class_map(trainable, non_trainable, images):
            logits, _ = model.stateless_call(trainable, non_trainable, normalize(images))
            return keras.ops.argmax(logits, axis=-1)

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        compiled = jax.jit(class_map)
        return lambda images: np.asarray(compiled(trainable, non_trainable, images))
    import torch

    if torch_compile:
        from keras_segmenter.inference.class_map import patch_classes
        from keras_segmenter.inference.torch_compile import CompiledFunction

        classes = patch_classes(model)  # as `class_map.model_classes` runs it compiled
        compiled = CompiledFunction(lambda x: classes(normalize(x)), model)
        return lambda images: keras.ops.convert_to_numpy(compiled(images))

    def run(images):
        with torch.no_grad():
            logits = model(normalize(images), training=False)
            return keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1))

    return run


def main():
    from models import add_backend_flag, check_backend, forward_parser

    parser = forward_parser(__doc__.split("\n\n")[0])
    add_backend_flag(parser, torch_compile=True)
    parser.add_argument("--runtime", default="keras", choices=RUNTIMES)
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="keras runtime; openvino: float32 or mixed_bfloat16",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--xla", action="store_true", help="keras runtime only: compile with XLA (jit_compile=True)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    check_backend(parser, args)
    if args.backend != "tensorflow" and (args.runtime != "keras" or args.xla):
        parser.error(
            "--backend jax|torch runs --runtime keras without --xla (the exports and XLA "
            f"are TensorFlow's; JAX always compiles with XLA). Received: --backend {args.backend}"
        )
    if args.runtime != "keras" and args.xla:
        parser.error(f"--xla applies to --runtime keras only (received --runtime {args.runtime})")
    if args.precision not in PRECISIONS.get(args.runtime, (args.precision,)):
        parser.error(
            f"--runtime {args.runtime} runs --precision {' or '.join(PRECISIONS[args.runtime])} "
            f"(received --precision {args.precision})"
        )
    if min(args.size, args.batch, args.runs, args.steps) < 1:
        parser.error("--size, --batch, --runs and --steps must be positive integers")

    import keras
    import numpy as np
    from machine import machine_info
    from models import build_model

    keras.utils.set_random_seed(0)
    reference = build_model(args.model, args.num_classes, args.size, "float32")
    images = np.random.default_rng(0).integers(
        0, 256, (args.batch, args.size, args.size, 3), np.uint8
    )
    with tempfile.TemporaryDirectory() as folder:
        try:
            class_map, model = runtime_function(args, reference, folder)
        except ImportError as error:
            parser.error(f"--runtime {args.runtime} needs {error.name}: pip install -e .[export]")
        for _ in range(2):
            result_map = class_map(images)
        rates = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for _ in range(args.steps):
                class_map(images)
            rates.append(args.batch * args.steps / (time.perf_counter() - start))
    agreement = None
    if model is not reference:
        ks_reference = _reference_map(reference, images)
        agreement = float(np.mean(np.asarray(result_map) == ks_reference))
    result = {
        "benchmark": "inference_throughput",
        "runtime": args.runtime,
        "backend": args.backend,
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "xla": args.xla,
        "torch_compile": args.torch_compile,
        "images_per_sec": round(statistics.median(rates), 3),
        "runs_images_per_sec": [round(r, 3) for r in rates],
        "class_map_agreement": agreement,
        "params": reference.count_params(),
        "machine": machine_info(),
    }
    if not args.json:
        print(
            f"{args.model} {args.size}px batch {args.batch} {args.runtime} {args.precision}: "
            f"{result['images_per_sec']} images/s (median of {args.runs})",
            file=sys.stderr,
        )
    print(json.dumps(result))


def _reference_map(reference, images):
    """The float32 Keras model's class map of `images`."""
    import keras

    if keras.config.backend() != "tensorflow":
        return backend_class_map(reference)(images)
    import tensorflow as tf

    from keras_segmenter.layers.normalization import ImageNormalization

    normalize = ImageNormalization(getattr(reference, "normalization", "vit"))
    logits = reference(normalize(tf.constant(images)), training=False)
    return tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()


if __name__ == "__main__":
    main()
