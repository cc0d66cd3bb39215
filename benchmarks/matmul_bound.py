"""Upper bound on inference throughput: the model's matrix products alone.

    python benchmarks/matmul_bound.py --model seg_s16_mask --size 512 --batch 4 \
        [--precision float32|mixed_bfloat16] [--num-classes 150] [--runs 5] --json

Times, with the same TensorFlow kernels the model uses, only the matrix
products of one forward pass of a Segmenter (patch embedding as a matrix
product, each encoder block's qkv, q.k^T, attention.v, proj, fc1 and fc2, and
for the mask decoder its projections, its blocks and the patch-class
products), on random operands of the exact shapes and dtype. Everything
else the model does (softmax, LayerNorm, GELU, reshapes, the final resize)
is left out, so `images_per_sec_bound` is a ceiling no implementation on
these kernels can pass. The median over `--runs` is reported, with the
GFLOPS the products reached.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def product_shapes(preset, size, batch, num_classes):
    """`(lhs_shape, rhs_shape)` of every matrix product of one forward pass."""
    from keras_segmenter.models.presets import BACKBONE_PRESETS, MODEL_PRESETS

    spec = MODEL_PRESETS[preset]
    backbone = BACKBONE_PRESETS[spec["backbone"]]
    patch, width = backbone["patch_size"], backbone["hidden_dim"]
    heads, mlp = backbone["num_heads"], backbone["mlp_dim"]
    grid = (size // patch) ** 2
    tokens = grid + (2 if backbone.get("distilled") else 1)

    # Dense layers see (batch, tokens, width) inputs, as in the model.
    def block(n, d, h, m):
        head_dim = d // h
        return [
            ((batch, n, d), (d, 3 * d)),  # qkv
            ((batch, h, n, head_dim), (batch, h, head_dim, n)),  # q.k^T
            ((batch, h, n, n), (batch, h, n, head_dim)),  # attention.v
            ((batch, n, d), (d, d)),  # proj
            ((batch, n, d), (d, m)),  # fc1
            ((batch, n, m), (m, d)),  # fc2
        ]

    shapes = [((batch, grid, patch * patch * 3), (patch * patch * 3, width))]
    for _ in range(backbone["num_layers"]):
        shapes += block(tokens, width, heads, mlp)
    if spec["decoder"] == "linear":
        return shapes + [((batch, grid, width), (width, num_classes))]
    # Mask transformer, official defaults: width d, d // 64 heads, 2 blocks.
    shapes.append(((batch, grid, width), (width, width)))  # proj_dec
    for _ in range(2):
        shapes += block(grid + num_classes, width, max(1, width // 64), 4 * width)
    shapes += [
        ((batch, grid, width), (width, width)),  # proj_patch
        ((batch, num_classes, width), (width, width)),  # proj_classes
        ((batch, grid, width), (batch, width, num_classes)),  # masks
    ]
    return shapes


def flops(shapes):
    total = 0
    for lhs, rhs in shapes:
        batch = 1
        for dim in lhs[:-2]:
            batch *= dim
        total += 2 * batch * lhs[-2] * lhs[-1] * rhs[-1]
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seg_s16_mask")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    import tensorflow as tf

    from machine import machine_info

    dtype = tf.float32 if args.precision == "float32" else tf.bfloat16
    shapes = product_shapes(args.model, args.size, args.batch, args.num_classes)
    # Distinct operands for every product (identical ones would be merged by
    # the graph optimizer and computed once).
    operands = [
        (tf.cast(tf.random.normal(lhs), dtype), tf.cast(tf.random.normal(rhs), dtype))
        for lhs, rhs in shapes
    ]

    @tf.function
    def products():
        # A scalar from each product keeps every product in the graph
        # without copying results to the host.
        return tf.add_n([tf.cast(tf.reduce_sum(tf.matmul(lhs, rhs)[..., :1, :1]), tf.float32)
                         for lhs, rhs in operands])

    products().numpy()
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        products().numpy()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    total = flops(shapes)
    result = {
        "benchmark": "matmul_bound",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "products": len(shapes),
        "gflop_per_image": round(total / args.batch / 1e9, 2),
        "matmul_seconds_per_batch": round(median, 4),
        "gflops": round(total / median / 1e9, 1),
        "images_per_sec_bound": round(args.batch / median, 3),
        "runs_seconds": [round(s, 4) for s in seconds],
        "machine": machine_info(),
    }
    if not args.json:
        print(f"{args.model} {args.size}px batch {args.batch} {args.precision}: matrix products alone "
              f"{median:.3f} s per batch ({result['gflops']} GFLOPS), at most "
              f"{result['images_per_sec_bound']} images/s", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
