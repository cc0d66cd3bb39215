import keras
from keras import ops

from keras_segmenter.errors import UserError
from keras_segmenter.layers.normalization import check_normalization, normalize_images

_PIXEL_DTYPES = ("uint8", "uint16", "int32", "int64", "float16", "bfloat16", "float32", "float64")


@keras.saving.register_keras_serializable(package="keras_segmenter")
class SegmenterPreprocessor(keras.layers.Layer):
    """Turns RGB images as users hold them into a Segmenter's input.

    keras-hub's split of `ImageSegmenterPreprocessor` and its `ImageConverter`
    in one layer: an optional resize, then `(images / 255 - mean) / std` with
    the statistics of the backbone family. A `Segmenter` carries one (its
    `preprocessor`), saved in its config and in presets as
    `preprocessor.json`; `Segmenter.predict`, `fit` and `evaluate` apply it,
    while calling the model directly takes normalized images. Masks given as
    `y` are resized with `"nearest"` when `image_size` is set.

    Args:
        normalization: str, `"vit"` (mean = std = 0.5) or `"deit"` (ImageNet
            statistics). Defaults to `"vit"`.
        image_size: optional `(height, width)` every image is resized to
            (bilinear). Defaults to `None`: images keep their size.

    Call arguments:
        x: RGB images `(batch, H, W, 3)` or one image `(H, W, 3)`, uint8 or
            integer or float pixel values in [0, 255].
        y: optional masks `(batch, H, W)` or `(H, W)`, returned alongside.
        sample_weight: optional, returned alongside.

    Example:

    >>> preprocessor = SegmenterPreprocessor("vit")
    >>> float(preprocessor(np.full((1, 2, 2, 3), 255, "uint8"))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, normalization="vit", image_size=None, **kwargs):
        super().__init__(**kwargs)
        if image_size is not None:
            image_size = tuple(image_size)
            if len(image_size) != 2 or not all(isinstance(s, int) and s > 0 for s in image_size):
                raise UserError(
                    "`image_size` must be None or two positive ints (height, width). "
                    f"Received: image_size={image_size!r}"
                )
        self.normalization = check_normalization(normalization)
        self.image_size = image_size
        self.built = True  # no weights (a Segmenter holds it uncalled: see layers/dropout.py)

    def call(self, x, y=None, sample_weight=None):
        x = self.normalize(self.resized(check_images(x)))
        if y is not None and self.image_size is not None:
            y = self.resized_masks(y)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def normalize(self, images):
        """Only the normalization (no resize, no checks), in the layer's compute dtype."""
        return normalize_images(images, self.normalization, self.compute_dtype)

    def resized(self, images):
        if self.image_size is None:
            return images
        return ops.image.resize(ops.cast(images, "float32"), self.image_size)

    def resized_masks(self, masks):
        masks = ops.convert_to_tensor(masks)
        resized = ops.image.resize(masks[..., None], self.image_size, interpolation="nearest")
        return ops.cast(resized[..., 0], masks.dtype)

    def compute_output_shape(self, input_shape):
        if self.image_size is None:
            return input_shape
        return (*input_shape[:-3], *self.image_size, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "normalization": self.normalization,
            "image_size": self.image_size,
        }


def preprocessor_of(model):
    """`model.preprocessor`, or for a model without one (a `ViTBackbone`, a model
    of one's own) a `SegmenterPreprocessor` with its `normalization` (default "vit")."""
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        preprocessor = SegmenterPreprocessor(getattr(model, "normalization", "vit"))
    return preprocessor


def check_images(images):
    """`images` as a tensor, refused with a clear `ValueError` unless it is RGB
    pixel values: `(batch, H, W, 3)` or `(H, W, 3)` of an integer or float dtype."""
    images = ops.convert_to_tensor(images)
    check_pixel_spec(images.shape, images.dtype)
    return images


def check_pixel_spec(shape, dtype, ranks=(3, 4)):
    """Raises the preprocessor's `ValueError` unless `shape` and `dtype` are those of
    RGB pixel values (a `None` dimension passes) of one of the `ranks`."""
    dtype = keras.backend.standardize_dtype(dtype)
    shape = tuple(shape)
    if len(shape) not in ranks or shape[-1] not in (3, None) or dtype not in _PIXEL_DTYPES:
        one = " or (height, width, 3)" if 3 in ranks else ""
        raise UserError(
            f"A Segmenter's preprocessor takes RGB images (batch, height, width, 3){one} "
            "of uint8 (or integer or float pixel values in [0, 255]). "
            f"Received: shape={shape}, dtype={dtype}"
        )
