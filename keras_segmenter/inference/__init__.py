"""Sliding-window and multi-scale inference, as in the Segmenter paper.

Strudel, Garcia, Laptev, Schmid, "Segmenter: Transformer for Semantic
Segmentation", ICCV 2021, section 4.2 "Inference": the image is cut into
windows of the training crop size, window logits are averaged where windows
overlap, and the averaged logits are resized back to the image size. The
code follows the official `segm.model.utils.inference` step by step (same
anchors, same upscaling of small images, softmax after the resize) and is
written with TensorFlow ops only, so it runs inside a `tf.function` for
images of any height and width. A model on the JAX or PyTorch backend runs on
its own backend, called from those TensorFlow loops (`model_call.model_logits`).

- `segment` (`segment.py`): the one entry point, one normalized image to its
  class map (and, with `probabilities=tf.float32`, its probabilities: the
  official `inference()` output; `scales=OFFICIAL_SCALES, flip=True` is the
  paper's multi-scale inference); `make_segment_function` is its one traced
  factory. `sliding_window_logits` returns the window-averaged logits map
  instead, for tests and analysis.
- `windows.py`: the window rule (`default_window`), anchors, upscaling.
- `band_merge.py`: `BandMerge`, the band-by-band merge of one view's windows;
  `views.py` joins its output or merges several views.
- `class_map.py`: a batch's class map without its `(B, H, W, K)` logits
  (`model_classes`, `upsampled_classes`: the upsample and argmax by bands of
  rows, exactly the argmax of the model's logits), for whole-image inference.
- `predictor.py`: uint8 RGB in (`segment_image`, `make_predictor`), as
  `predict` and the SavedModel export run it.

Evaluating over a dataset is `keras_segmenter.evaluation`.
"""

from keras_segmenter.inference.model_call import model_logits
from keras_segmenter.inference.predictor import make_predictor, segment_image
from keras_segmenter.inference.segment import (
    make_segment_function,
    segment,
    sliding_window_logits,
)
from keras_segmenter.inference.windows import (
    CALL_LOGITS_BYTES,
    MAX_WINDOWS_PER_CALL,
    OFFICIAL_SCALES,
    check_window,
    default_window,
    num_classes_of,
    rescaled_shape,
    upscaled_shape,
    window_anchors,
    windows_per_call,
)
