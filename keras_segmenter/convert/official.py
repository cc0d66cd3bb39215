"""Official Segmenter runs (`checkpoint.pth` + `variant.yml`) as Keras models."""

import os

import yaml

from keras_segmenter.cli import check_file
from keras_segmenter.convert.torch_checkpoint import CheckpointError, read_torch_checkpoint
from keras_segmenter.convert.weights import StateDict, port_segmenter
from keras_segmenter.models.segmenter import Segmenter
from keras_segmenter.models.vit_backbone import ViTBackbone


class _VariantLoader(yaml.SafeLoader):
    """A safe YAML loader that also reads `!!python/tuple` (train.py writes them)."""


_VariantLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: tuple(loader.construct_sequence(node)),
)


def read_variant(path):
    """Reads the `variant.yml` that the official `train.py` writes, safely."""
    try:
        with open(path) as file:
            variant = yaml.load(file, Loader=_VariantLoader)
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path}: not a readable variant.yml: {error}") from None
    if not isinstance(variant, dict) or "net_kwargs" not in variant:
        raise CheckpointError(f"{path}: expected a mapping with `net_kwargs`, as train.py writes")
    return variant


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require(mapping, key, where, valid=_is_count, expected="a positive int"):
    """`mapping[key]`, or an error naming the key and what it should hold."""
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{where}: expected a mapping. Received: {mapping!r}")
    if key not in mapping:
        raise CheckpointError(f"{where}: missing key `{key}`")
    if not valid(mapping[key]):
        raise CheckpointError(f"{where}.{key}: expected {expected}. Received: {mapping[key]!r}")
    return mapping[key]


def _is_size(value):
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_count, value))


def segmenter_from_variant(variant, source="variant.yml", dtype=None):
    """Builds the (untrained) Segmenter that an official `variant.yml` describes.

    What the yaml leaves out is derived as the official factory does: MLP
    width 4 d, decoder width = encoder width, decoder heads = d // 64.
    """
    net = variant["net_kwargs"]
    where = f"{source}: net_kwargs"
    width = _require(net, "d_model", where)
    decoder = _require(net, "decoder", where, lambda v: isinstance(v, dict), "a mapping")
    name = _require(decoder, "name", f"{where}.decoder", lambda v: isinstance(v, str), "a string")
    decoders = {"mask_transformer": "mask", "linear": "linear"}
    if name not in decoders:
        raise CheckpointError(
            f"{where}.decoder.name is {name!r}; expected one of {sorted(decoders)}"
        )
    normalization = net.get("normalization") or variant.get("dataset_kwargs", {}).get(
        "normalization", "vit"
    )
    backbone = ViTBackbone(
        patch_size=_require(net, "patch_size", where),
        hidden_dim=width,
        num_layers=_require(net, "n_layers", where),
        num_heads=_require(net, "n_heads", where),
        mlp_dim=4 * width,
        image_size=tuple(
            _require(net, "image_size", where, _is_size, "(height, width) positive ints")
        ),
        distilled=bool(net.get("distilled", False)),
        dropout=net.get("dropout", 0.0),
        drop_path_rate=net.get("drop_path_rate", 0.1),
        normalization=normalization,
        dtype=dtype,
        name="backbone",
    )
    kwargs = {}
    if decoders[name] == "mask":
        kwargs = dict(
            decoder_num_layers=decoder.get("n_layers", 2),
            decoder_dropout=decoder.get("dropout", 0.1),
            decoder_drop_path_rate=decoder.get("drop_path_rate", 0.0),
        )
    if "n_cls" in decoder:
        num_classes = _require(decoder, "n_cls", f"{where}.decoder")
    else:
        num_classes = _require(net, "n_cls", where)
    return Segmenter(backbone, num_classes, decoder=decoders[name], dtype=dtype, **kwargs)


def load_official(path, dtype=None):
    """Loads an official Segmenter training run as a Keras `Segmenter`.

    Args:
        path: the run folder holding `checkpoint.pth` and `variant.yml` (as
            the official `train.py` writes them), or the `checkpoint.pth`
            itself with `variant.yml` beside it.
        dtype: optional dtype policy for the new model.

    Returns:
        A `Segmenter` whose logits match the official model's.
    """
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    checkpoint = os.path.join(path, "checkpoint.pth") if os.path.isdir(path) else path
    variant_path = os.path.join(folder, "variant.yml")
    for needed in (checkpoint, variant_path):
        check_file(needed, "an official run's checkpoint.pth and variant.yml", CheckpointError)
    model = segmenter_from_variant(read_variant(variant_path), variant_path, dtype=dtype)
    state = read_torch_checkpoint(checkpoint)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint}: expected a state dict or a dict with key `model`")
    port_segmenter(model, StateDict(state, checkpoint))
    return model
