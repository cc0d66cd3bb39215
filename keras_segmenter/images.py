"""Image files in and out: any photo as uint8 RGB, class maps as PNGs.

    from keras_segmenter.images import load_image, save_class_map

    image = load_image("photo.jpg")  # uint8 (H, W, 3), EXIF orientation applied
    save_class_map("photo_classes.png", class_map, num_classes=150)

Used by `predict` (the command and the function) and the notebooks; no
TensorFlow here.
"""

import os
import pathlib

import numpy as np
from PIL import Image, ImageOps

from keras_segmenter.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file that could not be opened or decoded."""


def to_rgb_array(image):
    """A PIL image of any mode as a uint8 RGB array `(H, W, 3)`.

    16-bit and 32-bit integer images ("I;16", "I", as PIL opens 16-bit
    PNGs) are scaled from [0, 65535] to [0, 255]; palette, grayscale, RGBA
    (alpha dropped) and CMYK images go through PIL's RGB conversion.

    Args:
        image: `PIL.Image.Image`.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P":
        # Palette images may carry transparency; going through RGBA keeps PIL quiet.
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path, name=None):
    """Reads an image file as a uint8 RGB array, EXIF orientation applied.

    Args:
        path: str or path-like, or a seekable binary file object.
        name: str, what error messages call the file. Defaults to `path`.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        ImageReadError: the file is missing, not an image, or truncated; the
            message names the file.
    """
    name = os.fspath(path) if name is None else name
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            array = to_rgb_array(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"Cannot read image {name!r}: {error}") from error
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"Cannot read image {name!r}: it has no pixels ({array.shape})")
    return array


def as_rgb_array(image):
    """A file path, PIL image or uint8 array as a uint8 RGB array `(H, W, 3)`.

    Arrays must be uint8 RGB `(H, W, 3)`; uint8 grayscale `(H, W)` is
    repeated over the three channels.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(ImageOps.exif_transpose(image))
    array = np.asarray(image)
    if array.dtype == np.uint8 and array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            "`image` must be a file path, a PIL image or a uint8 RGB array (height, width, 3) "
            f"with values in [0, 255]. Received: dtype={array.dtype}, shape={array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"`image` has no pixels. Received: shape={array.shape}")
    return array


def save_class_map(path, class_map, num_classes):
    """Writes a class map as a PNG: mode "L" up to 256 classes, else 16-bit "I;16"."""
    atomic_write(path, class_map_image(class_map, num_classes).save)


def class_map_image(class_map, num_classes):
    """A class map as a PIL image: mode "L" up to 256 classes, else 16-bit "I;16"."""
    class_map = np.asarray(class_map)
    if num_classes <= 256:
        image = Image.fromarray(class_map.astype(np.uint8))
    elif num_classes <= 65536:
        image = Image.fromarray(class_map.astype(np.uint16))
    else:
        raise ValueError(
            f"A PNG class map holds at most 65536 classes. Received: num_classes={num_classes}"
        )
    return image


def find_images(inputs):
    """Expands files and folders into a list of image paths.

    Folders contribute their files with an image suffix (not recursively),
    sorted by name; files are taken as given whatever their suffix.

    Returns:
        `(paths, errors)`: a list of paths and a list of messages for
        inputs that do not exist or folders without images.
    """
    paths, errors = [], []
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                errors.append(f"{name}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            errors.append(f"{name}: no such file or folder")
    return paths, errors
