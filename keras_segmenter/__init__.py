"""Segmenter (Strudel et al., ICCV 2021) in Keras 3: the model on TensorFlow, JAX and PyTorch."""

# First, before TensorFlow is imported: the command-line entry points set it up (keras_segmenter.cli).
from keras_segmenter import (
    cli,  # noqa: F401
    layers,
)
from keras_segmenter.layers.normalization import NORMALIZATIONS, ImageNormalization
from keras_segmenter.losses import SegmentationCrossEntropy
from keras_segmenter.metrics import MeanIoU
from keras_segmenter.models.attention import encoder_attention_maps
from keras_segmenter.models.presets import (
    BACKBONE_PRESETS,
    MODEL_PRESETS,
    SegmenterB8,
    SegmenterB16,
    SegmenterB16Distilled,
    SegmenterB32,
    SegmenterL16,
    SegmenterS16,
    SegmenterS32,
    SegmenterTi16,
    build_segmenter,
)
from keras_segmenter.models.pretrained import (
    IMAGENET_PRESETS,
    SEGMENTER_PRESETS,
    PresetError,
    list_presets,
)
from keras_segmenter.models.segmenter import Segmenter
from keras_segmenter.models.segmenter_preprocessor import SegmenterPreprocessor
from keras_segmenter.models.vit_backbone import ViTBackbone
from keras_segmenter.version import __version__  # noqa: F401
