"""Training pieces shared by `training/fit.py`: the run config (`config`),
the factories of a run's model, optimizer, loss, data and validation
(`factories`), the `model.fit` call (`run`), strategies, callbacks,
checkpoints and a distributed custom training loop (`loop`). The loss, the
optimizer and the schedule live beside the model (`keras_segmenter.losses`,
`.optimizers`, `.schedules`: `Segmenter.compile()` uses them without importing
this package) and are re-exported here."""

from keras_segmenter.losses import SegmentationCrossEntropy
from keras_segmenter.schedules import poly_learning_rate, poly_schedule
from keras_segmenter.training.checkpoints import (
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from keras_segmenter.training.config import DATASET_DEFAULTS, RunConfig
