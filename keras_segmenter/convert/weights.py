"""Copies PyTorch-layout weights into the Keras layers, by name.

Each helper names the foreign key it reads, so a missing key or a shape
mismatch says which key and which shapes.
"""

import keras
import numpy as np

from keras_segmenter.convert.torch_checkpoint import CheckpointError
from keras_segmenter.layers.position_embedding import resize_position_embedding


def serialized(class_name, **config):
    """The Keras config of a `keras_segmenter` model (`"Segmenter"`, `"ViTBackbone"`)."""
    return {
        "module": None,
        "class_name": class_name,
        "registered_name": f"keras_segmenter>{class_name}",
        "config": config,
    }


def build_model(class_name, **config):
    """The model that `serialized(class_name, **config)` describes.

    Built through Keras' deserialization, as a preset's `config.json` is
    read, so that the converters never import the model classes (whose
    `from_preset` calls them: no import circle).
    """
    return keras.saving.deserialize_keras_object(serialized(class_name, **config))


class StateDict:
    """A flat `{name: array}` mapping that remembers which keys were read."""

    def __init__(self, arrays, source):
        self.arrays = dict(arrays)
        self.source = source
        self.used = set()

    def take(self, key, shape=None):
        if key not in self.arrays:
            raise CheckpointError(f"{self.source}: missing key `{key}`")
        value = np.asarray(self.arrays[key], dtype=np.float32)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckpointError(
                f"{self.source}: key `{key}` has shape {tuple(value.shape)}, "
                f"the model expects {tuple(shape)}"
            )
        self.used.add(key)
        return value

    def ignore(self, prefix):
        """Marks keys starting with `prefix` as read (e.g. an unused ImageNet head)."""
        self.used.update(k for k in self.arrays if k.startswith(prefix))

    def check_all_used(self):
        unexpected = sorted(set(self.arrays) - self.used)
        if unexpected:
            raise CheckpointError(f"{self.source}: unexpected keys {unexpected}")


def _assign(variable, value, key):
    if tuple(variable.shape) != tuple(value.shape):
        raise CheckpointError(
            f"key `{key}` gives shape {tuple(value.shape)}, "
            f"the model's `{variable.path}` is {tuple(variable.shape)}"
        )
    variable.assign(value)


def port_dense(layer, weights, key):
    kernel = layer.kernel
    _assign(kernel, weights.take(f"{key}.weight", kernel.shape[::-1]).T, f"{key}.weight")
    _assign(layer.bias, weights.take(f"{key}.bias", layer.bias.shape), f"{key}.bias")


def port_layer_norm(layer, weights, key):
    _assign(layer.gamma, weights.take(f"{key}.weight", layer.gamma.shape), f"{key}.weight")
    _assign(layer.beta, weights.take(f"{key}.bias", layer.beta.shape), f"{key}.bias")


def port_parameter(variable, weights, key):
    _assign(variable, weights.take(key, variable.shape), key)


def port_block(block, weights, key):
    port_layer_norm(block.norm1, weights, f"{key}.norm1")
    port_dense(block.attn.qkv, weights, f"{key}.attn.qkv")
    port_dense(block.attn.proj, weights, f"{key}.attn.proj")
    port_layer_norm(block.norm2, weights, f"{key}.norm2")
    port_dense(block.fc1, weights, f"{key}.mlp.fc1")
    port_dense(block.fc2, weights, f"{key}.mlp.fc2")


def port_backbone(backbone, weights, prefix=""):
    """Ports a timm / official Segmenter ViT state dict (keys under `prefix`).

    A position embedding learned for another grid is resized bilinearly to
    the backbone's grid, as the official code does when loading ImageNet
    weights for a larger segmentation crop. The ImageNet heads are ignored.
    """
    conv = backbone.patch_embedding.proj
    hwio = conv.kernel.shape
    kernel = weights.take(f"{prefix}patch_embed.proj.weight", (hwio[3], hwio[2], hwio[0], hwio[1]))
    _assign(conv.kernel, kernel.transpose(2, 3, 1, 0), f"{prefix}patch_embed.proj.weight")
    _assign(conv.bias, weights.take(f"{prefix}patch_embed.proj.bias", conv.bias.shape), "bias")
    tokens = backbone.prefix_tokens
    port_parameter(tokens.cls_token, weights, f"{prefix}cls_token")
    if tokens.dist_token is not None:
        port_parameter(tokens.dist_token, weights, f"{prefix}dist_token")

    key = f"{prefix}pos_embed"
    variable = backbone.position_embedding.position_embedding
    embedding = weights.take(key)
    num_prefix = backbone.num_prefix_tokens
    new_grid = backbone.position_embedding.grid_size
    old_grid = new_grid
    if embedding.shape[1] - num_prefix != new_grid[0] * new_grid[1]:
        old_grid = _square_grid(embedding.shape[1] - num_prefix, key, weights.source)
    if embedding.shape[-1] == variable.shape[-1] and old_grid != new_grid:
        embedding = np.asarray(resize_position_embedding(embedding, old_grid, new_grid, num_prefix))
    _assign(variable, embedding, key)

    for i, block in enumerate(backbone.blocks):
        port_block(block, weights, f"{prefix}blocks.{i}")
    if f"{prefix}blocks.{len(backbone.blocks)}.norm1.weight" in weights.arrays:
        raise CheckpointError(
            f"{weights.source}: has more than {len(backbone.blocks)} blocks "
            f"(found `{prefix}blocks.{len(backbone.blocks)}.*`)"
        )
    port_layer_norm(backbone.encoder_norm, weights, f"{prefix}norm")
    weights.ignore(f"{prefix}head.")
    weights.ignore(f"{prefix}head_dist.")


def _square_grid(length, key, source):
    side = int(round(length**0.5))
    if side * side != length:
        raise CheckpointError(
            f"{source}: key `{key}` holds {length} grid positions, not a square grid; "
            "pass the grid size explicitly"
        )
    return (side, side)


def port_segmenter(model, weights):
    """Ports an official Segmenter state dict (`encoder.*`, `decoder.*`) into `model`."""
    port_backbone(model.backbone, weights, prefix="encoder.")
    decoder = model.decoder
    if model.decoder_type == "linear":
        port_dense(decoder.head, weights, "decoder.head")
    else:
        port_parameter(decoder.cls_emb, weights, "decoder.cls_emb")
        port_parameter(decoder.proj_patch, weights, "decoder.proj_patch")
        port_parameter(decoder.proj_classes, weights, "decoder.proj_classes")
        port_dense(decoder.proj_dec, weights, "decoder.proj_dec")
        for i, block in enumerate(decoder.blocks):
            port_block(block, weights, f"decoder.blocks.{i}")
        port_layer_norm(decoder.decoder_norm, weights, "decoder.decoder_norm")
        port_layer_norm(decoder.mask_norm, weights, "decoder.mask_norm")
    weights.check_all_used()
