"""The pieces of a training run, made from its resolved `RunConfig`.

The model, optimizer and loss, the data (each split scanned once), the
validation and preview functions, and the run folder: `run.train` (the
`model.fit` path) and `loop.train_custom_loop` (multi-worker) both build
their run from these.
"""

import os
import typing

import keras
import numpy as np
import tensorflow as tf

import keras_segmenter as ks
from keras_segmenter import optimizers
from keras_segmenter.data import eval_pairs, open_split, train_batches
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write, remove_temporary_files
from keras_segmenter.layers.normalization import denormalize_images
from keras_segmenter.losses import SegmentationCrossEntropy, median_frequency_weights
from keras_segmenter.training import callbacks as cb
from keras_segmenter.visualization import as_palette, colorize

# ---------------------------------------------------------------- model


def _with_dtype(model, dtype):
    """A copy of a `Segmenter` with another dtype policy and the same weights."""
    backbone_config = model.backbone.get_config()
    backbone_config["dtype"] = dtype
    config = model.get_config()
    backbone = ks.ViTBackbone.from_config(backbone_config)
    config.update(backbone=backbone, preprocessor=model.preprocessor, dtype=dtype)
    clone = ks.Segmenter(**config)
    clone.set_weights(model.get_weights())
    return clone


def build_model(config, num_classes):
    """The Segmenter for `config`: `--init`, or `--model` (+ `--backbone-weights`)."""
    dtype = None if config.precision == "float32" else config.precision
    if config.init:
        if config.init.endswith(".keras"):
            from keras_segmenter.prediction import load_model

            model = load_model(config.init)
            if dtype is not None:
                model = _with_dtype(model, dtype)
        else:
            from keras_segmenter.convert import load_official

            model = load_official(config.init, dtype=dtype)
        if getattr(model, "num_classes", num_classes) != num_classes:
            raise UserError(
                f"--init {config.init}: the model has {model.num_classes} classes, "
                f"--dataset {config.dataset} has {num_classes}."
            )
        return model
    model = ks.build_segmenter(
        config.model,
        num_classes,
        image_size=config.crop_size,
        dropout=config.dropout,
        drop_path_rate=config.drop_path_rate,
        decoder_dropout=config.decoder_dropout,
        dtype=dtype,
    )
    if config.backbone_weights:
        from keras_segmenter.convert import load_backbone_weights

        load_backbone_weights(model.backbone, config.backbone_weights)
    return model


def make_optimizer(config):
    """`optimizers.make_optimizer` with the run's recipe."""
    fields = ("optimizer", "lr", "iterations", "end_lr", "poly_power", "weight_decay")
    return optimizers.make_optimizer(
        **{name: getattr(config, name) for name in fields},
        momentum=config.momentum,
        nesterov=config.nesterov,
    )


def make_loss(config, info, data=None):
    """The cross-entropy ignoring `info.ignore_index`, with `--class-weights` computed
    from the masks of `data.train` (read in full through the evaluation pipeline)."""
    weights = None
    if config.class_weights == "median_frequency":
        masks = (mask.numpy() for _, mask in eval_pairs(data.train, "vit"))
        weights = median_frequency_weights(masks, info.num_classes, info.ignore_index)
    return SegmentationCrossEntropy(ignore_index=info.ignore_index, class_weights=weights)


# ---------------------------------------------------------------- data


def check_batch_size(config, strategy):
    """The global batch must split evenly over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(
            f"--batch-size {config.batch_size} must be divisible by the {replicas} replicas."
        )


def check_resolved(config):
    """Raises unless `config.resolve()` ran: the training calls take a settled config."""
    if config.info is None:
        raise ValueError("Expected a resolved RunConfig: call `config.resolve()` first.")


class RunData(typing.NamedTuple):
    """The run's data: its train and val splits, each scanned once (`data.DataSplit`)."""

    train: object
    val: object


def open_data(config):
    """Scans the run's train and val splits, once, with the dataset's `config.info`."""
    kwargs = dict(info=config.info, max_pixels=config.max_pixels)
    return RunData(
        *(
            open_split(config.dataset, config.data_dir, split, **kwargs)
            for split in ("train", "val")
        )
    )


def validation_window(config, info):
    """Sliding window = the training crop (paper 4.2); stride scaled like the dataset's official
    one (see `inference.default_window`)."""
    from keras_segmenter.inference import default_window

    reference = getattr(info, "window_size", None), getattr(info, "window_stride", None)
    return default_window(
        window_size=config.window_size or config.crop_size,
        window_stride=config.window_stride or None,
        reference=reference if all(reference) else None,
    )


