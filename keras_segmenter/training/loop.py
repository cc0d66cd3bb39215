"""A distributed custom training loop for `--strategy multi_worker`.

Keras 3 `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so multi-worker training runs this loop:
`strategy.run` of a `tf.function` train step over
`distribute_datasets_from_function`. It reuses everything `model.fit`
training uses: the model, `SegmentationCrossEntropy` (exact over the global
batch), SGD with the poly schedule, the checkpoints (same files, so a run
can be resumed by either path), validation, CSV and TensorBoard logs.

Every worker runs the same code; worker 0 (the chief) writes the
checkpoints, logs and final model, the others take part in the collectives
and discard their copies. The training mIoU is computed from the confusion
matrix summed over every replica of every worker. A resumed run continues
each worker's input stream where the checkpoint left it.
"""

import hashlib
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_segmenter.data import eval_pairs
from keras_segmenter.metrics import confusion_matrix, summarize_confusion
from keras_segmenter.progress import fit_verbosity
from keras_segmenter.training import callbacks as cb
from keras_segmenter.training import factories
from keras_segmenter.training.checkpoints import resume, save_checkpoint
from keras_segmenter.training.strategies import worker_info


def weights_digest(model):
    """SHA-256 of all weights, to compare replicas and workers."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def train_custom_loop(
    config, strategy, data=None, make_train_ds=None, eval_ds=None, info=None, verbose=True
):
    """Trains as `run.train` does, with a custom loop; returns `(model, summary)`.

    Args:
        config: a `RunConfig` after `resolve()`.
        strategy: a `tf.distribute` strategy (any; built for multi-worker).
        data: the run's `factories.RunData` (scanned once); opened here if not given.
        make_train_ds: optional `fn(batch_size, seed, start) -> dataset` of
            `(images, masks)` batches for one worker, without its first
            `start` batches (tests pass synthetic data); default
            `factories.make_train_dataset` of `data`.
        eval_ds, info: as in `run.train`.
    """
    factories.check_resolved(config)
    factories.seed_everything(config)
    task, num_workers = worker_info()
    chief = task == 0
    info = info or config.info
    if data is None and (make_train_ds is None or eval_ds is None):
        data = factories.open_data(config)
    num_classes, ignore_index = info.num_classes, info.ignore_index
    factories.check_batch_size(config, strategy)
    checkpoint_dir = os.path.join(config.output_dir, "checkpoints")
    if chief:
        factories.prepare_output_dir(config)

    with strategy.scope():
        model = factories.build_model(config, num_classes)
        optimizer = factories.make_optimizer(config)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss_fn = factories.make_loss(config, info, data)
        # Compiled (never fitted) so the checkpoints have model.fit's layout.
        model.compile(optimizer=optimizer, loss=loss_fn)
        optimizer.build(model.trainable_variables)
        report = print if chief and verbose else (lambda _line: None)
        start = resume(model, checkpoint_dir, report) if config.resume else 0

    if make_train_ds is None:

        def make_train_ds(batch_size, seed, start):
            return factories.make_train_dataset(
                config, data, model.normalization, batch_size, seed, start
            )

    def dataset_fn(context):
        batch = context.get_per_replica_batch_size(config.batch_size)
        # A different stream per worker, continued where the checkpoint left it
        # (each step takes one batch per local replica).
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return make_train_ds(
            batch, config.seed + 1000 * context.input_pipeline_id, start * local_replicas
        )

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def train_step(iterator):
        def step(images, masks):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = loss_fn(masks, logits)  # local sum / global valid count
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
            return loss, tf.cast(
                confusion_matrix(masks, predictions, num_classes, ignore_index), tf.float64
            )

        images, masks = next(iterator)
        loss, confusion = strategy.run(step, args=(images, masks))
        # Summed over all replicas of all workers: the global loss and confusion matrix.
        return tuple(
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for value in (loss, confusion)
        )

    steps = config.checkpoint_every
    log_callbacks = []
    validation = None
    if chief:
        if eval_ds is None:
            eval_ds = eval_pairs(data.val, model.normalization)
        validation = factories.make_validation(config, info, eval_ds, verbose=verbose)
        log_callbacks = [
            cb.LearningRateLogger(),
            validation,
            keras.callbacks.CSVLogger(os.path.join(config.output_dir, "history.csv"), append=True),
        ]
    callback_list = keras.callbacks.CallbackList(log_callbacks, model=model)
    if chief:
        cb.trim_history(os.path.join(config.output_dir, "history.csv"), start // steps)
    callback_list.on_train_begin()

    iteration = start
    begin = time.time()
    last_loss = math.nan
    while iteration < config.iterations:
        epoch = iteration // steps
        confusion = np.zeros((num_classes, num_classes))
        total, count = 0.0, 0
        progbar = keras.utils.Progbar(steps, verbose=fit_verbosity()) if chief and verbose else None
        for _ in range(steps):
            loss, step_confusion = train_step(iterator)
            loss = float(loss)
            confusion += step_confusion.numpy()
            iteration += 1
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"Loss is {loss} at iteration {iteration}; stopping without a checkpoint "
                    f"(the last good one is in {checkpoint_dir})."
                )
            total, count = total + loss, count + 1
            if progbar is not None:
                progbar.update(count, [("loss", loss)])
        last_loss = total / count
        logs = {"loss": last_loss, "mIoU": summarize_confusion(confusion)["mIoU"]}
        callback_list.on_epoch_end(
            epoch, logs
        )  # validation and history.csv row first, as in run.train
        save_checkpoint(
            model,
            checkpoint_dir,
            iteration,
            epoch=epoch + 1,
            keep=config.keep_checkpoints,
            write=chief,
        )

    callback_list.on_train_end()
    model_path = None
    if chief:
        model_path = factories.save_model_atomically(
            model, os.path.join(config.output_dir, "model.keras")
        )
    summary = {
        "worker": task,
        "num_workers": num_workers,
        "iteration": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        "final_loss": last_loss,
        "weights_sha256": weights_digest(model),
        "model": model_path,
        "validation": validation.history if validation else [],
        "seconds": time.time() - begin,
    }
    return model, summary
