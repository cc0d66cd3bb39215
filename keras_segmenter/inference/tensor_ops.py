"""In-graph tensor helpers of the band-wise merge: bands of anchors, placing and adding
blocks, window coverage, and the separable bilinear resize of `tf.image.resize`."""

import tensorflow as tf

from keras_segmenter.inference.windows import window_anchors


def bands(size, window_size, window_stride, group):
    """Groups one axis' window anchors into bands that are merged one after the other.

    Band `k` holds anchors `k * group` to `(k + 1) * group - 1`; the last
    anchor (`size - window_size`, usually off the stride grid) joins the last
    band, so that consecutive bands always overlap by `window - stride`.
    Once band `k` is merged, positions `[edges[k], edges[k + 1])` are final.

    Returns:
        `(anchors, first, last, edges)`: the int32 anchors; per band the
        index of its first anchor and one past its last; `num_bands + 1` edges.
    """
    anchors = window_anchors(size, window_size, window_stride)
    count = tf.size(anchors)
    num_bands = (tf.maximum(count - 1, 1) + group - 1) // group
    first = tf.range(num_bands) * group
    last = tf.concat([first[1:], [count]], axis=0)
    edges = tf.concat([tf.gather(anchors, first), [tf.cast(size, tf.int32)]], axis=0)
    return anchors, first, last, edges


def padded(block, row, col, height, width):
    """`block` placed at `(row, col)` in zeros of `(height, width, ...)` (`tf.pad` forwards
    a block that already has that size)."""
    shape = tf.shape(block)
    return tf.pad(block, [[row, height - row - shape[0]], [col, width - col - shape[1]], [0, 0]])


def add_block(total, block, row, col):
    """`total` with `block` added at rows `row...` and columns `col...` (in place when
    `total` has no other use)."""
    shape = tf.shape(block)
    grid = tf.meshgrid(tf.range(shape[0]) + row, tf.range(shape[1]) + col, indexing="ij")
    return tf.tensor_scatter_nd_add(total, tf.stack(grid, axis=-1), block)


def add_window(total, window, row, col):
    """Adds `window` into `total` at rows `row...` and columns `col...`, in `total`'s own
    buffer (`tensor_scatter_nd_add` copied the whole `total` for every window here): only
    for a `total` that the caller made and that nothing else reads."""
    shape, size = tf.shape(window), tf.shape(total)
    pixels = (tf.range(shape[0]) + row)[:, None] * size[1] + (tf.range(shape[1]) + col)[None]
    flat = tf.raw_ops.InplaceAdd(
        x=tf.reshape(total, [-1, size[2]]),
        i=tf.reshape(pixels, [-1]),
        v=tf.reshape(window, [-1, shape[2]]),
    )
    return tf.reshape(flat, size)


def coverage(anchors, start, stop, window_size):
    """How many windows at `anchors` cover each position of `[start, stop)`."""
    positions = tf.range(start, stop)[None]
    inside = (positions >= anchors[:, None]) & (positions < anchors[:, None] + window_size)
    return tf.reduce_sum(tf.cast(inside, tf.float32), axis=0)


def resize_weights(out_size, in_size):
    """Source positions of a bilinear resize along one axis, as `tf.image.resize`.

    Half-pixel centres, no antialiasing (torch `align_corners=False`): output
    `i` reads input `(i + 0.5) * in_size / out_size - 0.5`, clamped.

    Returns:
        `(lower, upper, weight)` per output position: int32 source indices
        and the float32 weight of `upper`.
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    source = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(source)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(source), tf.int32), in_size - 1)
    return lower, upper, source - floor


def interpolate(block, lower, upper, weight, axis):
    """`block` linearly interpolated between indices `lower` and `upper` along `axis`."""
    low = tf.gather(block, lower, axis=axis)
    high = tf.gather(block, upper, axis=axis)
    shape = [1, 1, 1]
    shape[axis] = -1
    return low + (high - low) * tf.reshape(weight, shape)


def swap01(tensor, rank):
    """`tensor` with its first two axes swapped; an int32 class map as float32 and back
    (exact below 2**24), as oneDNN, where it runs, logs an ERROR line for an int32 transpose."""
    if tensor.dtype == tf.int32:
        return tf.cast(swap01(tf.cast(tensor, tf.float32), rank), tf.int32)
    return tf.transpose(tensor, [1, 0] + list(range(2, rank)))
