"""Converts weights to a Keras `.keras` Segmenter.

    python -m keras_segmenter.convert SOURCE --out model.keras [--num-classes N]

SOURCE is one of:
  * an official Segmenter run: a folder with `checkpoint.pth` and `variant.yml`
    (or the `checkpoint.pth` itself): the whole model is converted;
  * a timm ViT (`model.safetensors`, or its folder with `config.json`) or a
    big_vision/AugReg `.npz`: the ImageNet encoder is converted and a fresh
    decoder for `--num-classes` classes is added, ready for fine-tuning.
"""

import os
import sys

from keras_segmenter.cli import command_parser, command_prog, reports_user_errors
from keras_segmenter.convert.imagenet import backbone_from_imagenet_vit
from keras_segmenter.convert.official import load_official
from keras_segmenter.convert.torch_checkpoint import CheckpointError
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write
from keras_segmenter.models.segmenter import DECODERS, Segmenter


def detect_format(source):
    """Returns `"official"`, `"timm"` or `"augreg"` for a path, or raises."""
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "checkpoint.pth")):
            return "official"
        if os.path.isfile(os.path.join(source, "model.safetensors")):
            return "timm"
    elif os.path.isfile(source):
        for suffix, kind in ((".pth", "official"), (".safetensors", "timm"), (".npz", "augreg")):
            if source.endswith(suffix):
                return kind
    elif not os.path.exists(source):
        raise CheckpointError(f"{source}: no such file or folder")
    raise CheckpointError(
        f"{source}: unknown format; expected an official run folder (checkpoint.pth + "
        "variant.yml), a .pth, a timm model.safetensors (or its folder) or an AugReg .npz"
    )


def convert(source, num_classes=None, decoder="mask", image_size=512):
    """Converts `source` (see the module docstring) to a `Segmenter`."""
    kind = detect_format(source)
    if kind == "official":
        return kind, load_official(source)
    if num_classes is None:
        raise UserError(
            f"{source} holds only an ImageNet encoder: pass `--num-classes` for the new decoder"
        )
    backbone = backbone_from_imagenet_vit(source, image_size=image_size)
    return kind, Segmenter(backbone, num_classes, decoder=decoder)


PROG = command_prog("convert")


def build_parser():
    """The command line of `keras-segmenter convert`."""
    parser = command_parser("convert", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", help="official run folder / checkpoint.pth, timm safetensors or AugReg npz"
    )
    parser.add_argument("--out", required=True, help="the .keras file to write")
    parser.add_argument(
        "--num-classes", type=int, help="classes of the new decoder (ImageNet sources)"
    )
    parser.add_argument(
        "--decoder", choices=DECODERS, help="new decoder type (ImageNet sources; default mask)"
    )
    parser.add_argument(
        "--image-size", type=int, help="training crop for ImageNet sources (default 512)"
    )
    return parser


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    if not args.out.endswith(".keras"):
        raise UserError(f"--out must end in .keras. Received: --out={args.out}")
    if os.path.isdir(args.out):
        raise UserError(
            f"--out {args.out} is a folder; expected the path of the .keras file to write"
        )
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"--out {args.out}: folder {folder} does not exist")
    options = ("num_classes", "decoder", "image_size")
    if detect_format(args.source) == "official":
        for flag in options:
            if getattr(args, flag) is not None:
                raise UserError(
                    f"--{flag.replace('_', '-')} is for ImageNet sources; {args.source} is an "
                    "official run, converted whole with its own classes, decoder and crop"
                )
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be a positive integer. Received: {args.num_classes}")
    kind, model = convert(
        args.source,
        args.num_classes,
        args.decoder or "mask",
        512 if args.image_size is None else args.image_size,
    )
    atomic_write(args.out, model.save)
    backbone = model.backbone
    print(f"source:        {args.source} ({kind})")
    print(
        f"encoder:       ViT patch {backbone.patch_size}, width {backbone.hidden_dim}, "
        f"{backbone.num_layers} layers, {backbone.num_heads} heads"
        f"{', distilled' if backbone.distilled else ''}, image size {backbone.image_size}"
    )
    print(f"decoder:       {model.decoder_type}, {model.num_classes} classes")
    print(f"normalization: {model.normalization}")
    print(f"parameters:    {model.count_params():,}")
    print(f"wrote:         {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
