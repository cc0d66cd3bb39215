"""Putting a token sequence back on the patch grid of the (padded) image."""

from keras import ops


def to_patch_grid(tokens, images, patch_size):
    """`(batch, gh * gw, C)` -> `(batch, gh, gw, C)` with `gh, gw = H // P, W // P` of `images`."""
    shape = ops.shape(images)
    return ops.reshape(
        tokens,
        (ops.shape(tokens)[0], shape[1] // patch_size, shape[2] // patch_size, tokens.shape[-1]),
    )


def patch_grid_shape(tokens_shape, images_shape, patch_size, channels):
    """Static shape of `to_patch_grid` for `compute_output_shape`."""

    def grid(size):
        return None if size is None else size // patch_size

    return (tokens_shape[0], grid(images_shape[1]), grid(images_shape[2]), channels)
