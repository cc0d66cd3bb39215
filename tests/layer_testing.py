"""A shared check for every layer: build, symbolic and eager calls, config, .keras round trip."""

import keras
import numpy as np


def check_layer(layer, inputs, tmp_path, expected_shape=None):
    """Calls `layer` on `inputs` (a list of arrays) every way a user would.

    Checks that the symbolic output shape matches the eager one, that
    `from_config(get_config())` rebuilds an equivalent layer, and that a
    model wrapping the layer survives a `.keras` save and load with equal
    outputs. Returns the eager output.
    """
    symbolic = [
        keras.Input(shape=(None,) * (x.ndim - 2) + x.shape[-1:], dtype=x.dtype) for x in inputs
    ]
    outputs = layer(*symbolic)
    model = keras.Model(symbolic, outputs)
    eager = np.asarray(model(inputs))
    assert len(outputs.shape) == eager.ndim
    for static, actual in zip(outputs.shape, eager.shape):
        assert static is None or static == actual
    if expected_shape is not None:
        assert eager.shape == tuple(expected_shape)

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config

    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(inputs)), eager, rtol=1e-6, atol=1e-6)
    return eager
