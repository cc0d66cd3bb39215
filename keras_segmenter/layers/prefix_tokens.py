import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_segmenter")
class PrefixTokens(keras.layers.Layer):
    """Flattens a patch grid and puts learned tokens in front of it.

    One class token for ViT, a class and a distillation token for
    distilled DeiT models: `(batch, gh, gw, D) -> (batch, k + gh * gw, D)`,
    patches in row-major order, as the official encoder does.

    Args:
        num_tokens: int, 1 (class token) or 2 (class + distillation). Defaults to 1.

    Call arguments:
        grid: tensor `(batch, gh, gw, D)`, the patch grid.
    """

    def __init__(self, num_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if num_tokens not in (1, 2):
            raise ValueError(f"`num_tokens` must be 1 or 2. Received: num_tokens={num_tokens}")
        self.num_tokens = num_tokens

    def build(self, input_shape):
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        dim = input_shape[-1]
        self.cls_token = self.add_weight(shape=(1, 1, dim), initializer=init, name="cls_token")
        self.dist_token = None
        if self.num_tokens == 2:
            self.dist_token = self.add_weight(
                shape=(1, 1, dim), initializer=init, name="dist_token"
            )

    def call(self, grid):
        shape = ops.shape(grid)
        batch, dim = shape[0], grid.shape[-1]
        patches = ops.reshape(grid, (batch, shape[1] * shape[2], dim))
        tokens = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        prefix = ops.concatenate([ops.cast(t, patches.dtype) for t in tokens], axis=1)
        prefix = ops.broadcast_to(prefix, (batch, self.num_tokens, dim))
        return ops.concatenate([prefix, patches], axis=1)

    def compute_output_shape(self, input_shape):
        batch, height, width, dim = input_shape
        tokens = None if height is None or width is None else self.num_tokens + height * width
        return (batch, tokens, dim)

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens}
