import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="keras_segmenter")
class PadToMultiple(keras.layers.Layer):
    """Pads images with zeros at the bottom and right to a multiple of `multiple`.

    Matches the official `padding()`: the value 0 is written in normalized
    space, so the padded pixels are the dataset mean.

    Args:
        multiple: int, usually the patch size.
    """

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, images):
        shape = ops.shape(images)
        pad_h = (-shape[1]) % self.multiple
        pad_w = (-shape[2]) % self.multiple
        return tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def padded(size):
            return None if size is None else -(-size // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def interpolation_matrix(in_size, out_size, keep=None):
    """The `(keep, in_size)` float32 matrix of 1-D bilinear upsampling.

    Row `i` holds the weights of output pixel `i` of a resize from `in_size`
    to `out_size` with half-pixel centres (PyTorch `align_corners=False`,
    `tf.image.resize`): source `(i + 0.5) * in_size / out_size - 0.5`,
    clamped at 0, split between its two neighbours. Only the first `keep`
    rows (default all) are built, which crops the output for free.
    """
    keep = out_size if keep is None else keep
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    source = (tf.range(keep, dtype=tf.float32) + 0.5) * scale - 0.5
    source = tf.maximum(source, 0.0)
    lower = tf.minimum(tf.cast(tf.floor(source), tf.int32), in_size - 1)
    upper = tf.minimum(lower + 1, in_size - 1)
    weight = (source - tf.cast(lower, tf.float32))[:, None]
    return (tf.one_hot(lower, in_size) * (1.0 - weight)
            + tf.one_hot(upper, in_size) * weight)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class ResizeAndCrop(keras.layers.Layer):
    """Upsamples patch-level logits to the padded image, then crops the padding.

    Call with `(logits, padded_images, images)`: `logits` `(batch, gh, gw, K)`
    is resized bilinearly (half-pixel centres, as PyTorch with
    `align_corners=False`) to the size of `padded_images`, then cropped to
    the size of `images`. The two image tensors are read only for their shape.

    The resize is separable, so it is done as two matrix products with
    `interpolation_matrix`, columns first (on the small tensor), then rows.
    On a CPU this is several times faster than `tf.image.resize` at 512x512
    with 150 classes, and its gradient is a matrix product too. It runs in
    float32 whatever the policy: the output is the model's float32 logits.
    """

    def call(self, logits, padded_images, images):
        logits = tf.cast(logits, tf.float32)
        shape = tf.shape(logits)
        batch, grid_h, grid_w, classes = shape[0], shape[1], shape[2], shape[3]
        padded, size = tf.shape(padded_images), tf.shape(images)
        height, width = size[1], size[2]
        rows = interpolation_matrix(grid_h, padded[1], keep=height)
        cols = interpolation_matrix(grid_w, padded[2], keep=width)
        # Columns: (batch * gh, gw, K) -> (batch * gh, W, K).
        x = tf.matmul(cols, tf.reshape(logits, [batch * grid_h, grid_w, classes]))
        # Rows: (batch, gh, W * K) -> (batch, H, W * K).
        x = tf.matmul(rows, tf.reshape(x, [batch, grid_h, width * classes]))
        return tf.reshape(x, [batch, height, width, classes])

    def compute_output_shape(self, logits_shape, padded_images_shape, images_shape):
        return (logits_shape[0], images_shape[1], images_shape[2], logits_shape[-1])
