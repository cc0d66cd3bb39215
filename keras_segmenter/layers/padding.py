import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW, is_fusing


@keras.saving.register_keras_serializable(package="keras_segmenter")
class PadToMultiple(keras.layers.Layer):
    """Pads images with zeros at the bottom and right to a multiple of `multiple`.

    Matches the official `padding()`: the value 0 is written in normalized
    space, so the padded pixels are the dataset mean.

    Args:
        multiple: int, usually the patch size.

    Call arguments:
        images: tensor `(batch, H, W, C)`.
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, images):
        shape = ops.shape(images)
        # Non-negative operands: tf2onnx turns `(-size) % multiple` into a
        # truncated remainder, which pads by a negative amount (crops).
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def padded(size):
            return None if size is None else -(-size // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def upsample_rows(x, factor, axis):
    """`x` `(batch, h, w, K)` resized bilinearly `factor` times along `axis` (1 or 2).

    Half-pixel centres, as `ops.image.resize` (PyTorch's `align_corners=False`):
    output row `factor * a + r` lies at `a + offset[r]`, `offset[r] = (r + 0.5) /
    factor - 0.5`, between source row `a` and its neighbour above (offset < 0)
    or below, the edge rows repeated. Written as a fixed blend of `x` and `x`
    shifted by one row, with no index computed or gathered per element, which
    Inductor compiles into vectorised loops fused with what reads the rows,
    and whose gradient is a sum over `r` (not ATen's
    `upsample_bilinear2d_backward`, which Inductor leaves eager); run eagerly
    it writes the full-size tensor several times over.
    """
    n = x.shape[axis]

    def rows(start, stop):
        return x[(slice(None),) * axis + (slice(start, stop),)]

    above = ops.concatenate([rows(0, 1), rows(0, n - 1)], axis=axis)
    below = ops.concatenate([rows(1, n), rows(n - 1, n)], axis=axis)
    offset = (np.arange(factor, dtype="float32") + 0.5) / factor - 0.5
    shape = [1] * 5
    shape[axis + 1] = factor
    near = ops.convert_to_tensor(np.abs(offset).reshape(shape))  # the neighbour's weight
    upward = ops.convert_to_tensor((offset < 0).reshape(shape))

    def spread(t):  # (..., n, ...) -> (..., n, 1, ...)
        return ops.expand_dims(t, axis + 1)

    neighbour = ops.where(upward, spread(above), spread(below))
    out = spread(x) * (1.0 - near) + neighbour * near
    size = list(x.shape)
    size[axis] = n * factor
    return ops.reshape(out, size)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class ResizeAndCrop(keras.layers.Layer):
    """Upsamples patch-level logits to the padded image, then crops the padding.

    The logits are resized bilinearly (half-pixel centres, as PyTorch with
    `align_corners=False`) to the size of `padded_images`, then cropped to
    the size of `images`.

    Call arguments:
        logits: tensor `(batch, gh, gw, K)`.
        padded_images: tensor `(batch, H_pad, W_pad, 3)`, read only for its
            shape.
        images: tensor `(batch, H, W, 3)`, read only for its shape.

    Returns:
        Tensor `(batch, H, W, K)`.
    """

    def call(self, logits, padded_images, images):
        padded, size = ops.shape(padded_images), ops.shape(images)
        if is_fusing():  # recorded for Inductor, with static sizes: see `upsample_rows`
            if padded[1] % logits.shape[1] or padded[2] % logits.shape[2]:
                raise ValueError(
                    f"The padded size {tuple(padded[1:3])} must be a multiple of the logits' "
                    f"grid. Received: logits.shape={tuple(logits.shape)}"
                )
            logits = ops.cast(logits, "float32")
            logits = upsample_rows(logits, padded[2] // logits.shape[2], axis=2)
            logits = upsample_rows(logits, padded[1] // logits.shape[1], axis=1)
        elif TENSORFLOW:
            # `keras.ops.image.resize` checks `size > 0` in Python, which a dynamic size can't pass.
            logits = tf.image.resize(logits, (padded[1], padded[2]), method="bilinear")
        else:  # JAX and PyTorch trace with static sizes; in float32, as `tf.image.resize`
            logits = ops.image.resize(
                ops.cast(logits, "float32"),
                (padded[1], padded[2]),
                interpolation="bilinear",
                antialias=False,
            )
        if None not in images.shape[1:3] and logits.shape[1:3] == images.shape[1:3]:
            return logits  # nothing padded: no crop (its gradient would copy the whole map)
        return logits[:, : size[1], : size[2], :]

    def compute_output_shape(self, logits_shape, images_shape):
        return (logits_shape[0], images_shape[1], images_shape[2], logits_shape[-1])
