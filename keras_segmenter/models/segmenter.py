import keras
from keras import ops

from keras_segmenter.errors import UserError
from keras_segmenter.layers.backend import TORCH
from keras_segmenter.layers.linear_decoder import LinearDecoder
from keras_segmenter.layers.mask_transformer import MaskTransformer
from keras_segmenter.layers.padding import PadToMultiple, ResizeAndCrop
from keras_segmenter.losses import SegmentationCrossEntropy
from keras_segmenter.metrics import make_metric
from keras_segmenter.models.config_model import ConfigModel
from keras_segmenter.models.segmenter_preprocessor import SegmenterPreprocessor, check_pixel_spec
from keras_segmenter.optimizers import make_optimizer

DECODERS = ("mask", "linear")


@keras.saving.register_keras_serializable(package="keras_segmenter")
class Segmenter(ConfigModel):
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
        preprocessor: a `SegmenterPreprocessor`. Defaults to one with the
            backbone's normalization and no resize.

    Example:

    >>> backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2,
    ...                           num_heads=2, mlp_dim=32, image_size=32)
    >>> model = Segmenter(backbone, num_classes=5)
    >>> model(np.zeros((1, 30, 41, 3), "float32")).shape
    TensorShape([1, 30, 41, 5])
    >>> model.predict(np.zeros((1, 30, 41, 3), "uint8"), verbose=0).shape
    (1, 30, 41, 5)
    """

    def __init__(
        self,
        backbone,
        num_classes,
        decoder="mask",
        decoder_num_layers=2,
        decoder_dropout=0.1,
        decoder_drop_path_rate=0.0,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        if decoder not in DECODERS:
            raise UserError(f"`decoder` must be one of {DECODERS}. Received: decoder={decoder!r}")
        if num_classes < 1:
            raise UserError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
        if preprocessor is None:
            preprocessor = SegmenterPreprocessor(backbone.normalization, name="preprocessor")
        if preprocessor.normalization != backbone.normalization:
            raise UserError(
                "The preprocessor's normalization must be the backbone's "
                f"({backbone.normalization!r}). Received: "
                f"preprocessor.normalization={preprocessor.normalization!r}"
            )
        patch_size = backbone.patch_size

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
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
        """This model's input for RGB images in [0, 255]: `self.preprocessor(images)`."""
        return self.preprocessor(images)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict` on RGB images in [0, 255], uint8 or float (see the class)."""
        spec = getattr(x, "element_spec", x)  # a tf.data.Dataset: its images' spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        if hasattr(spec, "shape") and hasattr(spec, "dtype"):
            check_pixel_spec(spec.shape, spec.dtype, ranks=(4,))
        return super().predict(x, *args, **kwargs)

    def predict_step(self, *args):
        # The data is the last argument on every backend (JAX passes the state first).
        *state, data = args
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return super().predict_step(*state, (self.preprocessor(images),))

    def train_step(self, *args):
        _check_normalized(args[-1])
        return super().train_step(*args)

    def test_step(self, *args):
        _check_normalized(args[-1])
        return super().test_step(*args)

    def make_train_function(self, force=False):
        if not (TORCH and self.jit_compile):
            return super().make_train_function(force)
        if self.train_function is None or force:
            from keras_segmenter.models.torch_train_step import CompiledTrainStep

            self.train_function = CompiledTrainStep(self, check=_check_normalized)
        return self.train_function

    def _should_torch_compile(self):
        # PyTorch's Keras trainer asks this before `torch.compile` of a step, which
        # breaks at every Keras layer: `make_train_function` compiles the training
        # step its own way (torch_train_step); evaluation and prediction run eagerly.
        return False

    def predict_classes(self, images):
        """Class map `(batch, H, W)` int32 for RGB images in [0, 255]."""
        return ops.cast(ops.argmax(self(self.preprocess(images)), axis=-1), "int32")

    @classmethod
    def from_preset(cls, source, num_classes=None, **kwargs):
        """Loads a pretrained Segmenter in one line.

        Downloads go through `keras.utils.get_file` into `$KERAS_HOME` once;
        later calls read the cached files (see `keras_segmenter.list_presets()`).

        Args:
            source: a preset name such as `"ade20k/seg_base_mask"` (or
                `"seg_base_mask"`); the http(s) URL of an official run folder
                (`variant.yml` + `checkpoint.pth`); a local run folder,
                `checkpoint.pth`, `.keras` file or folder written by
                `save_to_preset`; or ImageNet ViT weights (an ImageNet preset
                name, `.npz`, `.safetensors`), which need `num_classes`.
            num_classes: int, optional. When it differs from the
                checkpoint's, the decoder is new and randomly initialised
                (the encoder keeps its weights). Defaults to the checkpoint's.
            **kwargs: `dtype`, `dropout`, `drop_path_rate`, `decoder_dropout`,
                `decoder_drop_path_rate` for the loaded model (for ImageNet
                weights: any `ViTBackbone` argument, e.g. `image_size`, and
                the `decoder*` arguments).

        Example:

        ```python
        model = keras_segmenter.Segmenter.from_preset("ade20k/seg_tiny_mask")
        model = keras_segmenter.Segmenter.from_preset("path/to/run", num_classes=19)
        ```
        """
        from keras_segmenter.models.pretrained import load_segmenter

        return load_segmenter(cls, source, num_classes, **kwargs)

    def save_to_preset(self, path):
        """Writes the model as a preset folder in keras-hub's layout (`config.json`,
        `model.weights.h5`, `preprocessor.json`, `metadata.json`) that
        `Segmenter.from_preset(path)` reads back."""
        from keras_segmenter.models.pretrained import save_preset

        save_preset(self, path)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Configures training; `"auto"` is the paper's recipe (section 4.2).

        Args:
            optimizer: `"auto"`: SGD with momentum 0.9 (Nesterov, as the
                official timm `sgd`), no weight decay, learning rate 1e-3
                decayed by the poly schedule (power 0.9, to 1e-5) over 160k
                iterations: ADE20K's recipe, `optimizers.make_optimizer()`.
                Or any Keras optimizer.
            loss: `"auto"`: `SegmentationCrossEntropy(ignore_index=255)`.
            metrics: `"auto"`: with the `"auto"` loss,
                `[MeanIoU(num_classes, ignore_index=255)]` named `"mIoU"`;
                with a loss of your own, none (its ignored label is unknown).
            **kwargs: more `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = make_optimizer()
        if metrics == "auto":
            metrics = [make_metric(self.num_classes, ignore_index=255)] if loss == "auto" else None
        if loss == "auto":
            loss = SegmentationCrossEntropy(ignore_index=255)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras skips (with a warning) the compile of a saved model whose
        # `compile` is overridden; ours only fills in "auto", so restore as Keras does.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "decoder": self.decoder_type,
            "decoder_num_layers": self.decoder_num_layers,
            "decoder_dropout": self.decoder_dropout,
            "decoder_drop_path_rate": self.decoder_drop_path_rate,
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if isinstance(config.get("preprocessor"), dict):  # absent from models saved before it
            config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return super().from_config(config)


def _check_normalized(data):
    images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    if not keras.backend.standardize_dtype(images.dtype).startswith(("float", "bfloat")):
        raise UserError(
            "Segmenter.fit and evaluate take normalized float images, as "
            "keras_segmenter.data.train_dataset yields them; map integer pixel values "
            "through `model.preprocessor` first. Received: images of dtype "
            f"{keras.backend.standardize_dtype(images.dtype)}"
        )
