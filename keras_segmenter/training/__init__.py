"""Training pieces shared by `training/fit.py`: schedule, loss, run config,
strategies, callbacks, checkpoints and a distributed custom training loop."""

from keras_segmenter.training.checkpoints import (
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from keras_segmenter.training.config import DATASET_DEFAULTS, RunConfig
from keras_segmenter.training.losses import SegmentationCrossEntropy
from keras_segmenter.training.schedules import poly_learning_rate, poly_schedule
