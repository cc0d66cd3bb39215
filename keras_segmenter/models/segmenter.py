import keras
from keras import ops

from keras_segmenter.layers.linear_decoder import LinearDecoder
from keras_segmenter.layers.mask_transformer import MaskTransformer
from keras_segmenter.layers.normalization import normalize_images
from keras_segmenter.layers.padding import PadToMultiple, ResizeAndCrop
from keras_segmenter.models.vit_backbone import ViTBackbone

DECODERS = ("mask", "linear")


@keras.saving.register_keras_serializable(package="keras_segmenter")
class Segmenter(keras.Model):
    """Segmenter: a ViT encoder and a linear or mask-transformer decoder.

    Strudel, Garcia, Laptev, Schmid, "Segmenter: Transformer for Semantic
    Segmentation", ICCV 2021. Takes normalized images `(batch, H, W, 3)` of
    any size (see `preprocess` / `ImageNormalization`) and returns float32
    logits `(batch, H, W, num_classes)`. As in the official code, the image
    is zero-padded at the bottom and right to a multiple of the patch size,
    the patch-level logits are upsampled bilinearly to the padded size, and
    the padding is cropped off.

    Args:
        backbone: a `ViTBackbone`.
        num_classes: int, number of classes K.
        decoder: str, `"mask"` (mask transformer) or `"linear"`. Defaults to `"mask"`.
        decoder_num_layers: int, mask transformer blocks. Defaults to 2.
        decoder_dropout: float, mask transformer dropout. Defaults to 0.1.
        decoder_drop_path_rate: float, mask transformer stochastic depth. Defaults to 0.

    Example:

    >>> backbone = ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2,
    ...                        num_heads=2, mlp_dim=32, image_size=32)
    >>> model = Segmenter(backbone, num_classes=5)
    >>> model(np.zeros((1, 30, 41, 3), "float32")).shape
    TensorShape([1, 30, 41, 5])
    """

    def __init__(
        self,
        backbone,
        num_classes,
        decoder="mask",
        decoder_num_layers=2,
        decoder_dropout=0.1,
        decoder_drop_path_rate=0.0,
        dtype=None,
        **kwargs,
    ):
        if decoder not in DECODERS:
            raise ValueError(f"`decoder` must be one of {DECODERS}. Received: decoder={decoder!r}")
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
        patch_size = backbone.patch_size

        # === Layers ===
        self.backbone = backbone
        self.pad = PadToMultiple(patch_size, dtype=dtype, name="pad")
        if decoder == "mask":
            self.decoder = MaskTransformer(
                num_classes,
                patch_size,
                backbone.hidden_dim,
                num_layers=decoder_num_layers,
                dropout=decoder_dropout,
                drop_path_rate=decoder_drop_path_rate,
                layer_norm_epsilon=backbone.layer_norm_epsilon,
                dtype=dtype,
                name="decoder",
            )
        else:
            self.decoder = LinearDecoder(num_classes, patch_size, dtype=dtype, name="decoder")
        self.resize = ResizeAndCrop(dtype=dtype, name="resize")
        self.output_cast = keras.layers.Activation("linear", dtype="float32", name="logits")

        # === Functional Model ===
        images = keras.Input(shape=(None, None, 3), name="images")
        padded = self.pad(images)
        tokens = self.backbone(padded)
        masks = self.decoder(tokens[:, backbone.num_prefix_tokens :], padded)
        logits = self.output_cast(self.resize(masks, padded, images))
        super().__init__(inputs=images, outputs=logits, dtype=dtype, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.decoder_type = decoder
        self.decoder_num_layers = decoder_num_layers
        self.decoder_dropout = decoder_dropout
        self.decoder_drop_path_rate = decoder_drop_path_rate

    @property
    def patch_size(self):
        return self.backbone.patch_size

    @property
    def normalization(self):
        """The input normalization the backbone expects: `"vit"` or `"deit"`."""
        return self.backbone.normalization

    def preprocess(self, images):
        """Normalizes RGB images in [0, 255] (any dtype) for this model."""
        return normalize_images(images, self.normalization)

    def predict_classes(self, images):
        """Class map `(batch, H, W)` int32 for RGB images in [0, 255]."""
        return ops.cast(ops.argmax(self(self.preprocess(images)), axis=-1), "int32")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "decoder": self.decoder_type,
            "decoder_num_layers": self.decoder_num_layers,
            "decoder_dropout": self.decoder_dropout,
            "decoder_drop_path_rate": self.decoder_drop_path_rate,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
