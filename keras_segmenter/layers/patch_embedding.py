import math

import keras


@keras.saving.register_keras_serializable(package="keras_segmenter")
class PatchEmbedding(keras.layers.Layer):
    """Splits images into non-overlapping patches and projects each one.

    A convolution with kernel = stride = `patch_size` (paper section 3.1,
    the matrix E). Returns the patch grid `(batch, H // P, W // P, hidden_dim)`;
    rows and columns that do not fill a whole patch are dropped, so pad first
    (`PadToMultiple`) to keep them.

    Args:
        patch_size: int, side P of the square patches.
        hidden_dim: int, width D of the embeddings.

    Call arguments:
        images: tensor `(batch, H, W, 3)`.
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        if patch_size < 1:
            raise ValueError(f"`patch_size` must be positive. Received: patch_size={patch_size}")
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        # PyTorch's default Conv2d init, which the official code keeps:
        # uniform in +-1/sqrt(fan_in) for kernel and bias.
        bound = 1.0 / math.sqrt(3 * patch_size * patch_size)
        self.proj = keras.layers.Conv2D(
            hidden_dim,
            patch_size,
            strides=patch_size,
            padding="valid",
            kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            dtype=self.dtype_policy,
            name="proj",
        )

    def build(self, input_shape):
        self.proj.build(input_shape)

    def call(self, images):
        return self.proj(images)

    def compute_output_shape(self, input_shape):
        return self.proj.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
        }
