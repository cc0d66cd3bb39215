"""Weights from elsewhere: official Segmenter runs and ImageNet ViTs."""

from keras_segmenter.convert.imagenet import (
    backbone_from_imagenet_vit,
    load_backbone_weights,
    read_imagenet_vit,
)
from keras_segmenter.convert.official import load_official, read_variant, segmenter_from_variant
from keras_segmenter.convert.torch_checkpoint import CheckpointError, read_torch_checkpoint
