import keras

from keras_segmenter.layers.patch_grid import patch_grid_shape, to_patch_grid


@keras.saving.register_keras_serializable(package="keras_segmenter")
class LinearDecoder(keras.layers.Layer):
    """The linear decoder of Segmenter (paper section 3.2, "Linear").

    A point-wise dense layer maps each patch encoding to class logits, and
    the sequence is put back on the patch grid.

    Args:
        num_classes: int, number of classes K.
        patch_size: int, the encoder's patch size.

    Call arguments:
        tokens: tensor `(batch, gh * gw, D)`, the patch encodings without
            the prefix tokens.
        images: tensor `(batch, H, W, 3)`, the padded input, read only for
            its shape: `gh = H // patch_size`, `gw = W // patch_size`.

    Returns:
        Patch-level logits `(batch, gh, gw, num_classes)`.
    """

    def __init__(self, num_classes, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.head = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="head",
        )

    def build(self, tokens_shape):
        # Keras passes a one-argument `build` the shape of the first call argument.
        self.head.build(tokens_shape)

    def call(self, tokens, images):
        return to_patch_grid(self.head(tokens), images, self.patch_size)

    def compute_output_shape(self, tokens_shape, images_shape):
        return patch_grid_shape(tokens_shape, images_shape, self.patch_size, self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "patch_size": self.patch_size,
        }
