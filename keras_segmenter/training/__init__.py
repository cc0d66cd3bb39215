"""Training pieces shared by `training/fit.py`: schedule, loss, run config,
strategies, callbacks, checkpoints and a distributed custom training loop."""

from keras_segmenter.losses import SegmentationCrossEntropy
from keras_segmenter.schedules import poly_learning_rate, poly_schedule
from keras_segmenter.training.checkpoints import (
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from keras_segmenter.training.config import DATASET_DEFAULTS, RunConfig
