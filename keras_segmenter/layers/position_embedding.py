import keras
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW


def resize_position_embedding(embedding, old_grid, new_grid, num_prefix_tokens):
    """Resamples a ViT position embedding to another patch grid.

    The rows of the prefix tokens (class, distillation) are kept; the grid
    rows are reshaped to `old_grid`, resized bilinearly (half-pixel centres,
    no antialiasing: PyTorch's `F.interpolate(mode="bilinear")`) to
    `new_grid` and flattened again. Used by the model at call time and by
    the checkpoint converters.

    Args:
        embedding: tensor `(1, num_prefix_tokens + gh * gw, D)`.
        old_grid: `(gh, gw)` of the embedding.
        new_grid: `(new_gh, new_gw)`; ints or scalar tensors.
        num_prefix_tokens: int, rows in front of the grid.

    Returns:
        Tensor `(1, num_prefix_tokens + new_gh * new_gw, D)`, float32.
    """
    embedding = ops.convert_to_tensor(embedding)
    dim = embedding.shape[-1]
    prefix = embedding[:, :num_prefix_tokens]
    grid = ops.reshape(embedding[:, num_prefix_tokens:], (1, old_grid[0], old_grid[1], dim))
    if TENSORFLOW:
        # `keras.ops.image.resize` checks `size > 0` in Python, which a dynamic size can't pass.
        grid = tf.image.resize(grid, tf.stack(new_grid), method="bilinear", antialias=False)
    else:
        # JAX and PyTorch trace with static sizes. PyTorch's is F.interpolate itself; JAX's
        # drops the taps outside the grid and renormalises, which equals clamping the source
        # coordinate: within 3e-7 of F.interpolate, up and down (24 -> 5), in float32.
        grid = ops.image.resize(grid, new_grid, interpolation="bilinear", antialias=False)
    grid = ops.reshape(ops.cast(grid, embedding.dtype), (1, -1, dim))
    return ops.concatenate([prefix, grid], axis=1)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding, resized to the input's patch grid.

    The embedding is learned for `grid_size` (the training crop divided by
    the patch size). When an image gives another grid, the grid part is
    resized bilinearly on every call and the prefix-token rows are used as
    they are, as the official encoder does.

    Args:
        grid_size: `(gh, gw)`, the grid the embedding is learned for.
        num_prefix_tokens: int, prefix tokens in front of the patches. Defaults to 1.

    Call arguments:
        tokens: tensor `(batch, k + gh * gw, D)`, the k prefix tokens first.
        grid: tensor `(batch, gh, gw, D)`, the patch grid, read only for its
            shape.
    """

    def __init__(self, grid_size, num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        grid_size = tuple(int(g) for g in grid_size)
        if len(grid_size) != 2 or min(grid_size) < 1:
            raise ValueError(
                f"`grid_size` must be two positive ints. Received: grid_size={grid_size}"
            )
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens

    def build(self, tokens_shape):
        # Keras passes a one-argument `build` the shape of the first call argument.
        length = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.position_embedding = self.add_weight(
            shape=(1, length, tokens_shape[-1]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding",
        )

    def call(self, tokens, grid):
        shape = ops.shape(grid)
        embedding = resize_position_embedding(
            self.position_embedding, self.grid_size, (shape[1], shape[2]), self.num_prefix_tokens
        )
        return tokens + ops.cast(embedding, tokens.dtype)

    def compute_output_shape(self, tokens_shape):
        return tokens_shape

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_prefix_tokens": self.num_prefix_tokens,
        }
