"""Sliding-window and multi-scale inference, as in the Segmenter paper.

Strudel, Garcia, Laptev, Schmid, "Segmenter: Transformer for Semantic
Segmentation", ICCV 2021, section 4.2 "Inference": the image is cut into
windows of the training crop size, window logits are averaged where windows
overlap, and the averaged logits are resized back to the image size. The
functions here follow the official `segm.model.utils.inference` step by step
(same anchors, same upscaling of small images, softmax after the resize) and
are written with TensorFlow ops only, so they run inside a `tf.function` for
images of any height and width. A model on the JAX or PyTorch backend runs on
its own backend, called from those TensorFlow loops (`model_logits`).

Also here: the window rule (`default_window`) and the graphs built on
`segment` (`segment_image`, `make_predictor`: uint8 RGB in, as `predict`
and the SavedModel export run it). Evaluating over a dataset is
`keras_segmenter.evaluation`.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_segmenter.layers.backend import TENSORFLOW

OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _check_window(window_size, window_stride, batch_size):
    if not isinstance(window_size, int) or window_size < 1:
        raise ValueError(
            f"`window_size` must be a positive int. Received: window_size={window_size!r}"
        )
    if not isinstance(window_stride, int) or window_stride < 1:
        raise ValueError(
            f"`window_stride` must be a positive int. Received: window_stride={window_stride!r}"
        )
    if window_stride > window_size:
        raise ValueError(
            "`window_stride` must not exceed `window_size`, or pixels between windows get no "
            f"prediction. Received: window_size={window_size}, window_stride={window_stride}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )


def _as_single_image(image):
    """Returns a float32 `(H, W, 3)` tensor from `(H, W, 3)` or `(1, H, W, 3)`."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 4:
        if image.shape[0] not in (None, 1):
            raise ValueError(
                "Expected one image `(H, W, 3)` or `(1, H, W, 3)`. "
                f"Received: image.shape={tuple(image.shape)}"
            )
        image = image[0]
    if image.shape.rank != 3 or image.shape[-1] not in (None, 3):
        raise ValueError(
            f"Expected an image `(H, W, 3)`. Received: image.shape={tuple(image.shape)}"
        )
    return tf.cast(image, tf.float32)


def model_logits(model, images):
    """float32 logits of a batch of normalized `images` (a TensorFlow tensor).

    Off TensorFlow the model runs on its backend through `tf.numpy_function`
    (`predict_on_batch`: compiled once a shape on JAX, no autograd on PyTorch),
    so the TensorFlow windowing works for every backend; such a graph does
    not export.
    """
    if TENSORFLOW:
        return tf.cast(model(images, training=False), tf.float32)

    def run(batch):
        return np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(batch)), np.float32)

    logits = tf.numpy_function(run, [images], tf.float32, stateful=False)
    logits.set_shape(images.shape[:-1].concatenate([model.output_shape[-1]]))
    return logits


def window_anchors(size, window_size, window_stride):
    """Top-left window offsets along one axis, as the official `sliding_window`.

    Offsets `0, stride, 2 * stride, ...` strictly below `size - window_size`,
    then `size - window_size` itself, so the last window touches the border.

    Args:
        size: int or scalar int tensor, the axis length (at least `window_size`).
        window_size: int, the window side.
        window_stride: int, the step between windows.

    Returns:
        1-D int32 tensor of offsets.
    """
    last = tf.cast(size, tf.int32) - window_size
    return tf.concat([tf.range(0, last, window_stride), [last]], axis=0)


def upscaled_shape(height, width, window_size):
    """Shape the official `resize()` gives an image before windowing.

    Images whose short side is below `window_size` are upscaled so that the
    short side equals the window and the long side is
    `int(long / short * window_size)`; larger images keep their shape.

    Args:
        height: scalar int tensor or int.
        width: scalar int tensor or int.
        window_size: int.

    Returns:
        `(new_height, new_width)` as scalar int32 tensors.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    short = tf.minimum(height, width)
    ratio = tf.cast(tf.maximum(height, width), tf.float64) / tf.cast(short, tf.float64)
    long_side = tf.cast(tf.floor(ratio * window_size), tf.int32)
    small = short < window_size
    new_height = tf.where(small, tf.where(height < width, window_size, long_side), height)
    new_width = tf.where(small, tf.where(height < width, long_side, window_size), width)
    return new_height, new_width


def num_classes_of(model):
    """Number of classes a segmentation model predicts (`model.num_classes` or its output)."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        num_classes = model.output_shape[-1]
    return int(num_classes)


