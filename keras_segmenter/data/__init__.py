"""Datasets and the paper's (MMSegmentation) training pipeline in tf.data.

Example:

>>> from keras_segmenter.data import SAMPLE_DIR, eval_dataset
>>> image, mask = next(iter(eval_dataset("camvid", SAMPLE_DIR, split="val")))
>>> image.shape, mask.dtype.name
(TensorShape([180, 240, 3]), 'int32')
"""

import os

from keras_segmenter.data.dataset_info import (
    DATASETS,
    DatasetInfo,
    get_dataset_info,
)
from keras_segmenter.data.pipeline import (
    DataSplit,
    count_pairs,
    eval_dataset,
    eval_pairs,
    open_split,
    train_batches,
    train_dataset,
)
from keras_segmenter.data.sources import list_pairs, prepare_ade20k

# A real CamVid sample (SegNet layout) shipped with the package.
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample", "camvid")
