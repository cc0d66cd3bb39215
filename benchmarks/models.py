"""The models the benchmarks build: the paper's presets, and `tiny` for CI."""

import argparse
import sys


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
