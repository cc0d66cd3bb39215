"""The one switch between the layers' TensorFlow kernels and their `keras.ops` form.

On the TensorFlow backend the layers run hand-written TensorFlow where it is
faster than `keras.ops` (the attention's and the 16-bit GELU's written-out
gradients, 16-bit Philox dropout draws) or where `keras.ops` cannot go
(`tf.image.resize` to a size known only when the graph runs). On JAX and
PyTorch they run the same math in `keras.ops`; on PyTorch the attention
without dropout is `keras.ops.dot_product_attention`, torch's fused
scaled_dot_product_attention (flash attention on CPU; JAX's is the same
products and softmax as written out, so JAX keeps them). The parity tests hold both
forms to the official logits (tests/test_backends.py runs them per backend).

A second switch, `fusing()`, holds while a graph is recorded for a fusing
compiler (`keras_segmenter.models.torch_train_step`) and takes precedence
over the first: the upsampling, the loss and the dropout masks then take
`keras.ops` forms that Inductor fuses into the kernels that read them, and
that would write full-size tensors more if run eagerly.
"""

import contextlib

import keras

TENSORFLOW = keras.config.backend() == "tensorflow"
TORCH = keras.config.backend() == "torch"

_fusing = False


@contextlib.contextmanager
def fusing():
    """Inside, `is_fusing()` is True: the code being recorded is for a fusing compiler."""
    global _fusing
    outer, _fusing = _fusing, True
    try:
        yield
    finally:
        _fusing = outer


def is_fusing():
    """True inside `fusing()`."""
    return _fusing
