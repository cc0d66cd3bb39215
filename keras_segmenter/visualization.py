"""Colouring class maps: palettes, colour overlays and legends.

Small functions on NumPy arrays and PIL images, shared by the predict CLI and
by notebooks:

- `default_palette(num_classes)`: a deterministic palette for any number of
  classes.
- `colorize(class_map, palette)`: class indices to an RGB image.
- `overlay(image, class_map, palette, alpha)`: the colours blended over the
  photograph.
- `present_classes(class_map)`: the classes in a map, largest first.
- `draw_legend(image, class_ids, class_names, palette)`: the image with a
  legend panel (colour swatch and name per class) on its right, drawn with
  PIL only.
- `legend_patches(class_ids, class_names, palette)`: the same legend as
  matplotlib handles, for `ax.legend(handles=...)`.
"""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_segmenter.data.classes import bit_palette

OVERLAY_BAND_ROWS = 256


def default_palette(num_classes):
    """A deterministic palette: the Pascal VOC bit colour map.

    Class 0 is black; the next classes get saturated, well separated colours.
    Used when no dataset palette is known.

    Args:
        num_classes: int, number of colours.

    Returns:
        uint8 array `(num_classes, 3)`.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}"
        )
    return np.asarray(bit_palette(num_classes), np.uint8).reshape(num_classes, 3)


def as_palette(palette, num_classes=None):
    """Checks a palette and returns it as a uint8 array `(N, 3)`.

    Args:
        palette: sequence of `(r, g, b)` ints in [0, 255], or an array `(N, 3)`.
        num_classes: optional int; the palette must have at least this many
            colours.

    Returns:
        uint8 array `(N, 3)`.
    """
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise ValueError(
            f"`palette` must be a list of (r, g, b) triples. Received: palette with shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"`palette` colours must be ints in [0, 255]. Received: palette={palette!r}"
        )
    if num_classes is not None and len(array) < num_classes:
        raise ValueError(
            f"`palette` has {len(array)} colours but the model predicts {num_classes} classes. "
            f"Received: len(palette)={len(array)}"
        )
    return array.astype(np.uint8)


def _as_class_map(class_map):
    class_map = np.asarray(class_map)
    if class_map.ndim != 2 or not np.issubdtype(class_map.dtype, np.integer):
        raise ValueError(
            "`class_map` must be an integer array (height, width). "
            f"Received: dtype={class_map.dtype}, shape={class_map.shape}"
        )
    return class_map


def _as_rgb_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "`image` must be a uint8 RGB array (height, width, 3). "
            f"Received: dtype={image.dtype}, shape={image.shape}"
        )
    return image


def colorize(class_map, palette):
    """Paints each pixel of a class map with its class colour.

    Args:
        class_map: integer array `(H, W)` of class indices.
        palette: `(r, g, b)` per class (see `as_palette`).

    Returns:
        uint8 RGB array `(H, W, 3)`.

    Example:

    >>> colorize(np.array([[0, 1]]), [(0, 0, 0), (255, 0, 0)])[0, 1].tolist()
    [255, 0, 0]
    """
    class_map = _as_class_map(class_map)
    palette = as_palette(palette)
    if class_map.size and (class_map.min() < 0 or class_map.max() >= len(palette)):
        raise ValueError(
            f"`class_map` holds classes outside the palette's {len(palette)} colours. "
            f"Received: class_map range [{class_map.min()}, {class_map.max()}]"
        )
    return palette[class_map]


def overlay(image, class_map, palette, alpha=0.5):
    """Blends the class colours over an image.

    `(1 - alpha) * image + alpha * colorize(class_map, palette)`, rounded.

    Args:
        image: uint8 RGB array `(H, W, 3)` or a PIL image.
        class_map: integer array `(H, W)`.
        palette: `(r, g, b)` per class.
        alpha: float in [0, 1], opacity of the colours. Defaults to 0.5.

    Returns:
        uint8 RGB array `(H, W, 3)`.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = _as_rgb_image(image)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    class_map = _as_class_map(class_map)
    if class_map.shape != image.shape[:2]:
        raise ValueError(
            "`class_map` must have the image's height and width. "
            f"Received: image.shape={image.shape}, class_map.shape={class_map.shape}"
        )
    # Band by band: on a 12 MP photo, float32 copies of the whole image would take
    # 144 MB each (the predict command's peak memory is reached here).
    blended = np.empty_like(image)
    for top in range(0, image.shape[0], OVERLAY_BAND_ROWS):
        rows = slice(top, top + OVERLAY_BAND_ROWS)
        colours = colorize(class_map[rows], palette).astype(np.float32)
        band = (1.0 - alpha) * image[rows].astype(np.float32) + alpha * colours
        blended[rows] = np.clip(np.round(band), 0, 255)
    return blended


