"""TFDS builders of the paper's manually downloaded datasets.

Importing this package registers the TFDS builders `ade20k` (150 classes,
ADEChallengeData2016), `pascal_context` (60 classes) and `camvid` (SegNet
layout); Cityscapes uses TFDS' own `cityscapes` builder, whose `labelIds`
the pipeline maps to train ids. `train_dataset("tfds:NAME", data_dir)` reads
the prepared TFRecords.

Example:

>>> from keras_segmenter.data import tfds as ks_tfds
>>> ks_tfds.DATASETS
('ade20k', 'pascal_context', 'camvid', 'cityscapes')
"""

from keras_segmenter.data.tfds.ade20k import Ade20k
from keras_segmenter.data.tfds.camvid import Camvid
from keras_segmenter.data.tfds.pascal_context import PascalContext
from keras_segmenter.data.tfds.reader import DATASETS, builder, prepare, read

__all__ = ["Ade20k", "Camvid", "PascalContext", "DATASETS", "builder", "prepare", "read"]
