"""The models the benchmarks build: the paper's presets, and `tiny` for CI."""

import argparse
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def set_backend_from_argv(argv=None):
    """Sets `KERAS_BACKEND` from `--backend NAME` in `argv` (default `sys.argv`).

    Keras reads the variable once, when it is first imported, so a script
    calls this before importing Keras or `keras_segmenter`; its parser then
    declares `--backend` (`add_backend_flag`) to document and check it.
    """
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        name = argv[i + 1] if arg == "--backend" and i + 1 < len(argv) else None
        name = arg.partition("=")[2] if arg.startswith("--backend=") else name
        if name in BACKENDS:
            os.environ["KERAS_BACKEND"] = name


def add_backend_flag(parser, torch_compile=False):
    """Declares `--backend`, which `set_backend_from_argv` applied before Keras was imported,
    and with `torch_compile=True` `--torch-compile` (`check_backend` checks both)."""
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    if torch_compile:
        parser.add_argument(
            "--torch-compile",
            action="store_true",
            help="--backend torch only: compiled by Inductor (inference: compile_for_torch, "
            "frozen weights; training: compile(jit_compile=True))",
        )


def forward_parser(description):
    """The flags of the benchmarks that time one forward pass: --model, --size, --batch, --num-classes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="seg_s16_mask", help="a preset, or tiny (CI)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=150)
    return parser


def build_model(name, num_classes, image_size, dtype=None):
    """A randomly initialised Segmenter.

    Args:
        name: a preset of `keras_segmenter` (`seg_s16_mask`, ...), or `tiny`:
            a 2-layer, 16-wide ViT with patch 8 and the mask decoder, which
            only checks that a benchmark runs (its speed means nothing).
        num_classes, image_size, dtype: as in `keras_segmenter.build_segmenter`.

    An unknown `name` (or a size the preset cannot take) exits with status 2
    and a one-line message: `build_model` serves the benchmark command lines.
    """
    import keras_segmenter as ks

    if name != "tiny":
        try:
            return ks.build_segmenter(name, num_classes, image_size=image_size, dtype=dtype)
        except ValueError as error:  # a user's mistake: one line, exit status 2
            print(f"--model {name}: {error}", file=sys.stderr)
            raise SystemExit(2)
    backbone = ks.ViTBackbone(
        patch_size=8,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        mlp_dim=32,
        image_size=image_size,
        dtype=dtype,
    )
    return ks.Segmenter(backbone, num_classes, decoder="mask", dtype=dtype)


def check_backend(parser, args, backends=BACKENDS):
    """Exits with status 2 when Keras runs another backend than `--backend` asked for,
    `--backend` is not one of `backends` (those the script measures), or
    `--torch-compile` comes without `--backend torch`."""
    import keras

    if keras.config.backend() != args.backend:
        parser.error(
            f"--backend {args.backend}: Keras was imported with {keras.config.backend()} "
            "before the flag was read; set KERAS_BACKEND instead"
        )
    if args.backend not in backends:
        parser.error(f"--backend {args.backend}: this benchmark runs {' or '.join(backends)}")
    if getattr(args, "torch_compile", False) and args.backend != "torch":
        parser.error(f"--torch-compile needs --backend torch (received --backend {args.backend})")
