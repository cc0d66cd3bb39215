import keras
from keras import ops

from keras_segmenter.layers.patch_grid import patch_grid_shape, to_patch_grid
from keras_segmenter.layers.transformer_block import transformer_blocks


@keras.saving.register_keras_serializable(package="keras_segmenter")
class MaskTransformer(keras.layers.Layer):
    """The mask transformer decoder of Segmenter (paper section 3.2, eq. 4).

    K learned class embeddings are appended after the projected patch
    encodings (`proj_dec`) and processed jointly by `num_layers` transformer
    blocks and a LayerNorm (`decoder_norm`). Patches and classes are then
    projected by the plain matrices `proj_patch` and `proj_classes`,
    L2-normalised, and their scalar products give one mask per class, which
    `mask_norm` (a LayerNorm over the classes) turns into logits.

    Args:
        num_classes: int, number of classes K.
        patch_size: int, the encoder's patch size.
        hidden_dim: int, decoder width (the official code uses the encoder width).
        num_layers: int, decoder blocks. Defaults to 2.
        num_heads: int or None, attention heads; `None` gives
            `max(1, hidden_dim // 64)` as the official factory does.
        mlp_dim: int or None, MLP width; `None` gives `4 * hidden_dim`.
        dropout: float, dropout inside the blocks. Defaults to 0.1.
        drop_path_rate: float, largest stochastic depth rate, reached by the
            last block. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-5.

    Call arguments:
        tokens: tensor `(batch, gh * gw, D)`, the patch encodings without
            the prefix tokens.
        images: tensor `(batch, H, W, 3)`, the padded input, read only for
            its shape: `gh = H // patch_size`, `gw = W // patch_size`.
        training: bool, apply dropout and stochastic depth. Defaults to False.

    Returns:
        Patch-level logits `(batch, gh, gw, num_classes)`.
    """

    def __init__(
        self,
        num_classes,
        patch_size,
        hidden_dim,
        num_layers=2,
        num_heads=None,
        mlp_dim=None,
        dropout=0.1,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        dtype = self.dtype_policy
        self.proj_dec = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="proj_dec",
        )
        self.blocks = transformer_blocks(
            num_layers,
            hidden_dim,
            num_heads or max(1, hidden_dim // 64),
            mlp_dim or 4 * hidden_dim,
            dropout,
            drop_path_rate,
            layer_norm_epsilon,
            dtype,
        )
        self.decoder_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="decoder_norm"
        )
        self.mask_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="mask_norm"
        )

    def build(self, tokens_shape):
        # Keras passes a one-argument `build` the shape of the first call argument.
        self.proj_dec.build(tokens_shape)
        hidden_shape = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(hidden_shape)
        self.decoder_norm.build(hidden_shape)
        self.mask_norm.build((None, None, self.num_classes))
        self.cls_emb = self.add_weight(
            shape=(1, self.num_classes, self.hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="cls_emb",
        )
        scaled_normal = keras.initializers.RandomNormal(stddev=self.hidden_dim**-0.5)
        self.proj_patch = self.add_weight(
            shape=(self.hidden_dim, self.hidden_dim), initializer=scaled_normal, name="proj_patch"
        )
        self.proj_classes = self.add_weight(
            shape=(self.hidden_dim, self.hidden_dim), initializer=scaled_normal, name="proj_classes"
        )

    def call(self, tokens, images, training=False):
        x = self.proj_dec(tokens)
        batch, num_patches = ops.shape(x)[0], ops.shape(x)[1]
        classes = ops.broadcast_to(
            ops.cast(self.cls_emb, x.dtype), (batch, self.num_classes, self.hidden_dim)
        )
        x = ops.concatenate([x, classes], axis=1)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.decoder_norm(x)
        patches = ops.matmul(x[:, :num_patches], ops.cast(self.proj_patch, x.dtype))
        classes = ops.reshape(x[:, num_patches:], (batch, self.num_classes, self.hidden_dim))
        classes = ops.matmul(classes, ops.cast(self.proj_classes, x.dtype))
        # The official code divides by the norm with no epsilon; so do we, in float32.
        patches = ops.cast(patches, "float32")
        classes = ops.cast(classes, "float32")
        patches = patches / ops.norm(patches, axis=-1, keepdims=True)
        classes = classes / ops.norm(classes, axis=-1, keepdims=True)
        masks = self.mask_norm(ops.matmul(patches, ops.swapaxes(classes, 1, 2)))
        return to_patch_grid(masks, images, self.patch_size)

    def compute_output_shape(self, tokens_shape, images_shape):
        return patch_grid_shape(tokens_shape, images_shape, self.patch_size, self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
