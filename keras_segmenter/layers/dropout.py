import math

import keras
import tensorflow as tf
from keras import ops

from keras_segmenter.layers.backend import TENSORFLOW, is_fusing

# Each 32-bit random number gives two decisions of 16 bits.
_LEVELS = 2**16
_MASK32 = 2**32 - 1


def _keep_mask(shape, seed, rate):
    """Boolean tensor of `shape`, True with probability `1 - rate` (to 1/65536).

    TensorFlow's Philox generator costs the same per 32-bit number whether it
    becomes a float or an integer; reading each one as two 16-bit numbers
    halves the draws (timings in docs/benchmarks.md).
    """
    halves = tf.concat([shape[:-1], [(shape[-1] + 1) // 2]], axis=0)
    bits = tf.random.stateless_uniform(halves, seed, dtype=tf.uint32, minval=None, maxval=None)
    bits = tf.reshape(tf.bitcast(bits, tf.uint16), tf.concat([shape[:-1], [-1]], axis=0))
    return bits[..., : shape[-1]] >= round(rate * _LEVELS)


def _mix(x):
    """A 32-bit integer hash of int64 `x` < 2**32 (xor-shifts and multiplies; the
    constants are below 2**31, so no int64 product overflows)."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.bitwise_and(x * 0x7FEB352D, _MASK32)
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.bitwise_and(x * 0x21F0AAAD, _MASK32)
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def _hashed_bits(shape, seed_generator):
    """16 random bits per element of `shape`: each element's index hashed with two
    31-bit keys drawn from `seed_generator`, `mix(mix(index ^ k0) ^ k1)`.

    For a graph recorded for Inductor (`is_fusing()`), which computes this in
    the kernel that reads the mask, at about a seventh of the cost of a
    Philox draw per element (0.6 against 4.4 ns on the AMX Xeon); timings in
    docs/benchmarks.md.
    """
    key = ops.cast(keras.random.randint((2,), 0, 2**31 - 1, seed=seed_generator), "int64")
    index = ops.reshape(ops.arange(math.prod(shape), dtype="int64"), shape)
    bits = _mix(ops.bitwise_xor(_mix(ops.bitwise_xor(index, key[0])), key[1]))
    return ops.bitwise_and(bits, _LEVELS - 1)


@keras.saving.register_keras_serializable(package="keras_segmenter")
class Dropout(keras.layers.Layer):
    """Dropout whose random decisions cost half of `keras.layers.Dropout`'s.

    In training, each element is zeroed with probability `rate` and the kept
    ones are scaled by `1 / (1 - rate)`; at inference it is the identity, as
    `torch.nn.Dropout` and `keras.layers.Dropout`. The decisions come from
    16-bit random numbers, two per 32-bit draw of TensorFlow's stateless
    Philox generator (in a graph recorded for Inductor, a hash of each
    element's index with keys drawn per call: `_hashed_bits`), so the rate
    is exact to 1/65536. (Keras' dropout draws one uniform number of the
    input's dtype per element: under bfloat16, with its 8-bit mantissa, rate
    0.1 drops 10.16 % of the elements.) The random state lives in a
    `keras.random.SeedGenerator`, saved with the weights, so a checkpoint
    resumes the same masks.

    Args:
        rate: float in [0, 1), fraction of the elements to drop.
        seed: int or None, seed of the random generator.

    Call arguments:
        inputs: tensor of any shape.
        training: bool, drop (training) or return `inputs` as they are
            (inference). Defaults to False.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate}")
        self.rate = rate
        self.seed = seed
        if rate > 0.0:  # the variables of keras.layers.Dropout: its files load here
            self.seed_generator = keras.random.SeedGenerator(seed)
        # No weights to build, as keras.layers.Dropout. The attention calls only `scale`,
        # and an unbuilt sublayer made Keras trace the whole model at every train_on_batch.
        self.built = True

    def call(self, inputs, training=False):
        shape = tf.shape(inputs) if TENSORFLOW else ops.shape(inputs)
        scale = self.scale(shape, inputs.dtype, training)
        return inputs if scale is None else inputs * scale

    def scale(self, shape, dtype, training=False):
        """What `call` multiplies its input by: per element 0 or `1 / (1 - rate)`
        (rounded to `dtype`, as Keras' dropout does), a tensor of `shape`; None
        at inference or rate 0. Off TensorFlow the 16-bit decisions are
        `keras.random.randint` draws, one per element; in a graph recorded
        for Inductor (`is_fusing()`), `_hashed_bits`."""
        if not training or self.rate == 0.0:
            return None
        if is_fusing():
            bits = _hashed_bits(shape, self.seed_generator)
        elif TENSORFLOW:
            # SeedGenerator keeps an int64 state; the stateless ops take int32 seeds.
            seed = tf.cast(tf.math.floormod(self.seed_generator.next(), 2**31 - 1), tf.int32)
            keep = _keep_mask(shape, seed, self.rate)
            return tf.cast(keep, dtype) * tf.cast(1.0 / (1.0 - self.rate), dtype)
        else:
            bits = keras.random.randint(shape, 0, _LEVELS, seed=self.seed_generator)
        keep = bits >= round(self.rate * _LEVELS)
        return ops.cast(keep, dtype) * ops.cast(1.0 / (1.0 - self.rate), dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
