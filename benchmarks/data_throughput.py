"""Training-pipeline throughput: augmented crops per second from real JPEGs.

    python benchmarks/data_throughput.py --dataset ade20k-sample \
        [--source derived|val] [--crop-size 512] [--batch-size 8] \
        [--batches 16] [--runs 5] --json

`ade20k-sample` builds a temporary ADEChallengeData2016 folder from the
real ADE20K photos in ../shared/data/ade20k_samples (`derived`: the three
full-size ~2200x1600 photos; `val`: the three ADEChallengeData2016-sized
images), linked 16 times each so shuffling and parallel decoding behave as
on a real split. Any other dataset name reads `--data-dir`. The figure is
the median over `--runs` of crops/s after one warm-up batch per run.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import keras_segmenter  # noqa: F401  first: TensorFlow set up as the commands do it

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ade20k_samples"
)


def _ade20k_sample(root, source, copies):
    images = {"derived": "images_train_derived", "val": "images_val"}[source]
    masks = {"derived": "annotations_train_derived", "val": "annotations_val"}[source]
    out_images = os.path.join(root, "images", "training")
    out_masks = os.path.join(root, "annotations", "training")
    os.makedirs(out_images)
    os.makedirs(out_masks)
    for name in sorted(os.listdir(os.path.join(SHARED, images))):
        stem = name[:-4]
        for k in range(copies):
            os.symlink(
                os.path.abspath(os.path.join(SHARED, images, name)),
                os.path.join(out_images, f"{stem}_{k:02d}.jpg"),
            )
            os.symlink(
                os.path.abspath(os.path.join(SHARED, masks, stem + ".png")),
                os.path.join(out_masks, f"{stem}_{k:02d}.png"),
            )
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ade20k-sample")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--source", default="derived", choices=["derived", "val"])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    from machine import machine_info

    from keras_segmenter.data import train_dataset

    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset == "ade20k-sample":
            name = "ade20k"
            data_dir = _ade20k_sample(tmp, args.source, args.copies)
        else:
            name, data_dir = args.dataset, args.data_dir
        ds = train_dataset(
            name, data_dir, batch_size=args.batch_size, crop_size=args.crop_size, seed=0
        )
        iterator = iter(ds)
        rates = []
        for _ in range(args.runs):
            next(iterator)  # Warm-up: fills the prefetch buffers.
            start = time.perf_counter()
            for _ in range(args.batches):
                next(iterator)
            elapsed = time.perf_counter() - start
            rates.append(args.batches * args.batch_size / elapsed)
            if not args.json:
                print(f"run: {rates[-1]:.1f} crops/s", file=sys.stderr)
    result = {
        "benchmark": "data_throughput",
        "dataset": args.dataset,
        "source": args.source if args.dataset == "ade20k-sample" else None,
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "crops_per_s": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
        **machine_info(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
