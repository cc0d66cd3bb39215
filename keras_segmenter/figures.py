"""matplotlib figures for the notebooks and the paper's Figures 6, 7 and 8.

- `show_segmentation(image, truth, prediction, class_names, palette)`: image,
  ground truth and prediction side by side with a legend.
- `plot_attention_maps(model, image, patch, layers)`: Figure 6, the attention
  of one patch to every patch at several encoder layers, resized to the image.
- `mean_attention_distance(model, images)` and `plot_attention_distance(...)`:
  Figure 7, the attended area per head and layer.
- `plot_class_embeddings(model, class_names)`: Figure 8, a 2-D SVD projection
  of the mask transformer's class embeddings.
- `plot_training_curves(history_csv)`: loss, mIoU and learning rate of a
  `training/fit.py` run.
- `plot_augmented_crops(dataset, palette, n)`: training crops with their masks.

The numbers behind the figures come from the pure functions of
`keras_segmenter.analysis` (`patch_attention`, `attention_distances`,
`class_embedding_projection`, `read_history`, ...), also importable from
here, so they can be checked without drawing. Every `plot_*` function
returns a `matplotlib.figure.Figure` and does not call `plt.show()`.
"""

import numpy as np

from keras_segmenter import visualization as vis
from keras_segmenter.analysis import (
    _as_image_batch,
    attention_distances,
    class_embedding_projection,
    mean_attention_distance,
    patch_attention,
    patch_distances,
    read_history,
)
from keras_segmenter.layers.normalization import denormalize_images

__all__ = [
    "attention_distances",
    "class_embedding_projection",
    "denormalize",
    "mean_attention_distance",
    "patch_attention",
    "patch_distances",
    "plot_attention_distance",
    "plot_attention_maps",
    "plot_augmented_crops",
    "plot_class_embeddings",
    "plot_training_curves",
    "read_history",
    "show_segmentation",
]


