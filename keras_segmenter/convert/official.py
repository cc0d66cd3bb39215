"""Official Segmenter runs (`checkpoint.pth` + `variant.yml`) as Keras models."""

import os

import yaml

from keras_segmenter.convert.torch_checkpoint import CheckpointError, read_torch_checkpoint
from keras_segmenter.convert.weights import StateDict, build_model, port_segmenter, serialized
from keras_segmenter.errors import check_file


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


def _is_rate(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def _optional(mapping, key, default, where, valid, expected):
    """`mapping.get(key, default)`, checked like `_require` when present."""
    return _require(mapping, key, where, valid, expected) if key in mapping else default


def _dim(state, key, dim, rank, checkpoint):
    """Dimension `dim` of the rank-`rank` tensor `state[key]`, or an error naming the key."""
    shape = getattr(state.get(key), "shape", None)
    if shape is None or len(shape) != rank:
        raise CheckpointError(
            f"{checkpoint}: expected a tensor `{key}` of rank {rank}. Received: shape {shape}"
        )
    return int(shape[dim])


def _count_blocks(state, prefix):
    count = 0
    while f"{prefix}{count}.norm1.weight" in state:
        count += 1
    return count


def check_declared_sizes(sizes, state, variant_path, checkpoint):
    """Compares the sizes `variant.yml` declares with the checkpoint's tensors.

    Run before the model is built, so that a variant declaring a huge model
    beside a small checkpoint allocates nothing: every size that decides
    the model's memory (width, depth, heads, patch, grid, classes, decoder
    depth) must be the checkpoint's own.

    Args:
        sizes: the dict of `declared_sizes`.
        state: the checkpoint's flat `{key: array}`.
    """
    patch, (height, width) = sizes["patch_size"], sizes["image_size"]
    embed = "encoder.patch_embed.proj.weight"
    prefix_tokens = 2 if "encoder.dist_token" in state else 1
    checks = [  # (declared key, declared value, value in the checkpoint, where it was read)
        ("d_model", sizes["d_model"], _dim(state, embed, 0, 4, checkpoint), f"`{embed}` dim 0"),
        ("patch_size", patch, _dim(state, embed, 3, 4, checkpoint), f"`{embed}` dim 3"),
        ("n_layers", sizes["n_layers"], _count_blocks(state, "encoder.blocks."), "encoder blocks"),
        (
            "image_size",
            (height // patch) * (width // patch) + prefix_tokens,
            _dim(state, "encoder.pos_embed", 1, 3, checkpoint),
            "`encoder.pos_embed` positions",
        ),
    ]
    if sizes["decoder"] == "linear":
        checks.append(
            (
                "n_cls",
                sizes["n_cls"],
                _dim(state, "decoder.head.weight", 0, 2, checkpoint),
                "`decoder.head.weight` dim 0",
            )
        )
    else:
        checks += [
            (
                "n_cls",
                sizes["n_cls"],
                _dim(state, "decoder.cls_emb", 1, 3, checkpoint),
                "`decoder.cls_emb` dim 1",
            ),
            (
                "decoder.n_layers",
                sizes["decoder_layers"],
                _count_blocks(state, "decoder.blocks."),
                "decoder blocks",
            ),
        ]
    for key, declared, found, where in checks:
        if declared != found:
            shown = sizes["image_size"] if key == "image_size" else declared
            raise CheckpointError(
                f"{variant_path}: net_kwargs.{key} {shown!r} does not fit {checkpoint}, "
                f"whose {where} is {found} (expected {declared})"
            )
    if sizes["d_model"] % sizes["n_heads"]:
        raise CheckpointError(
            f"{variant_path}: net_kwargs.n_heads {sizes['n_heads']} does not divide "
            f"d_model {sizes['d_model']}"
        )


def declared_sizes(variant, source="variant.yml"):
    """The sizes an official `variant.yml` declares, each checked for its type.

    What the yaml leaves out is derived as the official factory does: MLP
    width 4 d, decoder width = encoder width, decoder heads = d // 64.

    Returns:
        A dict of `d_model`, `n_layers`, `n_heads`, `patch_size`,
        `image_size`, `n_cls`, `decoder` ("mask" or "linear"),
        `decoder_layers`, `distilled`, `normalization` and the dropout rates.
    """
    net = variant["net_kwargs"]
    where = f"{source}: net_kwargs"
    decoder = _require(net, "decoder", where, lambda v: isinstance(v, dict), "a mapping")
    name = _require(decoder, "name", f"{where}.decoder", lambda v: isinstance(v, str), "a string")
    decoders = {"mask_transformer": "mask", "linear": "linear"}
    if name not in decoders:
        raise CheckpointError(
            f"{where}.decoder.name is {name!r}; expected one of {sorted(decoders)}"
        )
    dataset = variant.get("dataset_kwargs") or {}
    normalization = net.get("normalization") or (
        dataset.get("normalization", "vit") if isinstance(dataset, dict) else "vit"
    )
    if not isinstance(normalization, str):
        raise CheckpointError(
            f"{where}.normalization: expected a string. Received: {normalization!r}"
        )
    rate, number = "a number in [0, 1)", "a positive int"
    on_decoder = "n_cls" in decoder
    return dict(
        d_model=_require(net, "d_model", where),
        n_layers=_require(net, "n_layers", where),
        n_heads=_require(net, "n_heads", where),
        patch_size=_require(net, "patch_size", where),
        image_size=tuple(
            _require(net, "image_size", where, _is_size, "(height, width) positive ints")
        ),
        n_cls=_require(
            decoder if on_decoder else net, "n_cls", where + (".decoder" if on_decoder else "")
        ),
        decoder=decoders[name],
        decoder_layers=_optional(decoder, "n_layers", 2, f"{where}.decoder", _is_count, number),
        decoder_dropout=_optional(decoder, "dropout", 0.1, f"{where}.decoder", _is_rate, rate),
        decoder_drop_path_rate=_optional(
            decoder, "drop_path_rate", 0.0, f"{where}.decoder", _is_rate, rate
        ),
        distilled=_optional(
            net, "distilled", False, where, lambda v: isinstance(v, bool), "true or false"
        ),
        dropout=_optional(net, "dropout", 0.0, where, _is_rate, rate),
        drop_path_rate=_optional(net, "drop_path_rate", 0.1, where, _is_rate, rate),
        normalization=normalization,
    )


def segmenter_from_variant(variant, source="variant.yml", dtype=None):
    """Builds the (untrained) Segmenter that an official `variant.yml` describes.

    See `declared_sizes` for what is read and derived.
    """
    sizes = declared_sizes(variant, source)
    return _build(sizes, dtype)


def _build(sizes, dtype):
    width = sizes["d_model"]
    backbone = serialized(
        "ViTBackbone",
        patch_size=sizes["patch_size"],
        hidden_dim=width,
        num_layers=sizes["n_layers"],
        num_heads=sizes["n_heads"],
        mlp_dim=4 * width,
        image_size=sizes["image_size"],
        distilled=sizes["distilled"],
        dropout=sizes["dropout"],
        drop_path_rate=sizes["drop_path_rate"],
        normalization=sizes["normalization"],
        dtype=dtype,
        name="backbone",
    )
    kwargs = {}
    if sizes["decoder"] == "mask":
        kwargs = dict(
            decoder_num_layers=sizes["decoder_layers"],
            decoder_dropout=sizes["decoder_dropout"],
            decoder_drop_path_rate=sizes["decoder_drop_path_rate"],
        )
    return build_model(
        "Segmenter",
        backbone=backbone,
        num_classes=sizes["n_cls"],
        decoder=sizes["decoder"],
        dtype=dtype,
        **kwargs,
    )


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
    sizes = declared_sizes(read_variant(variant_path), variant_path)
    state = read_torch_checkpoint(checkpoint)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint}: expected a state dict or a dict with key `model`")
    check_declared_sizes(sizes, state, variant_path, checkpoint)  # before anything is built
    model = _build(sizes, dtype)
    port_segmenter(model, StateDict(state, checkpoint))
    return model
