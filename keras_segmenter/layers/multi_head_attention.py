import keras
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW, TORCH, is_fusing
from keras_segmenter.layers.dropout import Dropout


def dense_rows(tokens, width, compute_dtype):
    """Tokens `(batch, tokens, ...)` as a block's Dense layers take them.

    float32: `(batch * tokens, width)` rows, where TensorFlow's graph optimizer
    fuses each matrix product with its bias (and fc1's with the GELU) into one
    oneDNN kernel; a Dense on 3D tokens runs as Tensordot, which keeps them
    apart. bfloat16: the 3D tokens, as oneDNN runs that fused kernel as an
    inner product without AMX (`x64:gemm:jit`), slower there than the AMX
    product and a separate bias add (docs/benchmarks.md).
    """
    if compute_dtype == "bfloat16":
        return ops.reshape(tokens, (ops.shape(tokens)[0], -1, width))
    return ops.reshape(tokens, (-1, width))


def attention_softmax(query, key):
    """`softmax(query @ key^T)` over the keys: the attention weights."""
    # An explicit transpose: with tf.matmul(transpose_b=True) the OpenVINO export's logits are wrong.
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
    if not TENSORFLOW:
        wide = keras.backend.standardize_dtype(scores.dtype) == "float16"
        return ops.softmax(ops.cast(scores, "float32") if wide else scores, axis=-1)
    if scores.dtype == tf.float16:
        # float16 has too little range for the softmax sums; bfloat16 has
        # float32's range, so its softmax runs in bfloat16 (12% faster per
        # block on CPU), as in Keras' own MultiHeadAttention.
        scores = tf.cast(scores, tf.float32)
    return tf.nn.softmax(scores)


def softmax_attention(query, key, value, dropout=None):
    """`softmax(query @ key^T) @ value` over `(..., tokens, head_dim)` heads.

    The forward pass is the usual one (`attention_softmax`, then the product
    with `value`); `dropout`, a tensor of the weights' shape or None,
    multiplies the softmax weights. The gradient is written out as flash
    attention's: with `d_weights = d_out @ value^T` (times `dropout`), the
    softmax gradient is `weights * (d_weights - delta)`, where `delta`, one
    number per query, is `sum(d_out * out)` over the head's values (in at
    least float32), equal to the `sum(d_weights * weights)` over the keys that
    TensorFlow's softmax gradient computes. Summed over `head_dim` instead of
    `tokens` terms, it saves two of that gradient's four passes over the
    `tokens^2` weights. (Off TensorFlow: the forward pass, differentiated by
    the backend.)
    """
    if not TENSORFLOW:
        weights = ops.cast(attention_softmax(query, key), value.dtype)
        return ops.matmul(weights if dropout is None else weights * dropout, value)

    @tf.custom_gradient
    def attend(query, key, value):
        weights = tf.cast(attention_softmax(query, key), value.dtype)
        used = weights if dropout is None else weights * dropout
        out = tf.matmul(used, value)

        def gradient(d_out):
            d_weights = tf.matmul(d_out, value, transpose_b=True)
            if dropout is not None:
                d_weights *= dropout
            # 16-bit values are summed in float32.
            wide = tf.float32 if out.dtype.size < 4 else out.dtype
            delta = tf.reduce_sum(tf.cast(d_out, wide) * tf.cast(out, wide), -1)
            d_scores = weights * (d_weights - tf.cast(delta, weights.dtype)[..., None])
            return (
                tf.matmul(d_scores, key),
                tf.matmul(d_scores, query, transpose_a=True),
                tf.matmul(used, d_out, transpose_a=True),
            )

        return out, gradient

    return attend(query, key, value)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention with one fused query/key/value projection.

    The layout follows the official Segmenter (and timm) `Attention`: one
    dense layer `qkv` of width `3 * hidden_dim` whose output is read as
    `(tokens, 3, num_heads, head_dim)`, scaled dot products
    (`head_dim ** -0.5`), softmax over the keys, dropout on the attention
    weights, then the `proj` output projection and dropout.

    Args:
        hidden_dim: int, token width; must be divisible by `num_heads`.
        num_heads: int, number of heads.
        dropout: float, dropout on attention weights and output. Defaults to 0.

    Call arguments:
        inputs: tensor `(batch, tokens, hidden_dim)`.
        training: bool, apply dropout. Defaults to False.

    Returns:
        Tensor `(batch, tokens, hidden_dim)`.
    """

    def __init__(self, hidden_dim, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.head_dim = hidden_dim // num_heads
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.qkv = keras.layers.Dense(
            3 * hidden_dim, kernel_initializer=init, dtype=self.dtype_policy, name="qkv"
        )
        self.proj = keras.layers.Dense(
            hidden_dim, kernel_initializer=init, dtype=self.dtype_policy, name="proj"
        )
        self.attention_dropout = Dropout(dropout, dtype=self.dtype_policy, name="attention_dropout")
        self.output_dropout = Dropout(dropout, dtype=self.dtype_policy, name="output_dropout")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def _qkv(self, inputs):
        # (B, N, D) -> (B, N, 3, heads, head_dim).
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        qkv = self.qkv(dense_rows(inputs, self.hidden_dim, self.compute_dtype))
        return ops.reshape(qkv, (batch, tokens, 3, self.num_heads, self.head_dim))

    def _heads(self, inputs):
        # (B, N, D) -> three (B, heads, N, head_dim) tensors.
        # unstack, not qkv[0], qkv[1], qkv[2]: the gradient of an index is a zero-filled
        # full-size tensor per slice (StridedSliceGrad), that of unstack one stack.
        return ops.unstack(ops.transpose(self._qkv(inputs), (2, 0, 3, 1, 4)), 3, axis=0)

    def call(self, inputs, training=False):
        # Recorded for Inductor (`is_fusing()`: the compiled training step), bf16 attention is
        # written out: torch's flash attention backward is slower there (docs/benchmarks.md).
        written_out = self.dropout or (is_fusing() and self.compute_dtype == "bfloat16")
        if TORCH and not (training and written_out):
            # torch's fused scaled_dot_product_attention (flash attention on
            # CPU) on (B, N, heads, head_dim) heads; it has no dropout.
            query, key, value = ops.unstack(self._qkv(inputs), 3, axis=2)
            outputs = ops.dot_product_attention(query, key, value, scale=self.head_dim**-0.5)
        else:
            query, key, value = self._heads(inputs)
            if TENSORFLOW:
                shape = tf.concat([tf.shape(query)[:-1], tf.shape(key)[-2:-1]], 0)
            else:
                shape = tuple(ops.shape(query)[:-1]) + tuple(ops.shape(key)[-2:-1])
            dropout = self.attention_dropout.scale(shape, value.dtype, training)
            outputs = softmax_attention(query * self.head_dim**-0.5, key, value, dropout)
            outputs = ops.transpose(outputs, (0, 2, 1, 3))  # (B, N, heads, head_dim)
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        outputs = self.proj(dense_rows(outputs, self.hidden_dim, self.compute_dtype))
        outputs = ops.reshape(outputs, (batch, tokens, self.hidden_dim))
        return self.output_dropout(outputs, training=training)

    def attention_weights(self, inputs):
        """Softmax attention `(batch, heads, tokens, tokens)`, for visualisation."""
        query, key, _ = self._heads(inputs)
        return attention_softmax(query * self.head_dim**-0.5, key)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
        }
