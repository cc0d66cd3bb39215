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

import json
import os
import statistics
import sys
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def product_shapes(model, size, batch):
    """`(lhs_shape, rhs_shape)` of every matrix product of one forward pass of
    the Segmenter `model` on `(batch, size, size, 3)` images."""
    backbone, decoder, classes = model.backbone, model.decoder, model.num_classes
    patch, width = backbone.patch_size, backbone.hidden_dim
    grid = (size // patch) ** 2

    # A block's Dense layers see (batch * tokens, width) rows, as in the model.
    def block(n, layer):
        d, h, m = layer.hidden_dim, layer.num_heads, layer.mlp_dim
        head_dim = d // h
        return [
            ((batch * n, d), (d, 3 * d)),  # qkv
            ((batch, h, n, head_dim), (batch, h, head_dim, n)),  # q.k^T
            ((batch, h, n, n), (batch, h, n, head_dim)),  # attention.v
            ((batch * n, d), (d, d)),  # proj
            ((batch * n, d), (d, m)),  # fc1
            ((batch * n, m), (m, d)),  # fc2
        ]

    shapes = [((batch, grid, patch * patch * 3), (patch * patch * 3, width))]
    for layer in backbone.blocks:
        shapes += block(grid + backbone.num_prefix_tokens, layer)
    if model.decoder_type == "linear":
        return shapes + [((batch, grid, width), (width, classes))]
    dim = decoder.hidden_dim
    shapes.append(((batch, grid, width), (width, dim)))  # proj_dec
    for layer in decoder.blocks:
        shapes += block(grid + classes, layer)
    shapes += [
        ((batch, grid, dim), (dim, dim)),  # proj_patch
        ((batch, classes, dim), (dim, dim)),  # proj_classes
        ((batch, grid, dim), (batch, dim, classes)),  # masks
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


def make_products(shapes, precision):
    """A `tf.function` running a matrix product of each of `shapes` in `precision`'s dtype
    (`"float32"` or `"mixed_bfloat16"`: bfloat16), on random operands made once."""
    import tensorflow as tf

    dtype = tf.float32 if precision == "float32" else tf.bfloat16
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
        return tf.add_n(
            [
                tf.cast(tf.reduce_sum(tf.matmul(lhs, rhs)[..., :1, :1]), tf.float32)
                for lhs, rhs in operands
            ]
        )

    return products


def time_products(products, runs):
    """Seconds of each of `runs` calls of `products` (after one untimed call)."""
    products().numpy()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        products().numpy()
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    from models import forward_parser

    parser = forward_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    from machine import machine_info
    from models import build_model

    model = build_model(args.model, args.num_classes, args.size)
    shapes = product_shapes(model, args.size, args.batch)
    seconds = time_products(make_products(shapes, args.precision), args.runs)
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
        print(
            f"{args.model} {args.size}px batch {args.batch} {args.precision}: matrix products alone "
            f"{median:.3f} s per batch ({result['gflops']} GFLOPS), at most "
            f"{result['images_per_sec_bound']} images/s",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
