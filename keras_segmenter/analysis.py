"""The numbers behind the figures in `keras_segmenter.figures`, without matplotlib.

- `patch_attention(model, image, patch, layers)`: Figure 6, the attention of
  one patch to every patch, per layer and head, at image size.
- `patch_distances(grid, patch_size)`, `attention_distances(attention, ...)`
  and `mean_attention_distance(model, images)`: Figure 7, the attended area
  per head and layer.
- `class_embedding_projection(embeddings)`: Figure 8, a 2-D SVD projection of
  the mask transformer's class embeddings.
- `read_history(history_csv)`: the columns of a training run's `history.csv`.
"""

import csv
import math

import numpy as np
from PIL import Image

from keras_segmenter.models.segmenter_preprocessor import preprocessor_of


def _as_image_batch(images):
    """A list of uint8 RGB arrays from one image, a batch array or a list."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [images]
    return [np.asarray(image) for image in images]


# ---------------------------------------------------------------- Figure 6


def _resize(array, size):
    """Bilinear resize of a float 2-D array to `size = (height, width)`."""
    resized = Image.fromarray(np.asarray(array, np.float32), mode="F").resize(
        (size[1], size[0]), Image.BILINEAR
    )
    return np.asarray(resized)


def patch_attention(model, image, patch, layers=None):
    """Attention of one query patch to every patch, per layer and head, at image size.

    The attention row of the query patch (prefix tokens left out) is reshaped
    to the patch grid and resized bilinearly to the padded image, then
    cropped to the image: `maps[layer][head, y, x]` is how much the query
    patch attends to the patch covering pixel `(y, x)`, spread over its
    `patch_size ** 2` pixels by the resize.

    Args:
        model: a `Segmenter` (or a `ViTBackbone`, with `normalization`).
        image: uint8 RGB array `(H, W, 3)`, values in [0, 255].
        patch: `(row, col)` of the query patch on the patch grid.
        layers: iterable of encoder block indices (0 = first block);
            defaults to all blocks.

    Returns:
        `(maps, grid)`: `maps` a dict `{layer: float array (heads, H, W)}`,
        `grid` the patch grid `(gh, gw)`.
    """
    from keras_segmenter.models.attention import encoder_attention_maps

    image = np.asarray(image)
    backbone = getattr(model, "backbone", model)
    normalized = preprocessor_of(model).normalize(image[None])
    attention, grid = encoder_attention_maps(model, normalized, layers=layers)
    row, col = patch
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        raise ValueError(
            f"`patch` must lie on the {grid[0]}x{grid[1]} patch grid. Received: patch={patch!r}"
        )
    prefix = backbone.num_prefix_tokens
    query = prefix + row * grid[1] + col
    p = backbone.patch_size
    maps = {}
    for layer, weights in attention.items():
        rows = weights[0, :, query, prefix:].reshape(-1, grid[0], grid[1])
        maps[layer] = np.stack(
            [
                _resize(head, (grid[0] * p, grid[1] * p))[: image.shape[0], : image.shape[1]]
                for head in rows
            ]
        )
    return maps, grid


# ---------------------------------------------------------------- Figure 7


def patch_distances(grid, patch_size):
    """Pixel distances between the centres of all pairs of patches.

    Args:
        grid: `(gh, gw)` patch grid.
        patch_size: int, patch side in pixels.

    Returns:
        float array `(gh * gw, gh * gw)`, patches in row-major order:
        `patch_size * sqrt((r_i - r_j)**2 + (c_i - c_j)**2)`.
    """
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.float64)
    return patch_size * np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)


def attention_distances(attention, grid, patch_size, num_prefix_tokens=1):
    """Mean attention distance per head of one layer's attention weights.

    Over patch tokens only: the rows and columns of the prefix tokens
    (class / distillation) are dropped and each query patch's weights over
    the key patches are renormalized to sum to one. For head `h`:

        d_h = mean_b mean_i sum_j a[b, h, i, j] / (sum_k a[b, h, i, k]) * D[i, j]

    with `i`, `j`, `k` running over the patches and `D = patch_distances(grid,
    patch_size)` the pixel distance between patch centres. This is ViT's
    "attention distance" (Dosovitskiy et al., 2021, Fig. 7 and appendix D.7),
    the analogue of a CNN's receptive field size.

    Args:
        attention: array `(batch, heads, T, T)` of softmax weights,
            `T = num_prefix_tokens + gh * gw`, prefix tokens first.
        grid: `(gh, gw)` patch grid.
        patch_size: int, patch side in pixels.
        num_prefix_tokens: int, 1 for ViT, 2 for distilled DeiT.

    Returns:
        float array `(heads,)` in pixels.
    """
    attention = np.asarray(attention, np.float64)
    num_patches = grid[0] * grid[1]
    if (
        attention.ndim != 4
        or attention.shape[-1] != attention.shape[-2]
        or (attention.shape[-1] != num_prefix_tokens + num_patches)
    ):
        raise ValueError(
            "`attention` must be (batch, heads, T, T) with T = num_prefix_tokens + gh * gw = "
            f"{num_prefix_tokens + num_patches}. Received: shape={attention.shape}"
        )
    weights = attention[:, :, num_prefix_tokens:, num_prefix_tokens:]
    weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-12)
    per_query = (weights * patch_distances(grid, patch_size)).sum(axis=-1)
    return per_query.mean(axis=(0, 2))


def mean_attention_distance(model, images, batch_size=4):
    """The paper's Figure 7 numbers: mean attention distance per layer and head.

    `attention_distances` of every encoder block, averaged over the images
    (all images must have one size).

    Args:
        model: a `Segmenter` (or a `ViTBackbone`).
        images: uint8 RGB images `(N, H, W, 3)` or a list of `(H, W, 3)`.
        batch_size: int, images per encoder pass. Defaults to 4.

    Returns:
        float array `(layers, heads)`, pixels.
    """
    from keras_segmenter.models.attention import encoder_attention_maps

    images = np.stack(_as_image_batch(images)).astype("float32")
    backbone = getattr(model, "backbone", model)
    normalize = preprocessor_of(model).normalize
    total, count = None, 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        maps, grid = encoder_attention_maps(model, normalize(batch))
        distances = np.stack(
            [
                attention_distances(
                    maps[layer], grid, backbone.patch_size, backbone.num_prefix_tokens
                )
                for layer in sorted(maps)
            ]
        )
        total = distances * len(batch) if total is None else total + distances * len(batch)
        count += len(batch)
    return total / count


# ---------------------------------------------------------------- Figure 8


def class_embedding_projection(embeddings, center=True):
    """2-D projection of class embeddings by singular value decomposition.

    With `X` the `(K, D)` embeddings (mean-centred when `center`), and
    `X = U S V^T`, the coordinates are `U[:, :2] * S[:2]`, i.e. `X` projected
    on its two leading right singular vectors (PCA when centred).

    Args:
        embeddings: array `(K, D)` or `(1, K, D)`, e.g. a mask transformer's
            `decoder.cls_emb`.
        center: bool, subtract the mean embedding first. Defaults to True.

    Returns:
        float array `(K, 2)`.
    """
    x = np.asarray(embeddings, np.float64)
    x = x.reshape(x.shape[-2], x.shape[-1])
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:  # a single class or a 1-D embedding
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


# ---------------------------------------------------------------- training


def read_history(history_csv):
    """Columns of a `history.csv` (written by `training/fit.py`) as float arrays.

    Empty and "nan" cells (iterations without validation) become NaN.

    Returns:
        dict `{column: float array}`.
    """
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{history_csv}: no rows")

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    return {key: np.array([number(row[key]) for row in rows]) for key in rows[0]}
