import math

import keras
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW
from keras_segmenter.layers.drop_path import DropPath
from keras_segmenter.layers.dropout import Dropout
from keras_segmenter.layers.multi_head_attention import MultiHeadSelfAttention, dense_rows


@tf.custom_gradient
def gelu_in_float32(x):
    """Exact (erf) GELU of 16-bit `x`, computed in float32, with its gradient
    `cdf(x) + x * pdf(x)` written out: erf has no vectorised 16-bit kernel on
    CPU (10x slower than float32), and the written-out gradient takes fewer
    passes over the MLP's activations than TensorFlow's derivative of its
    GELU (the same values; timings in docs/benchmarks.md)."""
    x32 = tf.cast(x, tf.float32)
    cdf = 0.5 * tf.math.erfc(x32 * -math.sqrt(0.5))

    def gradient(upstream):
        pdf = tf.exp(tf.square(x32) * -0.5) * (1 / math.sqrt(2 * math.pi))
        return upstream * tf.cast(cdf + x32 * pdf, upstream.dtype)

    return tf.cast(x32 * cdf, x.dtype), gradient


@keras.saving.register_keras_serializable(package="keras_segmenter")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block, as in ViT and Segmenter (paper eq. 1-2).

    `x = x + drop_path(attn(norm1(x)))`, then
    `x = x + drop_path(mlp(norm2(x)))`, where the MLP is
    `fc1 -> exact (erf) GELU -> dropout -> fc2 -> dropout`.

    Args:
        hidden_dim: int, token width.
        num_heads: int, attention heads.
        mlp_dim: int, hidden width of the MLP.
        dropout: float, dropout inside attention and MLP. Defaults to 0.
        drop_path_rate: float, stochastic depth rate of this block. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-5 (PyTorch's default, used by
            the official Segmenter).

    Call arguments:
        x: tensor `(batch, tokens, hidden_dim)`.
        training: bool, apply dropout and stochastic depth. Defaults to False.
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_dim,
        dropout=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        dtype = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="norm1"
        )
        self.attn = MultiHeadSelfAttention(hidden_dim, num_heads, dropout, dtype=dtype, name="attn")
        self.norm2 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="norm2"
        )
        self.fc1 = keras.layers.Dense(mlp_dim, kernel_initializer=init, dtype=dtype, name="fc1")
        self.fc2 = keras.layers.Dense(hidden_dim, kernel_initializer=init, dtype=dtype, name="fc2")
        self.mlp_dropout = Dropout(dropout, dtype=dtype, name="mlp_dropout")
        self.drop_path = DropPath(drop_path_rate, dtype=dtype, name="drop_path")

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def mlp(self, x, training=False):
        shape = ops.shape(x)
        if TENSORFLOW and self.compute_dtype == "bfloat16" and not training:
            # Inference: fc1 on rows with its bias and the exact GELU in bfloat16, which the
            # graph optimizer fuses into one oneDNN product with both as post-ops (faster on
            # the AMX Xeon, and closer to float32: docs/benchmarks.md);
            # fc2 on the 3D tokens, as `dense_rows` says.
            x = ops.gelu(self.fc1(ops.reshape(x, (-1, self.hidden_dim))), approximate=False)
            x = ops.reshape(x, (shape[0], -1, self.mlp_dim))
            return ops.reshape(self.fc2(x), shape)
        x = self.fc1(dense_rows(x, self.hidden_dim, self.compute_dtype))
        if self.compute_dtype == "float32":
            # Exact GELU, which TensorFlow's graph optimizer fuses into fc1's product.
            x = ops.gelu(x, approximate=False)
        elif TENSORFLOW:
            x = gelu_in_float32(x)
        else:
            x = ops.cast(ops.gelu(ops.cast(x, "float32"), approximate=False), x.dtype)
        x = self.mlp_dropout(x, training=training)
        return ops.reshape(self.mlp_dropout(self.fc2(x), training=training), shape)

    def call(self, x, training=False):
        x = x + self.drop_path(self.attn(self.norm1(x), training=training), training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def transformer_blocks(
    num_layers, hidden_dim, num_heads, mlp_dim, dropout, drop_path_rate, layer_norm_epsilon, dtype
):
    """`num_layers` blocks named `block_{i}` whose stochastic depth rises
    linearly from 0 to `drop_path_rate`, as in the official encoder and decoder."""
    return [
        TransformerBlock(
            hidden_dim,
            num_heads,
            mlp_dim,
            dropout=dropout,
            drop_path_rate=drop_path_rate * i / max(1, num_layers - 1),
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name=f"block_{i}",
        )
        for i in range(num_layers)
    ]