def _figure(rows, columns, cell=3.0, **kwargs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        rows, columns, figsize=(cell * columns, cell * rows), squeeze=False, **kwargs
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


# ---------------------------------------------------------------- segmentation


def _overlay_with_ignore(image, class_map, palette, alpha, ignore_index):
    """`vis.overlay`, leaving pixels of `ignore_index` (or any class without a
    colour) as the bare photograph."""
    class_map = np.asarray(class_map).astype(np.int64)
    unlabelled = (class_map < 0) | (class_map >= len(palette))
    if ignore_index is not None:
        unlabelled |= class_map == ignore_index
    blended = vis.overlay(image, np.where(unlabelled, 0, class_map), palette, alpha)
    blended[unlabelled] = np.asarray(image)[unlabelled]
    return blended


def show_segmentation(
    image,
    truth,
    prediction,
    class_names,
    palette,
    alpha=0.6,
    ignore_index=255,
    titles=("image", "ground truth", "prediction"),
):
    """Image, ground truth and prediction overlays side by side, with a legend.

    One row per image. The legend lists the classes present in any truth or
    prediction shown, largest area first. Pixels labelled `ignore_index` are
    left uncoloured in the ground truth.

    Args:
        image: uint8 RGB array `(H, W, 3)`, or a list / batch of them.
        truth: integer array `(H, W)` (or a list / batch), or `None` to show
            image and prediction only.
        prediction: integer array `(H, W)`, or a list / batch of them.
        class_names: sequence of str, one per class.
        palette: `(r, g, b)` per class.
        alpha: float, opacity of the class colours. Defaults to 0.6.
        ignore_index: int or None, label left uncoloured. Defaults to 255.
        titles: three column titles.

    Returns:
        `matplotlib.figure.Figure`.
    """
    images = _as_image_batch(image)
    predictions = [
        np.asarray(p) for p in ([prediction] if np.ndim(prediction) == 2 else prediction)
    ]
    truths = (
        [None] * len(images)
        if truth is None
        else ([np.asarray(t) for t in ([truth] if np.ndim(truth) == 2 else truth)])
    )
    if not len(images) == len(truths) == len(predictions):
        raise ValueError(
            "`image`, `truth` and `prediction` must hold as many images each. Received: "
            f"{len(images)} images, {len(truths)} truths, {len(predictions)} predictions"
        )
    palette = vis.as_palette(palette)
    columns = 2 if truth is None else 3
    column_titles = [titles[0], titles[2]] if truth is None else list(titles)
    height, width = images[0].shape[:2]
    fig, axes = _figure(len(images), columns, cell=3.2 * max(1.0, width / height) ** 0.5)
    counts = np.zeros(len(class_names), np.int64)
    for row, (img, tru, pred) in enumerate(zip(images, truths, predictions)):
        panels = [img]
        if tru is not None:
            panels.append(_overlay_with_ignore(img, tru, palette, alpha, ignore_index))
        panels.append(_overlay_with_ignore(img, pred, palette, alpha, None))
        for column, panel in enumerate(panels):
            axes[row, column].imshow(panel)
            if row == 0:
                axes[row, column].set_title(column_titles[column])
        for class_map in (tru, pred):
            if class_map is not None:
                ids, n = np.unique(np.asarray(class_map), return_counts=True)
                keep = (ids >= 0) & (ids < len(class_names))
                np.add.at(counts, ids[keep].astype(np.int64), n[keep])
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    fig.legend(
        handles=vis.legend_patches(present, class_names, palette),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
    )
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Figure 6


def plot_attention_maps(model, image, patch, layers=(0, 1), per_head=False, cmap="inferno"):
    """The paper's Figure 6: attention maps of one patch at several encoder layers.

    The first column shows the image with the query patch outlined; the next
    columns the attention of that patch to all patches at each layer
    (`patch_attention`), averaged over heads, or with `per_head=True` one row
    per layer and one column per head. Each map is stretched from its own
    minimum (dark) to its maximum (bright), so the figure shows where a head
    attends relative to elsewhere, not how peaked it is.

    Args:
        model: a `Segmenter`.
        image: uint8 RGB array `(H, W, 3)`.
        patch: `(row, col)` of the query patch on the patch grid.
        layers: encoder block indices (0 = first block). Defaults to `(0, 1)`.
        per_head: bool, one map per head instead of the head average.
        cmap: matplotlib colour map. Defaults to `"inferno"`.

    Returns:
        `matplotlib.figure.Figure`.
    """
    from matplotlib.patches import Rectangle

    layers = list(layers)
    maps, _ = patch_attention(model, image, patch, layers)
    p = getattr(model, "backbone", model).patch_size
    heads = next(iter(maps.values())).shape[0]
    rows, columns = (len(layers), heads + 1) if per_head else (1, len(layers) + 1)
    fig, axes = _figure(rows, columns, cell=2.6)
    for r in range(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].add_patch(
            Rectangle(
                (patch[1] * p - 0.5, patch[0] * p - 0.5),
                p,
                p,
                fill=False,
                edgecolor="cyan",
                linewidth=2,
            )
        )
        if r == 0:
            axes[r, 0].set_title(f"query patch {tuple(patch)}")
    for i, layer in enumerate(layers):
        if per_head:
            panels = [
                (axes[i, h + 1], maps[layer][h], f"layer {layer}, head {h}") for h in range(heads)
            ]
        else:
            panels = [(axes[0, i + 1], maps[layer].mean(axis=0), f"layer {layer}")]
        for ax, attention, title in panels:
            ax.imshow(image)
            low, high = attention.min(), attention.max()
            ax.imshow(
                (attention - low) / max(high - low, 1e-12), cmap=cmap, alpha=0.7, vmin=0, vmax=1
            )
            ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Figure 7


def plot_attention_distance(distances, labels=None, ax=None):
    """The paper's Figure 7: one dot per head at each layer.

    Args:
        distances: array `(layers, heads)` from `mean_attention_distance`,
            or a dict `{label: array}` to compare models (one colour each).
        labels: unused when `distances` is a dict; else an optional legend
            label for the single model.
        ax: optional matplotlib axes to draw into.

    Returns:
        `matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    series = distances if isinstance(distances, dict) else {labels: distances}
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    offsets = np.linspace(-0.15, 0.15, len(series)) if len(series) > 1 else [0.0]
    for offset, (label, values) in zip(offsets, series.items()):
        values = np.asarray(values)
        layers = np.repeat(np.arange(values.shape[0]), values.shape[1]) + offset
        ax.scatter(layers, values.ravel(), s=18, alpha=0.8, label=label)
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(np.arange(np.asarray(next(iter(series.values()))).shape[0]))
    ax.grid(alpha=0.3)
    if any(label is not None for label in series):
        ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Figure 8


def plot_class_embeddings(model, class_names, palette=None, center=True, ax=None):
    """The paper's Figure 8: SVD projection of the learned class embeddings.

    Args:
        model: a `Segmenter` with `decoder="mask"`.
        class_names: sequence of str, one per class.
        palette: optional `(r, g, b)` per class, to colour the dots.
        center: bool, see `class_embedding_projection`.
        ax: optional matplotlib axes.

    Returns:
        `matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    if getattr(model, "decoder_type", None) != "mask":
        raise ValueError(
            "Class embeddings exist only in the mask transformer decoder. Received: a model "
            f"with decoder={getattr(model, 'decoder_type', None)!r}"
        )
    embeddings = np.asarray(model.decoder.cls_emb)
    if len(class_names) != embeddings.shape[-2]:
        raise ValueError(
            f"`class_names` must name the model's {embeddings.shape[-2]} classes. "
            f"Received: {len(class_names)} names"
        )
    coords = class_embedding_projection(embeddings, center=center)
    colours = None if palette is None else vis.as_palette(palette)[: len(coords)] / 255.0
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=60, edgecolors="0.2")
    for (x, y), name in zip(coords, class_names):
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel("first singular direction")
    ax.set_ylabel("second singular direction")
    ax.set_title("class embeddings (SVD)")
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- training


def plot_training_curves(history_csv):
    """Loss, mIoU (training and validation) and learning rate against iterations.

    Args:
        history_csv: path of a run's `history.csv`, with an `iteration` column
            (else `epoch`) and any of `loss`, `mIoU`, `val_mIoU`,
            `learning_rate`.

    Returns:
        `matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    history = read_history(history_csv)
    x = history.get("iteration", history.get("epoch"))
    panels = [
        ("loss", ["loss", "val_loss"]),
        ("mIoU", ["mIoU", "val_mIoU"]),
        ("learning rate", ["learning_rate"]),
    ]
    panels = [(title, [k for k in keys if k in history]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            keep = ~np.isnan(history[key])
            ax.plot(x[keep], history[key][keep], marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    return fig


# Normalized model inputs back to uint8 RGB (inverse of `ImageNormalization`).
denormalize = denormalize_images


def plot_augmented_crops(
    dataset, palette, n=4, normalization="vit", class_names=None, ignore_index=255
):
    """Training crops (after augmentation) above their masks.

    Args:
        dataset: a `tf.data.Dataset` of `(images, masks)` batches, e.g.
            `keras_segmenter.data.train_dataset(...)`; images normalized with
            `normalization`.
        palette: `(r, g, b)` per class; `ignore_index` (padding) is drawn
            black.
        n: int, number of crops. Defaults to 4.
        normalization: str, the dataset's normalization. Defaults to `"vit"`.
        class_names: optional class names, for a legend.
        ignore_index: int. Defaults to 255.

    Returns:
        `matplotlib.figure.Figure`.
    """
    if n < 1:
        raise ValueError(f"`n` must be positive. Received: n={n}")
    images, masks = [], []
    for batch_images, batch_masks in dataset:
        images.extend(denormalize(batch_images, normalization))
        masks.extend(np.asarray(batch_masks))
        if len(images) >= n:
            break
    images, masks = images[:n], masks[:n]
    palette = vis.as_palette(palette)
    fig, axes = _figure(2, len(images), cell=2.4)
    present = set()
    for i, (image, mask) in enumerate(zip(images, masks)):
        ignored = (mask == ignore_index) | (mask < 0) | (mask >= len(palette))
        colours = vis.colorize(np.where(ignored, 0, mask).astype(np.int64), palette)
        colours[ignored] = 0
        axes[0, i].imshow(image)
        axes[1, i].imshow(colours)
        axes[0, i].set_title(f"crop {i}")
        present.update(int(c) for c in np.unique(mask[~ignored]))
    if class_names is not None:
        fig.legend(
            handles=vis.legend_patches(sorted(present), class_names, palette),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    fig.tight_layout()
    return fig
