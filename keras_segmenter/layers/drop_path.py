import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_segmenter")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch of a sample.

    In training, each sample's input is zeroed with probability `rate` and
    the kept samples are scaled by `1 / (1 - rate)`, so the expectation is
    unchanged (Huang et al., 2016). At inference it is the identity.

    Args:
        rate: float, probability of dropping a sample's branch. Defaults to 0.
        seed: int or None, seed of the random generator.

    Call arguments:
        inputs: tensor `(batch, ...)`, one sample's residual branch per row.
        training: bool, drop branches (training) or return `inputs` as they
            are (inference). Defaults to False.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        # float32 draws: bfloat16 has 128 uniform values in [0, 1), and with them
        # rate 0.1 dropped 10.16 % of the samples.
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
        mask = ops.cast(noise < keep, inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
