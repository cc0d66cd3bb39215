"""The model's float32 logits for a batch of normalized windows, on any Keras backend."""

import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_segmenter.inference.torch_compile import compiled_forward
from keras_segmenter.layers.backend import TENSORFLOW

# Off TensorFlow, per Segmenter: a plain functional model over the same layers and weights,
# whose compiled `predict_on_batch` takes normalized images (a Segmenter's own `predict`
# applies its preprocessor first).
_FORWARD = weakref.WeakKeyDictionary()


def model_logits(model, images):
    """float32 logits of a batch of normalized `images` (a TensorFlow tensor).

    Off TensorFlow the model runs on its backend through `tf.numpy_function`
    (`predict_on_batch`: compiled once a shape on JAX, no autograd on PyTorch;
    Inductor's graph after `torch_compile.compile_for_torch(model)`), so the
    TensorFlow windowing works for every backend; such a graph does not export.
    """
    if TENSORFLOW:
        return tf.cast(model(images, training=False), tf.float32)
    forward = compiled_forward(model) or _forward(model)
    shape = images.shape[:-1].concatenate([model.output_shape[-1]])
    return backend_call(forward.predict_on_batch, images, "float32", shape)


def backend_call(function, images, dtype, shape):
    """`function` (a batch to a tensor of the Keras backend) called from TensorFlow through
    `tf.numpy_function`: its result as a `dtype` tensor of static `shape`."""

    def run(batch):
        return np.asarray(keras.ops.convert_to_numpy(function(batch)), dtype)

    found = tf.numpy_function(run, [images], tf.as_dtype(dtype), stateful=False)
    found.set_shape(shape)
    return found


def _forward(model):
    if getattr(model, "preprocessor", None) is None:
        return model
    if model not in _FORWARD:
        _FORWARD[model] = keras.Model(model.inputs, model.outputs, name=f"{model.name}_forward")
    return _FORWARD[model]