def make_train_dataset(config, data, normalization, batch_size, seed, start=0):
    """The training batches of `data.train`; `start` batches already trained are skipped (resume)."""
    return train_batches(
        data.train,
        batch_size=batch_size,
        crop_size=config.crop_size,
        normalization=normalization,
        seed=seed,
        repeat=True,
        start=start * batch_size,
    )


# ---------------------------------------------------------------- validation


def make_evaluate_fn(
    dataset, num_classes, ignore_index, window_size, window_stride, max_images=None
):
    """`evaluate(model) -> {"mIoU", "aAcc", "mAcc", "IoU", ...}` over `dataset`.

    `keras_segmenter.evaluation.evaluate`, the loop of `evaluate.py`, on
    unbatched `(image (H, W, 3), mask (H, W))` at the images' own size:
    one scale, sliding windows as in the paper, no object sizes, silent.
    """
    from keras_segmenter.evaluation import evaluate

    def evaluate_model(model):
        return evaluate(
            model,
            dataset,
            num_classes=num_classes,
            ignore_index=ignore_index,
            window_size=window_size,
            window_stride=window_stride,
            base_size=False,
            object_sizes=False,
            limit=max_images,
            verbose=0,
        )

    return evaluate_model


def make_validation(config, info, eval_ds, normalization=None, verbose=True):
    """The `Validation` callback: mIoU on `eval_ds` every `--val-every` iterations, logged to
    TensorBoard when it is installed, with image previews when `normalization` is given."""
    steps = config.checkpoint_every
    window, stride = validation_window(config, info)
    log_dir = os.path.join(config.output_dir, "logs", "validation")
    preview = normalization is not None and config.preview_images
    return cb.Validation(
        make_evaluate_fn(
            eval_ds, info.num_classes, info.ignore_index, window, stride, config.val_images
        ),
        every=config.val_every // steps,
        last_epoch=config.iterations // steps,
        log_dir=log_dir if tensorboard_available() else None,
        preview_fn=make_preview_fn(
            eval_ds, normalization, info.palette, info.ignore_index, config.preview_images
        )
        if preview
        else None,
        verbose=verbose,
    )


def make_preview_fn(dataset, normalization, palette, ignore_index, count=3):
    """Panels `image | truth | prediction` (uint8) of the first `count` images."""
    samples = [(img.numpy(), m.numpy()) for img, m in dataset.take(count)]
    colours = np.concatenate([as_palette(palette), [[0, 0, 0]]])  # ignored pixels: black

    def paint(class_map):
        return colorize(np.where(class_map == ignore_index, len(colours) - 1, class_map), colours)

    def preview(model):
        panels = []
        for image, mask in samples:
            pred = np.argmax(np.asarray(model(image[None], training=False))[0], axis=-1)
            rgb = denormalize_images(image, normalization)
            panels.append(np.concatenate([rgb, paint(mask), paint(pred)], axis=1))
        height = max(p.shape[0] for p in panels)
        width = max(p.shape[1] for p in panels)
        return np.stack(
            [np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0))) for p in panels]
        )

    return preview


# ---------------------------------------------------------------- outputs


def tensorboard_available():
    """TensorBoard logs need the `tensorboard` package (not a dependency of tensorflow-cpu)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if not getattr(tensorboard_available, "warned", False):
            print(
                "Note: `pip install tensorboard` to get TensorBoard logs; writing history.csv only."
            )
            tensorboard_available.warned = True
        return False
    return True


def save_model_atomically(model, path):
    return atomic_write(path, model.save)


def seed_everything(config):
    """Seeds Python, NumPy, TF and Keras; with `config.deterministic`, TF ops too."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def prepare_output_dir(config):
    """Creates the run folder and writes `config.json` (a resumed run keeps its own).

    Removes the temporary files of writes a killed run left behind. (An
    existing run in the folder was refused by `RunConfig.resolve`.)
    """
    checkpoints = os.path.join(config.output_dir, "checkpoints")
    os.makedirs(config.output_dir, exist_ok=True)
    for path in remove_temporary_files(config.output_dir, checkpoints):
        print(f"Removed {path}, left by an interrupted write.")
    if not config.resume:
        config.save(os.path.join(config.output_dir, "config.json"))
    return checkpoints
