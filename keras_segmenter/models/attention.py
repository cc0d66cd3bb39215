import keras

from keras_segmenter.models.segmenter import Segmenter


def encoder_attention_maps(model, images, layers=None):
    """Attention weights of the encoder blocks, for visualisation (paper Fig. 6-7).

    Runs the encoder eagerly block by block and reads each block's softmax
    attention from its own `qkv` weights, so the normal forward pass is
    left untouched and pays nothing for it.

    Args:
        model: a `Segmenter` (images are padded as in its forward pass) or a
            `ViTBackbone`.
        images: normalized images `(batch, H, W, 3)`.
        layers: iterable of block indices; defaults to all blocks.

    Returns:
        `(maps, grid)`: `maps` is a dict `{layer: array (batch, heads, T, T)}`
        over the T = prefix + gh * gw tokens (prefix tokens first, patches in
        row-major order), and `grid` is `(gh, gw)`.
    """
    backbone = model.backbone if isinstance(model, Segmenter) else model
    if isinstance(model, Segmenter):
        images = model.pad(images)
    wanted = set(range(len(backbone.blocks)) if layers is None else layers)
    grid = backbone.patch_embedding(images)
    tokens = backbone.position_embedding(backbone.prefix_tokens(grid), grid)
    maps = {}
    for i, block in enumerate(backbone.blocks):
        if i in wanted:
            maps[i] = keras.ops.convert_to_numpy(block.attn.attention_weights(block.norm1(tokens)))
        if i >= max(wanted):
            break
        tokens = block(tokens)
    return maps, (int(grid.shape[1]), int(grid.shape[2]))
