"""ImageNet ViT weights (timm `.safetensors`, big_vision/AugReg `.npz`) for fine-tuning.

Both formats are read into timm's key names (`cls_token`, `pos_embed`,
`patch_embed.proj.*`, `blocks.{i}.*`, `norm.*`, `head.*`), which are the
official Segmenter encoder's names without the `encoder.` prefix, and then
ported with the same helpers as official checkpoints.
"""

import json
import os
import zipfile

import numpy as np

from keras_segmenter.convert.torch_checkpoint import CheckpointError
from keras_segmenter.convert.weights import StateDict, build_model, port_backbone
from keras_segmenter.errors import check_file


def _npz_array(arrays, key, source):
    if key not in arrays:
        raise CheckpointError(f"{source}: missing key `{key}`")
    return np.asarray(arrays[key], dtype=np.float32)


def augreg_to_timm(arrays, source="npz"):
    """Renames and reshapes big_vision/AugReg ViT arrays to timm's state dict."""
    get = lambda key: _npz_array(arrays, key, source)  # noqa: E731
    state = {
        "patch_embed.proj.weight": get("embedding/kernel").transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": get("embedding/bias"),
        "cls_token": get("cls"),
        "pos_embed": get("Transformer/posembed_input/pos_embedding"),
        "norm.weight": get("Transformer/encoder_norm/scale"),
        "norm.bias": get("Transformer/encoder_norm/bias"),
    }
    if "dist" in arrays:
        state["dist_token"] = get("dist")
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in arrays:
        block, key = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attention = block + "MultiHeadDotProductAttention_1/"
        width = get(attention + "query/kernel").shape[0]
        state[key + "norm1.weight"] = get(block + "LayerNorm_0/scale")
        state[key + "norm1.bias"] = get(block + "LayerNorm_0/bias")
        state[key + "norm2.weight"] = get(block + "LayerNorm_2/scale")
        state[key + "norm2.bias"] = get(block + "LayerNorm_2/bias")
        qkv = ("query", "key", "value")
        state[key + "attn.qkv.weight"] = np.concatenate(
            [get(f"{attention}{n}/kernel").reshape(width, width).T for n in qkv]
        )
        state[key + "attn.qkv.bias"] = np.concatenate(
            [get(f"{attention}{n}/bias").reshape(-1) for n in qkv]
        )
        state[key + "attn.proj.weight"] = get(attention + "out/kernel").reshape(width, width).T
        state[key + "attn.proj.bias"] = get(attention + "out/bias")
        for dense, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            state[f"{key}mlp.{name}.weight"] = get(f"{block}MlpBlock_3/{dense}/kernel").T
            state[f"{key}mlp.{name}.bias"] = get(f"{block}MlpBlock_3/{dense}/bias")
        i += 1
    if i == 0:
        raise CheckpointError(f"{source}: no `Transformer/encoderblock_0/*` keys: not a ViT npz")
    return state


def _config_heads(path):
    """The head count in a timm `config.json` (`model_args.num_heads`), or None."""
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable JSON file: {error}") from None
    args = config.get("model_args", {}) if isinstance(config, dict) else None
    heads = args.get("num_heads") if isinstance(args, dict) else 0
    if heads is not None and not (isinstance(heads, int) and heads > 0):
        raise CheckpointError(
            f"{path}: expected a JSON object whose optional `model_args.num_heads` is a "
            f"positive int, as timm writes it. Received: {json.dumps(config)[:200]}"
        )
    return heads


def read_imagenet_vit(path):
    """Reads ImageNet ViT weights as `(timm_state_dict, num_heads or None, source)`.

    Args:
        path: a timm `model.safetensors` (or its folder, whose `config.json`
            gives the head count), or a big_vision/AugReg `.npz`.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    check_file(path, "a timm model.safetensors (or its folder) or an AugReg .npz", CheckpointError)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as arrays:
                state = augreg_to_timm(arrays, path)
                heads = arrays[
                    "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
                ].shape[1]
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable .npz file: {error}") from None
        return state, int(heads), path
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from None
        config_path = os.path.join(os.path.dirname(path), "config.json")
        heads = _config_heads(config_path) if os.path.isfile(config_path) else None
        return state, heads, path
    raise CheckpointError(
        f"{path}: unknown format; expected a timm `.safetensors` or an AugReg `.npz`"
    )


def load_backbone_weights(backbone, path):
    """Loads ImageNet ViT weights into an existing `ViTBackbone`.

    The position embedding is resized bilinearly to the backbone's grid
    (its `image_size // patch_size`); the ImageNet head is dropped.

    Args:
        backbone: the `ViTBackbone` (e.g. `model.backbone`).
        path: see `read_imagenet_vit`.
    """
    state, heads, source = read_imagenet_vit(path)
    if heads is not None and heads != backbone.num_heads:
        raise CheckpointError(
            f"{source}: weights have {heads} attention heads, the backbone has {backbone.num_heads}"
        )
    weights = StateDict(state, source)
    port_backbone(backbone, weights)
    weights.check_all_used()
    return backbone


def backbone_from_imagenet_vit(path, image_size=512, **kwargs):
    """Builds a `ViTBackbone` shaped like the weights at `path` and loads them.

    Width, depth, patch size and distillation token are read from the
    weights; the head count from `config.json` (timm) or the kernels (AugReg),
    else width // 64.

    Args:
        path: see `read_imagenet_vit`.
        image_size: the segmentation crop the position embedding is resized to.
        **kwargs: more `ViTBackbone` arguments (dropout, drop_path_rate, ...).
    """
    state, heads, source = read_imagenet_vit(path)
    weights = StateDict(state, source)
    kernel = weights.take("patch_embed.proj.weight")
    if kernel.ndim != 4:
        raise CheckpointError(
            f"{source}: key `patch_embed.proj.weight` has shape {kernel.shape}; expected "
            "(width, 3, patch, patch): not a ViT"
        )
    width, _, patch, _ = kernel.shape
    depth = sum(1 for key in state if key.startswith("blocks.") and key.endswith(".norm1.weight"))
    mlp_dim = weights.take("blocks.0.mlp.fc1.weight").shape[0]
    backbone = build_model(
        "ViTBackbone",
        patch_size=patch,
        hidden_dim=width,
        num_layers=depth,
        num_heads=heads or max(1, width // 64),
        mlp_dim=mlp_dim,
        image_size=image_size,
        distilled="dist_token" in state,
        name="backbone",
        **kwargs,
    )
    port_backbone(backbone, weights)
    weights.check_all_used()
    return backbone
