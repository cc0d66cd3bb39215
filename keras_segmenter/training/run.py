"""Training a Segmenter from a resolved `RunConfig`: `model.fit` on the run's pieces.

`training/fit.py` is the command line around `train(config)`; the pieces
(model, optimizer, loss, data, validation, run folder) are made in
`factories`. The multi-worker path (`--strategy multi_worker`) is
`loop.train_custom_loop`, built from the same factories.
"""

import math
import os
import time

import keras

from keras_segmenter.data import eval_pairs
from keras_segmenter.metrics import make_metric
from keras_segmenter.progress import ProgressLogger
from keras_segmenter.training import callbacks as cb
from keras_segmenter.training import factories
from keras_segmenter.training.checkpoints import resume
from keras_segmenter.training.strategies import make_strategy


def train(
    config,
    strategy=None,
    data=None,
    train_ds=None,
    eval_ds=None,
    info=None,
    extra_callbacks=(),
    verbose="auto",
):
    """Trains with `model.fit` as the resolved `config` says; returns `(model, summary)`.

    `config` is a `RunConfig` after `resolve()`; `data` its `factories.RunData`
    (`factories.open_data(config)`, scanned once; opened here if not given).
    `train_ds` / `eval_ds` / `info` replace the datasets built from `data`
    and `config.info` (tests pass synthetic ones): `train_ds` yields global
    batches `(images, masks)`, `eval_ds` unbatched full images; `info` needs
    `num_classes`, `ignore_index`, `palette`, `window_size`, `window_stride`.
    """
    factories.check_resolved(config)
    factories.seed_everything(config)
    strategy = strategy or make_strategy(config.strategy, config.cpu_devices)
    factories.check_batch_size(config, strategy)
    info = info or config.info
    num_classes = info.num_classes
    if data is None and (train_ds is None or eval_ds is None):
        data = factories.open_data(config)

    with strategy.scope():
        model = factories.build_model(config, num_classes)
        # After the model: a refused --init writes nothing.
        checkpoint_dir = factories.prepare_output_dir(config)
        model.compile(
            optimizer=factories.make_optimizer(config),
            loss=factories.make_loss(config, info, data),
            metrics=[make_metric(num_classes, info.ignore_index)],
        )
        start = resume(model, checkpoint_dir) if config.resume else 0
    # The same batches as an uninterrupted run from iteration `start` on.
    if train_ds is None:
        train_ds = factories.make_train_dataset(
            config, data, model.normalization, config.batch_size, config.seed, start
        )
    elif start:
        train_ds = train_ds.skip(start)
    if eval_ds is None:
        eval_ds = eval_pairs(data.val, model.normalization)

    steps = config.checkpoint_every
    epochs = config.iterations // steps
    history_path = os.path.join(config.output_dir, "history.csv")
    cb.trim_history(history_path, start // steps)
    log_dir = os.path.join(config.output_dir, "logs")
    validation = factories.make_validation(config, info, eval_ds, model.normalization)
    callbacks = [
        *extra_callbacks,
        cb.LearningRateLogger(),
        keras.callbacks.TerminateOnNaN(),
        validation,
        keras.callbacks.CSVLogger(history_path, append=True),
    ]
    if factories.tensorboard_available():
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir, write_graph=False, update_freq="epoch")
        )
    callbacks.append(ProgressLogger())  # after every callback that adds to the logs
    callbacks.append(cb.Checkpointer(checkpoint_dir, steps, keep=config.keep_checkpoints))  # last
    begin = time.time()
    history = (
        model.fit(
            train_ds,
            epochs=epochs,
            initial_epoch=start // steps,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # train_ds shuffles itself; Keras cannot shuffle a tf.data.Dataset
        )
        if start < config.iterations
        else None
    )
    seconds = time.time() - begin
    iteration = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    model_path = None
    if not model.stop_training or iteration >= config.iterations:
        model_path = factories.save_model_atomically(
            model, os.path.join(config.output_dir, "model.keras")
        )
    summary = {
        "iteration": iteration,
        "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        "model": model_path,
        "logs": log_dir,
        "history": history_path,
        "checkpoints": checkpoint_dir,
        "validation": validation.history,
        "seconds": seconds,
        "final_loss": history.history.get("loss", [math.nan])[-1]
        if history and history.history
        else math.nan,
    }
    return model, summary
