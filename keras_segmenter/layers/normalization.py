import keras
import numpy as np
from keras import ops

# Mean and standard deviation of [0, 1] RGB images that each backbone family
# was pre-trained with (official `segm/data/utils.py` STATS).
NORMALIZATIONS = {
    "vit": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    "deit": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}


def check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {sorted(NORMALIZATIONS)}. "
            f"Received: normalization={normalization!r}"
        )
    return normalization


def normalize_images(images, normalization="vit", dtype="float32"):
    """`(images / 255 - mean) / std` for RGB images in [0, 255] of any dtype."""
    stats = NORMALIZATIONS[check_normalization(normalization)]
    mean = ops.convert_to_tensor([255.0 * m for m in stats["mean"]], dtype)
    std = ops.convert_to_tensor([255.0 * s for s in stats["std"]], dtype)
    return (ops.cast(images, dtype) - mean) / std


def denormalize_images(images, normalization="vit"):
    """The inverse of `normalize_images`: NumPy uint8 RGB images in [0, 255]."""
    stats = NORMALIZATIONS[check_normalization(normalization)]
    rgb = np.asarray(images, np.float32) * np.float32(255) * np.asarray(stats["std"], np.float32)
    rgb = rgb + np.float32(255) * np.asarray(stats["mean"], np.float32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class ImageNormalization(keras.layers.Layer):
    """Turns RGB images in [0, 255] into the input a Segmenter expects.

    `(images / 255 - mean) / std` with the statistics of the backbone
    family: `"vit"` (mean = std = 0.5) or `"deit"` (ImageNet statistics).

    Args:
        normalization: str, `"vit"` or `"deit"`. Defaults to `"vit"`.

    Call arguments:
        images: RGB tensor `(..., 3)` in [0, 255], of any dtype.

    Example:

    >>> layer = ImageNormalization("vit")
    >>> float(layer(np.full((1, 2, 2, 3), 255, "uint8"))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, normalization="vit", **kwargs):
        super().__init__(**kwargs)
        self.normalization = check_normalization(normalization)

    def call(self, images):
        return normalize_images(images, self.normalization, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}