def default_window(model=None, window_size=None, window_stride=None, reference=None):
    """Sliding-window size and stride: the one rule of predict, evaluate and fit's validation.

    The window is `window_size`, else the model's training crop
    (`model.backbone.image_size`, the shorter side if it is not square).
    The stride is `window_stride`; else, with `reference`, the stride of
    that official window scaled to this one (fit's validation, as the
    official `train.py` with the dataset's `config.yml` window); else
    `window - 32` (the official evaluation, `segm/eval/miou.py`), but
    never below half the window, so that tiny test models do not need
    thousands of windows.

    Args:
        model: a `Segmenter` (anything with `backbone.image_size`); only
            read when `window_size` is `None`.
        window_size: optional int, overrides the window.
        window_stride: optional int, overrides the stride.
        reference: optional `(size, stride)`, an official window and stride
            (e.g. a `DatasetInfo`'s `window_size`, `window_stride`).

    Returns:
        `(window_size, window_stride)` ints.
    """
    if window_size is None:
        image_size = getattr(getattr(model, "backbone", None), "image_size", None)
        if image_size is None:
            raise ValueError(
                "The model has no `backbone.image_size` (training crop), so the sliding window "
                "size is unknown: pass `window_size` (--window-size), or use whole-image "
                "inference (--whole)."
            )
        window_size = int(min(image_size))
    if window_stride is None:
        if reference:
            size, stride = reference
            window_stride = max(1, round(window_size * stride / size))
        else:
            window_stride = max(window_size - 32, window_size // 2, 1)
    return int(window_size), int(window_stride)


# One model call returns `windows x window^2 x classes` float32 logits (157 MB
# for one 512 window of a 150-class model); by default as many windows go into
# a call as keep them near this size, and the merge buffers scale with it.
CALL_LOGITS_BYTES = 256 * 2**20
MAX_WINDOWS_PER_CALL = 8


def windows_per_call(window_size, num_classes, batch_size=None):
    """`batch_size`, or by default as many windows as fit `CALL_LOGITS_BYTES` (1 to 8)."""
    if batch_size is not None:
        return batch_size
    fitting = CALL_LOGITS_BYTES // (window_size * window_size * num_classes * 4)
    return int(min(MAX_WINDOWS_PER_CALL, max(1, fitting)))


def _bands(size, window_size, window_stride, group):
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


def _padded(block, row, col, height, width):
    """`block` placed at `(row, col)` in zeros of `(height, width, ...)` (`tf.pad` forwards
    a block that already has that size)."""
    shape = tf.shape(block)
    return tf.pad(block, [[row, height - row - shape[0]], [col, width - col - shape[1]], [0, 0]])


def _add_block(total, block, row, col):
    """`total` with `block` added at rows `row...` and columns `col...` (in place when
    `total` has no other use)."""
    shape = tf.shape(block)
    grid = tf.meshgrid(tf.range(shape[0]) + row, tf.range(shape[1]) + col, indexing="ij")
    return tf.tensor_scatter_nd_add(total, tf.stack(grid, axis=-1), block)


def _add_window(total, window, row, col):
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


def _coverage(anchors, start, stop, window_size):
    """How many windows at `anchors` cover each position of `[start, stop)`."""
    positions = tf.range(start, stop)[None]
    inside = (positions >= anchors[:, None]) & (positions < anchors[:, None] + window_size)
    return tf.reduce_sum(tf.cast(inside, tf.float32), axis=0)


def _resize_weights(out_size, in_size):
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


def _interpolate(block, lower, upper, weight, axis):
    """`block` linearly interpolated between indices `lower` and `upper` along `axis`."""
    low = tf.gather(block, lower, axis=axis)
    high = tf.gather(block, upper, axis=axis)
    shape = [1, 1, 1]
    shape[axis] = -1
    return low + (high - low) * tf.reshape(weight, shape)


def _swap01(tensor, rank):
    """`tensor` with its first two axes swapped; an int32 class map as float32 and back
    (exact below 2**24), as oneDNN, where it runs, logs an ERROR line for an int32 transpose."""
    if tensor.dtype == tf.int32:
        return tf.cast(_swap01(tf.cast(tensor, tf.float32), rank), tf.int32)
    return tf.transpose(tensor, [1, 0] + list(range(2, rank)))


class _Pieces:
    """Band outputs of one view: `finish` of each block, joined over the output width."""

    def __init__(self, finish, specs):
        self.finish, self.specs = finish, specs

    def open(self, _store, _band_end):
        return [tf.TensorArray(d, 0, dynamic_size=True, infer_shape=False) for d, _ in self.specs]

    def add(self, pieces, column, logits, _row, _col):
        outs = self.finish(logits)
        return [ta.write(column, _swap01(o, r)) for ta, o, (_, r) in zip(pieces, outs, self.specs)]

    def close(self, pieces):
        return [
            tf.ensure_shape(_swap01(piece.concat(), r), [None] * r)
            for piece, (_, r) in zip(pieces, self.specs)
        ]


class _Strip:
    """Softmax of each block added into `(strip, top)`: output rows `top...`, all columns.

    `flipped`: the view is the mirrored image, its blocks go back mirrored.
    """

    def __init__(self, width, flipped):
        self.width, self.flipped = width, flipped

    def open(self, store, band_end):
        strip, top = store
        grow = tf.maximum(band_end - top - tf.shape(strip)[0], 0)
        return tf.pad(strip, [[0, grow], [0, 0], [0, 0]]), top

    def add(self, store, _column, logits, row, col):
        strip, top = store
        probs = tf.nn.softmax(logits, axis=-1)
        if self.flipped:
            probs = tf.reverse(probs, axis=[1])
            col = self.width - col - tf.shape(probs)[1]
        return _add_block(strip, probs, row - top, col), top

    def close(self, store):
        return store


def _band_stepper(model, view, out_size, window_size, window_stride, batch_size, num_classes, sink):
    """Merges a view's windows band by band and hands `sink` each finished block.

    The one sliding-window implementation: the window logits are summed and
    divided by the number of windows covering each pixel, then resized
    bilinearly from the view's size to `out_size` (the official
    `inference()`), but never for the whole image at once. Window rows are
    merged one after the other, and within a row, `batch_size` window columns
    at a time (one model call); a block becomes final as soon as no later
    window covers it, and only the `window - stride` rows and columns that
    later windows still add to are carried over. The bilinear resize of a
    block needs its source rows and columns and the one before each (kept
    from the previous block): an output pixel belongs to the block holding
    the later of its two source rows and columns. Peak memory is a few
    blocks of `batch_size` windows, plus a `window - stride` row strip.

    Args:
        model: maps `(B, window, window, 3)` to logits `(B, window, window, K)`.
        view: float32 `(h, w, 3)`, both sides at least `window_size`.
        out_size: `(H, W)` int32, the size the averaged logits are resized to.
        window_size, window_stride, batch_size: ints.
        num_classes: int K.
        sink: `_Pieces` or `_Strip`, collects the finished float32 logits
            `(rows, cols, K)` at the output size of each block.

    Returns:
        `(state, step, num_bands)`: the loop state before the first band,
        `step(*state, store) -> (state, store, end)` merging the next window
        row, where `store` is what `sink.close` returns (for `_Pieces` the
        output rows that band finished, over the whole width) and `end`
        the output row up to which this view is final; and the number of
        bands.
    """
    size, stride = window_size, window_stride
    height, width = tf.shape(view)[0], tf.shape(view)[1]
    rows, row_first, row_last, row_edges = _bands(height, size, stride, 1)
    cols, col_first, col_last, col_edges = _bands(width, size, stride, batch_size)
    resize = tf.logical_or(height != out_size[0], width != out_size[1])
    row_lower, row_upper, row_weight = _resize_weights(out_size[0], height)
    col_lower, col_upper, col_weight = _resize_weights(out_size[1], width)
    offsets = tf.range(size)
    window_pixels = tf.stack(tf.meshgrid(offsets, offsets, indexing="ij"), axis=-1)
    logits_shape = tf.TensorShape([None, None, num_classes])

    def output_start(index, upper):  # first output row (column) read from `index` on
        return tf.reduce_sum(tf.cast(upper < index, tf.int32))

    def merge_windows(carried, top, left, anchors):
        """`carried()`, the sums of earlier windows over the block at `top`, `left`,
        plus the logits of the windows at `anchors`, added in anchor order into the new
        buffer that `carried()` returns (so a block never exists twice)."""

        def call(start, total):
            batch = anchors[start : start + batch_size]
            # The model runs once `total` exists: the temporaries that build it are then
            # freed, and never live beside the window logits.
            with tf.control_dependencies([total]):
                windows = tf.gather_nd(view, batch[:, None, None, :] + window_pixels[None])
            logits = model_logits(model, windows)

            def add(i, total):  # one at a time, like the official loop
                return i + 1, _add_window(total, logits[i], batch[i, 0] - top, batch[i, 1] - left)

            _, total = tf.while_loop(
                lambda i, _: i < tf.shape(batch)[0], add, (0, total), parallel_iterations=1
            )
            return start + batch_size, total

        _, total = tf.while_loop(
            lambda start, _: start < tf.shape(anchors)[0],
            call,
            (0, carried()),
            parallel_iterations=1,
        )
        return total

    def resized(block, top, left, prev_row, prev_col):
        """The output pixels whose later source row and column lie in `block`."""
        above, before = tf.shape(prev_row)[0], tf.shape(prev_col)[1]
        bottom, right = top + tf.shape(block)[0], left + tf.shape(block)[1]
        source = tf.concat(
            [prev_row[:, left - before : right], tf.concat([prev_col, block], axis=1)], axis=0
        )
        y0 = tf.reduce_sum(tf.cast(row_upper < top, tf.int32))
        y1 = tf.reduce_sum(tf.cast(row_upper < bottom, tf.int32))
        x0 = tf.reduce_sum(tf.cast(col_upper < left, tf.int32))
        x1 = tf.reduce_sum(tf.cast(col_upper < right, tf.int32))
        origin_row, origin_col = top - above, left - before
        out = _interpolate(
            source,
            row_lower[y0:y1] - origin_row,
            row_upper[y0:y1] - origin_row,
            row_weight[y0:y1],
            axis=0,
        )
        return _interpolate(
            out,
            col_lower[x0:x1] - origin_col,
            col_upper[x0:x1] - origin_col,
            col_weight[x0:x1],
            axis=1,
        )

    def row_band(band, row_carry, prev_row, store):
        top = row_edges[band]
        done_rows = row_edges[band + 1] - top
        extent_rows = rows[row_last[band] - 1] + size - top
        band_rows = rows[row_first[band] : row_last[band]]

        def tile(column, col_carry, prev_col, carry_parts, last_rows, collected):
            left = col_edges[column]
            done_cols = col_edges[column + 1] - left
            extent_cols = cols[col_last[column] - 1] + size - left

            def carried():
                """What earlier windows added: the columns carried from the previous
                block, and above the rest, the rows carried from the previous band, in
                a new buffer (`tf.concat` always allocates its output)."""
                start = left + tf.shape(col_carry)[1]
                above = _padded(
                    row_carry[:, start : left + extent_cols],
                    0,
                    0,
                    extent_rows,
                    left + extent_cols - start,
                )
                return tf.concat([col_carry, above], axis=1)

            grid = tf.meshgrid(band_rows, cols[col_first[column] : col_last[column]], indexing="ij")
            total = merge_windows(
                carried,
                top,
                left,
                tf.reshape(tf.stack(grid, axis=-1), (-1, 2)),
            )

            count = (
                _coverage(rows, top, top + done_rows, size)[:, None]
                * _coverage(cols, left, left + done_cols, size)[None, :]
            )
            block = total[:done_rows, :done_cols] / count[..., None]
            logits = tf.cond(
                resize,
                lambda: resized(block, top, left, prev_row, prev_col),
                lambda: block,
            )
            out_row, out_col = output_start(top, row_upper), output_start(left, col_upper)
            collected = sink.add(collected, column, logits, out_row, out_col)
            carry_parts = carry_parts.write(column, _swap01(total[done_rows:, :done_cols], 3))
            # gather copies the row: `block[-1]` would share, and keep, the block's buffer.
            last_rows = last_rows.write(column, tf.gather(block, done_rows - 1))
            return (
                column + 1,
                total[:, done_cols:],
                block[:, -1:],
                carry_parts,
                last_rows,
                collected,
            )

        new_array = lambda: tf.TensorArray(tf.float32, 0, dynamic_size=True, infer_shape=False)  # noqa: E731
        band_end = output_start(row_edges[band + 1], row_upper)
        collected = sink.open(store, band_end)
        state = (
            0,
            tf.zeros([extent_rows, 0, num_classes]),
            tf.zeros([done_rows, 0, num_classes]),
            new_array(),
            new_array(),
            collected,
        )
        invariants = (
            tf.TensorShape([]),
            logits_shape,
            logits_shape,
            tf.TensorShape(None),
            tf.TensorShape(None),
            tf.nest.map_structure(lambda _: tf.TensorShape(None), collected),
        )
        _, _, _, carry_parts, last_rows, collected = tf.while_loop(
            lambda column, *_: column < tf.size(col_first),
            tile,
            state,
            shape_invariants=invariants,
            parallel_iterations=1,
        )
        row_carry = tf.ensure_shape(_swap01(carry_parts.concat(), 3), logits_shape)
        last_row = tf.ensure_shape(last_rows.concat()[None], logits_shape)
        return (band + 1, row_carry, last_row), sink.close(collected), band_end

    state = (
        tf.constant(0),
        tf.zeros([0, width, num_classes]),
        tf.zeros([0, width, num_classes]),
    )
    return state, row_band, tf.size(row_first)


def _state_shapes(num_classes):
    """Shape invariants of a `_band_stepper` state: band, carried rows, last finished row."""
    logits = tf.TensorShape([None, None, num_classes])
    return tf.TensorShape([]), logits, logits


def _stream(
    model, view, out_size, window_size, window_stride, batch_size, num_classes, finish, specs
):
    """One view through `_band_stepper`, its band outputs joined into `(H, W, ...)` maps."""
    sink = _Pieces(finish, specs)
    state, step, num_bands = _band_stepper(
        model, view, out_size, window_size, window_stride, batch_size, num_classes, sink
    )

    def body(state, arrays):
        state, outputs, _ = step(*state, None)
        return state, [ta.write(state[0] - 1, out) for ta, out in zip(arrays, outputs)]

    arrays = [tf.TensorArray(dtype, 0, dynamic_size=True, infer_shape=False) for dtype, _ in specs]
    _, arrays = tf.while_loop(
        lambda state, _: state[0] < num_bands,
        body,
        (state, arrays),
        shape_invariants=(_state_shapes(num_classes), [tf.TensorShape(None)] * len(specs)),
        parallel_iterations=1,
    )
    return tuple(tf.ensure_shape(ta.concat(), [None] * r) for ta, (_, r) in zip(arrays, specs))


def _merge_views(steppers, out_size, num_classes, probabilities):
    """The class map (and probabilities) of the average of several views' probabilities.

    The views advance band by band, always the one whose final output rows
    end lowest, each adding the softmax of its blocks into one strip of
    output rows (`_Strip`); rows that every view has finished leave the
    strip as class indices (and probabilities). The strip spans the output
    rows between the view furthest behind and the one furthest ahead:
    about one band (`window_stride` view rows) of the coarsest view, which
    for images only one or two windows tall is the whole image.

    Args:
        steppers: per view, `(state, step, num_bands)` of `_band_stepper`
            with a `_Strip` sink.
        out_size: `(H, W)` int32.
        num_classes: int K.
        probabilities: optional dtype of the averaged probabilities.

    Returns:
        `(classes, probs)` as in `segment`.
    """
    count = len(steppers)
    height, width = out_size[0], out_size[1]

    def advance(index, states, strip, top):
        state, (strip, _), end = steppers[index][1](*states[index], (strip, top))
        strip = tf.ensure_shape(strip, (None, None, num_classes))
        states = list(states)
        states[index] = state
        return tuple(states), strip, end

    def body(states, ends, strip, top, classes, probs):
        index = tf.argmin(ends, output_type=tf.int32)  # the view furthest behind
        branches = [lambda i=i: advance(i, states, strip, top) for i in range(count)]
        states, strip, end = tf.switch_case(index, branches)
        ends = tf.tensor_scatter_nd_update(ends, [[index]], [end])
        done = tf.reduce_min(ends) - top  # rows every view has finished
        final = strip[:done]
        classes = classes.write(classes.size(), tf.argmax(final, axis=-1, output_type=tf.int32))
        if probabilities:
            probs = probs.write(probs.size(), tf.cast(final / count, probabilities))
        return states, ends, strip[done:], top + done, classes, probs

    array = lambda dtype: tf.TensorArray(dtype, 0, dynamic_size=True, infer_shape=False)  # noqa: E731
    state = (
        tuple(stepper[0] for stepper in steppers),
        tf.zeros([count], tf.int32),
        tf.zeros([0, width, num_classes]),
        tf.constant(0),
        array(tf.int32),
        array(probabilities or tf.float32),
    )
    invariants = (
        tuple(_state_shapes(num_classes) for _ in steppers),
        tf.TensorShape([count]),
        tf.TensorShape([None, None, num_classes]),
        tf.TensorShape([]),
        tf.TensorShape(None),
        tf.TensorShape(None),
    )
    _, _, _, _, classes, probs = tf.while_loop(
        lambda *state: state[3] < height,
        body,
        state,
        shape_invariants=invariants,
        parallel_iterations=1,
    )
    classes = tf.ensure_shape(classes.concat(), [None, None])
    return classes, (tf.ensure_shape(probs.concat(), [None, None, None]) if probabilities else None)


def _window_view(image, window_size):
    """`image`, upscaled as the official `resize()` when its short side is below the window."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    new_height, new_width = upscaled_shape(height, width, window_size)
    return tf.cond(
        tf.logical_or(new_height != height, new_width != width),
        lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
        lambda: image,
    )


def sliding_window_logits(model, image, window_size, window_stride, batch_size=None):
    """Window-averaged logits at the (possibly upscaled) windowing resolution.

    Holds the whole `(H', W', K)` map, so it is meant for tests and analysis;
    `segment` never holds it.

    Args:
        model: a Keras model mapping `(B, h, w, 3)` to logits `(B, h, w, K)`.
        image: float `(H, W, 3)` normalized image.
        window_size: int, window side (the training crop size).
        window_stride: int, step between windows.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.

    Returns:
        float32 `(H', W', K)` averaged logits, where `(H', W')` is
        `upscaled_shape(H, W, window_size)`.
    """
    num_classes = num_classes_of(model)
    _check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes, batch_size)
    view = _window_view(_as_single_image(image), window_size)
    (logits,) = _stream(
        model,
        view,
        tf.shape(view)[:2],
        window_size,
        window_stride,
        batch_size,
        num_classes,
        lambda logits: (logits,),
        [(tf.float32, 3)],
    )
    return logits


def segment(
    model,
    image,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    base_size=None,
    batch_size=None,
    probabilities=None,
):
    """Class map (and probabilities) of one image by the paper's sliding-window inference.

    The official `segm.model.utils.inference` (Segmenter, ICCV 2021, section
    4.2), for each view of the image: an image whose short side is below
    `window_size` is first upscaled bilinearly so the short side equals the
    window; square windows are taken at `window_anchors` on both axes;
    window logits are summed and divided by the number of windows covering
    each pixel; the averaged logits are resized bilinearly (half-pixel
    centres, no antialiasing, as torch `align_corners=False`) to the input
    size; the softmax comes last. The views are the image rescaled to each
    of `scales` (see `rescaled_shape`) and, with `flip`, their left-right
    mirrors (mirrored back); their probabilities are averaged, and the class
    map is their argmax.

    Memory: windows are merged band by band (see `_band_stepper`), so one
    view never holds all window logits nor a `(H, W, K)` logits map. Several
    views (`flip` or more than one scale) advance band by band together, and
    their probabilities are summed in a strip of output rows that leaves as
    soon as every view has finished it (see `_merge_views`).

    Runs eagerly or inside a `tf.function` with unknown height and width.

    Args:
        model: a Keras model mapping normalized images `(B, h, w, 3)` to
            logits `(B, h, w, K)`, e.g. a `keras_segmenter.Segmenter`.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image
            (see `ImageNormalization`).
        window_size: int, window side, the training crop size.
        window_stride: int, step between windows.
        scales: sequence of float ratios. Defaults to `(1.0,)`.
        flip: bool, also average the left-right mirrored prediction.
            Defaults to `False`.
        base_size: optional `(long, short)`, rescale as the official test
            pipeline (see `rescaled_shape`); `None` scales the input size.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call` (about 256 MB of logits per call).
        probabilities: optional dtype (e.g. `tf.float32`, `tf.float16`):
            also return the probabilities in it. Defaults to `None` (class
            map only).

    Returns:
        `(classes, probs)`: int32 `(H, W)` class indices, and `(H, W, K)`
        probabilities of dtype `probabilities` (`None` without it).

    Example:

    >>> backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=1,
    ...                           num_heads=2, mlp_dim=32, image_size=32)
    >>> model = ks.Segmenter(backbone, num_classes=4)
    >>> classes, probs = segment(model, np.zeros((20, 70, 3), "float32"), 32, 24,
    ...                          probabilities=tf.float16)
    >>> classes.shape, probs.dtype  # windowed at 32x112, then back to 20x70
    (TensorShape([20, 70]), tf.float16)
    """
    num_classes = num_classes_of(model)
    _check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes, batch_size)
    if not scales or any(not (isinstance(s, (int, float)) and s > 0) for s in scales):
        raise ValueError(f"`scales` must be positive numbers. Received: scales={scales!r}")
    image = _as_single_image(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.stack([height, width])

    def window_args(view):
        view = _window_view(view, window_size)
        return model, view, size, window_size, window_stride, batch_size, num_classes

    def classes_of(probs):
        return tf.argmax(probs, axis=-1, output_type=tf.int32)

    views = []
    for scale in scales:
        new_height, new_width = rescaled_shape(height, width, scale, base_size)
        scaled = tf.cond(
            tf.logical_or(new_height != height, new_width != width),
            lambda: tf.image.resize(image, tf.stack([new_height, new_width]), "bilinear"),
            lambda: image,
        )
        views += [(scaled, False)] + ([(tf.reverse(scaled, axis=[1]), True)] if flip else [])

    if len(views) == 1:

        def finish(logits):  # softmax is monotonic: the class map is the logits' argmax
            classes = (classes_of(logits),)
            if not probabilities:
                return classes
            return classes + (tf.cast(tf.nn.softmax(logits, axis=-1), probabilities),)

        specs = [(tf.int32, 2)] + ([(tf.as_dtype(probabilities), 3)] if probabilities else [])
        outputs = _stream(*window_args(views[0][0]), finish, specs)
        classes, probs = outputs[0], (outputs[1] if probabilities else None)
    else:
        steppers = [
            _band_stepper(*window_args(view), _Strip(width, flipped)) for view, flipped in views
        ]
        classes, probs = _merge_views(steppers, size, num_classes, probabilities)
    if probs is not None:
        probs = tf.ensure_shape(probs, (None, None, num_classes))
    return classes, probs


def sliding_window_inference(
    model, image, window_size, window_stride, num_classes=None, batch_size=None, flip=False
):
    """Class probabilities of one image by sliding-window inference.

    `segment` at one scale, returning float32 probabilities (the official
    `inference()` output).

    Args:
        model: a Keras model mapping normalized images `(B, h, w, 3)` to
            logits `(B, h, w, K)`, e.g. a `keras_segmenter.Segmenter`.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image.
        window_size: int, window side, the training crop size.
        window_stride: int, step between windows.
        num_classes: optional int K, checked against the model's.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.
        flip: bool, also average the left-right flipped prediction.
            Defaults to `False`.

    Returns:
        float32 `(H, W, K)` softmax probabilities.

    Example:

    >>> backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=1,
    ...                           num_heads=2, mlp_dim=32, image_size=32)
    >>> model = ks.Segmenter(backbone, num_classes=4)
    >>> probs = sliding_window_inference(model, np.zeros((20, 70, 3), "float32"), 32, 24)
    >>> probs.shape  # upscaled to 32x112 for the windows, then back
    TensorShape([20, 70, 4])
    """
    if num_classes is not None and num_classes != num_classes_of(model):
        raise ValueError(
            f"`num_classes` differs from the model's {num_classes_of(model)}. "
            f"Received: num_classes={num_classes}"
        )
    return segment(
        model,
        image,
        window_size,
        window_stride,
        flip=flip,
        batch_size=batch_size,
        probabilities=tf.float32,
    )[1]


def rescaled_shape(height, width, scale=1.0, base_size=None):
    """Image size for one evaluation scale.

    Without `base_size`, the image is scaled by `scale`:
    `int(H * scale + 0.5), int(W * scale + 0.5)`. With `base_size = (long,
    short)` this is the official test resize (mmseg `MultiScaleFlipAug` with
    `img_scale=base_size` and `Resize(keep_ratio=True)`, i.e. mmcv
    `rescale_size`): the image is scaled by the largest factor that keeps its
    long side at most `int(long * scale)` and its short side at most
    `int(short * scale)`, e.g. `(2048, 512)` brings ADE20K images to a short
    side of 512.

    Args:
        height: scalar int tensor or int.
        width: scalar int tensor or int.
        scale: float, the scale ratio. Defaults to 1.0.
        base_size: optional `(long, short)` ints, the dataset's `img_scale`.

    Returns:
        `(new_height, new_width)` as scalar int32 tensors.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    if base_size is None:
        factor = tf.constant(scale, tf.float64)
    else:
        long_bound = float(int(max(base_size) * scale))
        short_bound = float(int(min(base_size) * scale))
        factor = tf.minimum(long_bound / tf.maximum(h, w), short_bound / tf.minimum(h, w))
    new_height = tf.cast(tf.floor(h * factor + 0.5), tf.int32)
    new_width = tf.cast(tf.floor(w * factor + 0.5), tf.int32)
    return new_height, new_width


def multi_scale_inference(
    model,
    image,
    window_size,
    window_stride,
    scales=OFFICIAL_SCALES,
    flip=True,
    base_size=None,
    batch_size=None,
):
    """Multi-scale (and flip) sliding-window probabilities of one image.

    `segment` with the paper's scales: for each scale the image is resized
    bilinearly to `rescaled_shape`, windowed (with its mirror when `flip`),
    and the probabilities, resized to the input size before the softmax as
    in the official `merge_windows`, are averaged over all scales and flips
    (Segmenter, ICCV 2021, section 4.2, "multi-scale").

    Args:
        model: a Keras segmentation model returning logits.
        image: float `(H, W, 3)` or `(1, H, W, 3)` normalized image.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float ratios. Defaults to
            `(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`.
        flip: bool, add left-right flipped predictions. Defaults to `True`.
        base_size: optional `(long, short)`, rescale as the official test
            pipeline (see `rescaled_shape`); `None` scales the input size.
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.

    Returns:
        float32 `(H, W, K)` averaged probabilities.
    """
    return segment(
        model, image, window_size, window_stride, scales, flip, base_size, batch_size, tf.float32
    )[1]


def _traced(model, window_size, window_stride, scales, flip, base_size, batch_size, probabilities):
    _check_window(window_size, window_stride, batch_size)
    batch_size = windows_per_call(window_size, num_classes_of(model), batch_size)
    scales = tuple(float(s) for s in scales)

    @tf.function(
        input_signature=[tf.TensorSpec((None, None, 3), tf.float32)], reduce_retracing=True
    )
    def infer(image):
        classes, probs = segment(
            model,
            image,
            window_size,
            window_stride,
            scales,
            flip,
            base_size,
            batch_size,
            tf.float32 if probabilities else None,
        )
        return probs if probabilities else classes

    return infer


def make_inference_function(
    model,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    base_size=None,
    batch_size=None,
):
    """A `tf.function` from one normalized image `(H, W, 3)` to `(H, W, K)` probabilities.

    Traced once with unknown height and width, so images of every size reuse
    the same graph. `scales=(1.0,)`, `flip=False` and `base_size=None` is
    plain `sliding_window_inference`. For class maps, `make_segment_function`
    never holds the `(H, W, K)` map.

    Args:
        model: a Keras segmentation model returning logits.
        window_size: int, window side.
        window_stride: int, step between windows.
        scales: sequence of float scale ratios. Defaults to `(1.0,)`.
        flip: bool, flip averaging. Defaults to `False`.
        base_size: optional `(long, short)`, official test resize (see
            `rescaled_shape`).
        batch_size: int, windows per model call. Defaults to
            `windows_per_call`.

    Returns:
        A `tf.function` taking a float32 `(H, W, 3)` tensor.
    """
    return _traced(model, window_size, window_stride, scales, flip, base_size, batch_size, True)


def make_segment_function(
    model,
    window_size,
    window_stride,
    scales=(1.0,),
    flip=False,
    base_size=None,
    batch_size=None,
):
    """A `tf.function` from one normalized image `(H, W, 3)` to its int32 class map `(H, W)`.

    `segment` traced once for unknown height and width; the arguments are
    those of `make_inference_function`.
    """
    return _traced(model, window_size, window_stride, scales, flip, base_size, batch_size, False)


def segment_image(
    model,
    normalize,
    image,
    window_size,
    window_stride,
    whole=False,
    batch_size=None,
    probabilities=False,
):
    """Class map and, if asked, probabilities of one RGB image, with TensorFlow ops.

    The graph shared by `predict` and the SavedModel export: normalization,
    then the sliding window of `segment` (which never holds all
    window logits nor a full-resolution `(H, W, K)` float map) or, with
    `whole=True`, one pass of the model over the whole image (which does).

    Probabilities come as float16: 2 bytes per pixel and class (a 12 MP
    photo with 150 classes: 3.6 GB), half of float32, and nothing a user
    needs is lost: the error is below 2.5e-4 (half a float16 step below 1),
    probabilities down to 6e-8 stay non-zero (so log-probabilities and
    entropies stay finite), and the class map is the float32 argmax.
    uint8 quantization would halve it again but round every probability
    below 0.002 to zero.

    Args:
        model: a Keras segmentation model returning logits.
        normalize: a layer mapping [0, 255] RGB to the model's input
            (`ImageNormalization(model.normalization)`).
        image: `(H, W, 3)` tensor with values in [0, 255] (uint8 or float).
        window_size: int, sliding window side.
        window_stride: int, step between windows.
        whole: bool, run the model on the whole image instead of windows.
        batch_size: int, windows per model call (default: see
            `inference.windows_per_call`).
        probabilities: bool, also return the probabilities.

    Returns:
        `(classes, probs)`: int32 `(H, W)`, and float16 `(H, W, K)` or `None`.
    """
    normalized = tf.cast(normalize(image[None]), tf.float32)[0]
    dtype = tf.float16 if probabilities else None
    if not whole:
        return segment(
            model,
            normalized,
            window_size,
            window_stride,
            batch_size=batch_size,
            probabilities=dtype,
        )
    probs = tf.nn.softmax(model_logits(model, normalized[None])[0], axis=-1)
    classes = tf.argmax(probs, axis=-1, output_type=tf.int32)
    return classes, (tf.cast(probs, dtype) if probabilities else None)


# One traced predictor per (model, settings): repeated calls reuse the graph.
_PREDICTORS = weakref.WeakKeyDictionary()


def make_predictor(
    model, window_size=None, window_stride=None, whole=False, batch_size=None, probabilities=False
):
    """A `tf.function` from a uint8 RGB image `(H, W, 3)` to its int32 class map `(H, W)`.

    With `probabilities=True` it returns `(class map, float16 probabilities)`.
    Traced once for unknown height and width, and kept per model and
    settings, so repeated calls reuse the graph. Arguments as in
    `keras_segmenter.predict.predict`.
    """
    from keras_segmenter.layers.normalization import ImageNormalization

    if whole:
        window_size = window_stride = 1
    else:
        window_size, window_stride = default_window(model, window_size, window_stride)
    _check_window(window_size, window_stride, batch_size)
    key = (window_size, window_stride, bool(whole), batch_size, bool(probabilities))
    cache = _PREDICTORS.setdefault(model, {})
    if key not in cache:
        normalize = ImageNormalization(getattr(model, "normalization", "vit"))

        @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])
        def predictor(image):
            classes, probs = segment_image(
                model,
                normalize,
                image,
                window_size,
                window_stride,
                whole,
                batch_size,
                probabilities,
            )
            return (classes, probs) if probabilities else classes

        cache[key] = predictor
    return cache[key]
