"""The one switch between the layers' TensorFlow kernels and their `keras.ops` form.

On the TensorFlow backend the layers run hand-written TensorFlow where it is
faster than `keras.ops` (the attention's and the 16-bit GELU's written-out
gradients, 16-bit Philox dropout draws) or where `keras.ops` cannot go
(`tf.image.resize` to a size known only when the graph runs). On JAX and
PyTorch they run the same math in `keras.ops`. The parity tests hold both
forms to the official logits (tests/test_backends.py runs them per backend).
"""

import keras

TENSORFLOW = keras.config.backend() == "tensorflow"
