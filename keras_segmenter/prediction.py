"""What `predict` does with one image, shared by the command and its Beam pipeline.

`load_model` reads the `.keras` file, `prediction_step` turns one uint8
image into the files the command writes (`keras_segmenter.predict` runs it
in a loop, `keras_segmenter.beam` on a pipeline's workers).
"""

import functools

import numpy as np

from keras_segmenter.errors import UserError, check_file
from keras_segmenter.images import class_map_image


def load_model(path):
    """Loads a `.keras` Segmenter for inference (registers keras_segmenter's layers first).

    Not compiled: inference needs no optimizer, and restoring the training
    compile of a model whose `compile()` is custom only earns a warning.

    Raises:
        UserError: `path` is missing, a folder, not a `.keras` archive
            (truncated, another kind of file), not loadable, or a model that
            is not a `Segmenter`; the message names the file.
    """
    import zipfile

    import keras

    from keras_segmenter.models.segmenter import Segmenter

    check_file(path, "a .keras model file")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a .keras model: not a zip archive (truncated, or another kind of file)"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path}: cannot load it as a .keras model ({reason})") from None
    if not isinstance(model, Segmenter):
        raise UserError(
            f"{path} holds a {type(model).__name__}, not a Segmenter; expected a model saved by "
            "fit, convert or `Segmenter.save`"
        )
    return model


def prediction_step(model, args):
    """The command's work on one image, alone or in a Beam pipeline (`keras_segmenter.beam`).

    Args:
        model: the loaded Segmenter.
        args: the parsed command line (`--dataset`, the window flags,
            `--probabilities`, `--alpha`).

    Returns:
        `step(image) -> {suffix: write}`: for a uint8 RGB image, the files
        to write in order (`"_classes.png"`, `"_probabilities.npy"` with
        `--probabilities`, `"_overlay.png"`), each as `write(target)` taking
        a path or a binary file object.
    """
    from keras_segmenter import visualization
    from keras_segmenter.inference import make_predictor, num_classes_of

    num_classes = num_classes_of(model)
    class_names, palette = class_info(num_classes, args.dataset)
    predictor = make_predictor(
        model,
        args.window_size,
        args.window_stride,
        args.whole,
        args.batch_size,
        args.probabilities,
    )

    def step(image):
        outputs = predictor(image)
        class_map = (outputs[0] if args.probabilities else outputs).numpy()
        classes = class_map_image(class_map, num_classes)
        files = {"_classes.png": functools.partial(classes.save, format="PNG")}
        if args.probabilities:
            probs = outputs[1].numpy()
            files["_probabilities.npy"] = lambda target: np.save(target, probs)
        blended = visualization.overlay(image, class_map, palette, args.alpha)
        legend = visualization.present_classes(class_map)
        drawn = visualization.draw_legend(blended, legend, class_names, palette)
        files["_overlay.png"] = functools.partial(drawn.save, format="PNG")
        return files

    return step


def class_info(num_classes, dataset):
    """Class names and palette for `--dataset` (or generic ones), checked against the model."""
    from keras_segmenter import visualization

    if dataset is None:
        return [f"class {k}" for k in range(num_classes)], visualization.default_palette(
            num_classes
        )
    from keras_segmenter.data.dataset_info import get_dataset_info

    info = get_dataset_info(dataset)
    if info.num_classes != num_classes:
        raise UserError(
            f"--dataset {dataset} has {info.num_classes} classes but the model predicts "
            f"{num_classes}. Received: --dataset {dataset}"
        )
    return list(info.class_names), visualization.as_palette(info.palette, num_classes)


def unique_stem(path, used):
    """`path.stem`, or `stem_2`, `stem_3`... when `used` holds it; added to `used`."""
    stem, count = path.stem, 1
    while stem in used:
        count += 1
        stem = f"{path.stem}_{count}"
    used.add(stem)
    return stem
