"""Class-map agreement and logits error of the ONNX, OpenVINO and LiteRT exports.

    python benchmarks/export_parity.py [--model model.keras | --preset seg_ti16_mask --classes 150] [--json]

Exports a model (a .keras file, or a randomly initialised preset) in every
format, runs `keras_segmenter.runtime.sliding_window_logits` with each
runtime (window = training crop, stride window - 32) on the bundled ADE20K
and CamVid photos, each also shrunk so that its short side is 3/4 of the
window (the upscaling path), and compares with the Keras `predict()` class
map and window-averaged logits.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_segmenter as ks
from keras_segmenter import runtime
from keras_segmenter.export_runtimes import FORMATS, SUFFIXES, export_runtime
from keras_segmenter.images import load_image
from keras_segmenter.inference import default_window, sliding_window_logits
from keras_segmenter.predict import predict

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "assets" / "ADEChallengeData2016" / "images").glob("*/*.jpg")) + [
    ROOT / "keras_segmenter" / "data" / "sample" / "camvid" / "val" / name
    for name in ("0016E5_07959.jpg", "0016E5_08001.jpg")
]


def shrunk(image, short_side):
    from PIL import Image

    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras Segmenter (default: a random --preset)")
    parser.add_argument("--preset", default="seg_ti16_mask")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    if args.model:
        from keras_segmenter.prediction import load_model

        model = load_model(args.model)
    else:
        model = ks.build_segmenter(args.preset, args.classes)
    window, stride = default_window(model)
    normalize = ks.ImageNormalization(model.normalization)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
    def keras_logits(image):
        logits = sliding_window_logits(model, normalize(image[None])[0], window, stride)
        return tf.image.resize(logits, tf.shape(image)[:2], "bilinear")

    names, images = [], []
    for photo in PHOTOS:
        image = load_image(photo)
        names += [photo.name, f"{photo.name} shrunk"]
        images += [image, shrunk(image, window * 3 // 4)]
    references = [
        (predict(model, image, window, stride), keras_logits(image).numpy()) for image in images
    ]
    report = {
        "model": args.model or f"{args.preset} (random weights)",
        "classes": int(model.num_classes),
        "window": window,
        "stride": stride,
    }
    with tempfile.TemporaryDirectory() as folder:
        for fmt in FORMATS:
            start = time.perf_counter()
            path = export_runtime(model, fmt, pathlib.Path(folder) / f"model{SUFFIXES[fmt]}")
            export_seconds = time.perf_counter() - start
            exported = runtime.ExportedModel(path)
            rows, start = [], time.perf_counter()
            for name, image, (class_map, logits) in zip(names, images, references):
                got = runtime.sliding_window_logits(exported, image, window, stride)
                rows.append(
                    {
                        "photo": name,
                        "size": list(image.shape[:2]),
                        "agreement": float((got.argmax(-1) == class_map).mean()),
                        "max_abs_logits_error": float(np.abs(got - logits).max()),
                    }
                )
            report[fmt] = {
                "export_s": round(export_seconds, 1),
                "segment_s_per_image": round((time.perf_counter() - start) / len(images), 2),
                "photos": rows,
            }
            if not args.json:
                print(fmt, json.dumps(report[fmt]), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