def present_classes(class_map, min_fraction=0.0):
    """Classes that occur in a class map, largest area first.

    Args:
        class_map: integer array `(H, W)`.
        min_fraction: float, leave out classes covering less than this
            fraction of the pixels. Defaults to 0 (all present classes).

    Returns:
        list of int class indices.
    """
    class_map = _as_class_map(class_map)
    ids, counts = np.unique(class_map, return_counts=True)
    keep = counts >= min_fraction * max(class_map.size, 1)
    order = np.argsort(-counts[keep], kind="stable")
    return [int(i) for i in ids[keep][order]]


def _check_legend_args(class_ids, class_names, palette):
    palette = as_palette(palette)
    for class_id in class_ids:
        if not 0 <= class_id < min(len(class_names), len(palette)):
            raise ValueError(
                f"Class {class_id} has no name or colour: {len(class_names)} names, "
                f"{len(palette)} colours. Received: class_ids={list(class_ids)!r}"
            )
    return palette


def legend_panel(class_ids, class_names, palette, height, background=(255, 255, 255)):
    """A legend as a PIL image of the given height: a swatch and a name per class.

    Entries run down in columns; as many columns as needed are added so all
    classes fit (the panel is at least one entry high).

    Args:
        class_ids: sequence of int class indices, in display order.
        class_names: sequence of str, the name of every class.
        palette: `(r, g, b)` per class.
        height: int, the panel height in pixels (usually the image's).
        background: `(r, g, b)` of the panel. Defaults to white.

    Returns:
        RGB `PIL.Image.Image`.
    """
    palette = _check_legend_args(class_ids, class_names, palette)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [str(class_names[i]) for i in class_ids]
    boxes = [measure.textbbox((0, 0), label, font=font) for label in labels] or [(0, 0, 0, 0)]
    text_width = max(box[2] for box in boxes)
    text_height = max(max(box[3] for box in boxes), 10)
    pad, swatch = 4, text_height + 2
    row = swatch + pad
    rows = max(1, (height - pad) // row)
    columns = max(1, math.ceil(len(labels) / rows))
    column_width = swatch + pad + text_width + 2 * pad
    panel = Image.new(
        "RGB", (pad + columns * column_width, max(height, pad + row)), tuple(background)
    )
    draw = ImageDraw.Draw(panel)
    for index, (class_id, label) in enumerate(zip(class_ids, labels)):
        x = pad + (index // rows) * column_width
        y = pad + (index % rows) * row
        colour = tuple(int(c) for c in palette[class_id])
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=(64, 64, 64))
        draw.text((x + swatch + pad, y + 1), label, fill=(0, 0, 0), font=font)
    return panel


def draw_legend(image, class_ids, class_names, palette):
    """The image with a legend panel of `class_ids` to its right.

    Args:
        image: uint8 RGB array `(H, W, 3)` or a PIL image.
        class_ids: sequence of int class indices, in display order (e.g.
            `present_classes(class_map)`).
        class_names: sequence of str, the name of every class.
        palette: `(r, g, b)` per class.

    Returns:
        RGB `PIL.Image.Image`, as high as the image (or one legend entry,
        if taller) and wider by the panel.
    """
    if not isinstance(image, Image.Image):
        image = Image.fromarray(_as_rgb_image(image))
    image = image.convert("RGB")
    panel = legend_panel(class_ids, class_names, palette, image.height)
    canvas = Image.new("RGB", (image.width + panel.width, panel.height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    canvas.paste(panel, (image.width, 0))
    return canvas


def legend_patches(class_ids, class_names, palette):
    """matplotlib legend handles for `class_ids`, for `ax.legend(handles=...)`.

    Args:
        class_ids: sequence of int class indices, in display order.
        class_names: sequence of str, the name of every class.
        palette: `(r, g, b)` per class.

    Returns:
        list of `matplotlib.patches.Patch`, labelled with the class names.
    """
    from matplotlib.patches import Patch

    palette = _check_legend_args(class_ids, class_names, palette)
    return [
        Patch(facecolor=tuple(palette[i] / 255.0), edgecolor="0.25", label=str(class_names[i]))
        for i in class_ids
    ]
