"""Image files in and out: any photo as uint8 RGB, class maps as PNGs.

    from keras_segmenter.images import load_image, save_class_map

    image = load_image("photo.jpg")  # uint8 (H, W, 3), EXIF orientation applied
    save_class_map("photo_classes.png", class_map, num_classes=150)

Used by `predict` (the command and the function) and the notebooks; no
TensorFlow here.
"""

import os
import pathlib
import stat

import numpy as np
from PIL import Image, ImageOps

from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Images larger than this are refused from their header, before decoding: 50 MP
# covers a 48 MP phone photo; `predict --max-pixels` raises it.
MAX_PIXELS = 50_000_000


# What a path that is not a regular file is, for messages.
FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class ImageReadError(UserError):
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


def load_image(path, name=None, max_pixels=MAX_PIXELS):
    """Reads an image file as a uint8 RGB array, EXIF orientation applied.

    Args:
        path: str or path-like, or a seekable binary file object.
        name: str, what error messages call the file. Defaults to `path`.
        max_pixels: int, refuse an image whose header declares more pixels
            (height x width), before it is decoded. Defaults to `MAX_PIXELS`.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        ImageReadError: the file is missing, not a regular file, not an
            image, truncated or larger than `max_pixels`; the message names
            the file.
    """
    name = os.fspath(path) if name is None else name
    kind = non_regular_kind(path) if isinstance(path, (str, os.PathLike)) else None
    if kind:
        raise ImageReadError(f"{name} is {kind}, not an image file")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit, checked below, replaces Pillow's
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{name}: its header declares {width}x{height} = "
                    f"{width * height} pixels, more than the limit of {max_pixels} "
                    "(--max-pixels); raise it to read this image"
                )
            image = ImageOps.exif_transpose(image)
            array = to_rgb_array(image)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"Cannot read image {name!r}: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"Cannot read image {name!r}: it has no pixels ({array.shape})")
    return array


def non_regular_kind(path):
    """What `path` is when it exists but is not a regular file ("a FIFO (named pipe)",
    "a character device", "a broken symlink", ...); None for a regular file or nothing.

    Reading a FIFO or a device (`/dev/zero`) named like an image would block or
    never end, so readers of data refuse or skip what this names.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symlink" if os.path.islink(path) else None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


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
        raise UserError(
            "`image` must be a file path, a PIL image or a uint8 RGB array (height, width, 3) "
            f"with values in [0, 255]. Received: dtype={array.dtype}, shape={array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"`image` has no pixels. Received: shape={array.shape}")
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
        raise UserError(
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
            named = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            found = [p for p in named if not non_regular_kind(p)]
            errors += [
                f"{p} is {non_regular_kind(p)}, not an image file" for p in named if p not in found
            ]
            if not found:
                errors.append(f"{name}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif non_regular_kind(path):
            errors.append(f"{name} is {non_regular_kind(path)}, not an image file")
        else:
            errors.append(f"{name}: no such file or folder")
    return paths, errors
