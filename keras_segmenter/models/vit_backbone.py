import numbers

import keras

from keras_segmenter.errors import UserError
from keras_segmenter.layers.dropout import Dropout
from keras_segmenter.layers.normalization import check_normalization
from keras_segmenter.layers.patch_embedding import PatchEmbedding
from keras_segmenter.layers.position_embedding import PositionEmbedding
from keras_segmenter.layers.prefix_tokens import PrefixTokens
from keras_segmenter.layers.transformer_block import transformer_blocks
from keras_segmenter.models.config_model import ConfigModel


def _is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


@keras.saving.register_keras_serializable(package="keras_segmenter")
class ViTBackbone(ConfigModel):
    """Vision Transformer encoder of Segmenter (paper section 3.1).

    Maps normalized images `(batch, H, W, 3)` to the token sequence
    `(batch, k + (H // P) * (W // P), hidden_dim)`: the k prefix tokens
    (class, and distillation for DeiT) followed by the patches in row-major
    order, after the final LayerNorm. Images of any size work; the position
    embedding, learned for `image_size`, is resized bilinearly to the grid
    of each input.

    Args:
        patch_size: int, patch side P.
        hidden_dim: int, token width D.
        num_layers: int, transformer blocks L.
        num_heads: int, attention heads.
        mlp_dim: int, MLP width (4 D in ViT).
        image_size: int or `(height, width)`, the size the position embedding
            is learned for (the training crop). Defaults to 512.
        distilled: bool, add a DeiT distillation token. Defaults to False.
        dropout: float, dropout after the embeddings and inside the blocks.
            Defaults to 0.
        drop_path_rate: float, stochastic depth of the last block, rising
            linearly from 0 in the first. Defaults to 0.1.
        layer_norm_epsilon: float. Defaults to 1e-5.
        normalization: str, `"vit"` or `"deit"`: the input normalization the
            weights expect (see `ImageNormalization`). Defaults to `"vit"`.
    """

    def __init__(
        self,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_dim,
        image_size=512,
        distilled=False,
        dropout=0.0,
        drop_path_rate=0.1,
        layer_norm_epsilon=1e-5,
        normalization="vit",
        dtype=None,
        **kwargs,
    ):
        for name, value in (("patch_size", patch_size), ("hidden_dim", hidden_dim)) + (
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("mlp_dim", mlp_dim),
        ):
            if not _is_count(value):
                raise UserError(f"`{name}` must be a positive int. Received: {name}={value!r}")
        if _is_count(image_size):
            image_size = (image_size, image_size)
        if not (
            isinstance(image_size, (tuple, list))
            and len(image_size) == 2
            and all(map(_is_count, image_size))
        ):
            raise UserError(
                "`image_size` must be a positive int or (height, width) positive ints. "
                f"Received: image_size={image_size!r}"
            )
        image_size = tuple(int(side) for side in image_size)
        if image_size[0] % patch_size or image_size[1] % patch_size:
            raise UserError(
                "`image_size` must be a multiple of `patch_size`. "
                f"Received: image_size={image_size}, patch_size={patch_size}"
            )
        check_normalization(normalization)
        num_prefix_tokens = 2 if distilled else 1

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            patch_size, hidden_dim, dtype=dtype, name="patch_embedding"
        )
        self.prefix_tokens = PrefixTokens(num_prefix_tokens, dtype=dtype, name="prefix_tokens")
        self.position_embedding = PositionEmbedding(
            (image_size[0] // patch_size, image_size[1] // patch_size),
            num_prefix_tokens,
            dtype=dtype,
            name="position_embedding",
        )
        self.embedding_dropout = Dropout(dropout, dtype=dtype, name="embedding_dropout")
        self.blocks = transformer_blocks(
            num_layers,
            hidden_dim,
            num_heads,
            mlp_dim,
            dropout,
            drop_path_rate,
            layer_norm_epsilon,
            dtype,
        )
        self.encoder_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="encoder_norm"
        )

        # === Functional Model ===
        images = keras.Input(shape=(None, None, 3), name="backbone_images")
        grid = self.patch_embedding(images)
        x = self.position_embedding(self.prefix_tokens(grid), grid)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x)
        tokens = self.encoder_norm(x)
        super().__init__(inputs=images, outputs=tokens, dtype=dtype, **kwargs)

        # === Config ===
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.image_size = image_size
        self.distilled = distilled
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalization = normalization
        self.num_prefix_tokens = num_prefix_tokens

    @classmethod
    def from_preset(cls, source, **kwargs):
        """Loads pretrained encoder weights in one line.

        Args:
            source: an ImageNet preset name such as `"vit_base_patch16_384"`
                (see `keras_segmenter.list_presets()`), an http(s) URL or a
                local path of AugReg `.npz` / timm `.safetensors` weights; or
                any `Segmenter.from_preset` source, whose encoder is returned.
            **kwargs: for ImageNet weights, `ViTBackbone` arguments such as
                `image_size` (default 512: the position embedding is resized
                to it), `dropout`, `drop_path_rate`, `dtype`; otherwise
                `dtype`, `dropout`, `drop_path_rate`.
        """
        from keras_segmenter.models.pretrained import load_backbone

        return load_backbone(cls, source, **kwargs)

    def save_to_preset(self, path):
        """Writes the backbone as a preset folder (`config.json` + `model.weights.h5`)."""
        from keras_segmenter.models.pretrained import save_preset

        save_preset(self, path)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "image_size": self.image_size,
            "distilled": self.distilled,
            "dropout": self.dropout,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "normalization": self.normalization,
        }
