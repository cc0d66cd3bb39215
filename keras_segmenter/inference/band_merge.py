"""The band-wise merge of one view's sliding windows (`BandMerge`) and where its
finished blocks go (`Pieces`, `Strip`)."""

import tensorflow as tf

from keras_segmenter.inference.model_call import model_logits
from keras_segmenter.inference.tensor_ops import (
    add_block,
    add_window,
    bands,
    coverage,
    interpolate,
    padded,
    resize_weights,
    swap01,
)


class Pieces:
    """Band outputs of one view: `finish` of each block, joined over the output width."""

    def __init__(self, finish, specs):
        self.finish, self.specs = finish, specs

    def open(self, _store, _band_end):
        return [tf.TensorArray(d, 0, dynamic_size=True, infer_shape=False) for d, _ in self.specs]

    def add(self, pieces, column, logits, _row, _col):
        outs = self.finish(logits)
        return [ta.write(column, swap01(o, r)) for ta, o, (_, r) in zip(pieces, outs, self.specs)]

    def close(self, pieces):
        return [
            tf.ensure_shape(swap01(piece.concat(), r), [None] * r)
            for piece, (_, r) in zip(pieces, self.specs)
        ]


class Strip:
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
        return add_block(strip, probs, row - top, col), top

    def close(self, store):
        return store


def state_shapes(num_classes):
    """Shape invariants of a `BandMerge` state: band, carried rows, last finished row."""
    logits = tf.TensorShape([None, None, num_classes])
    return tf.TensorShape([]), logits, logits


def _output_start(index, upper):
    """The first output row (column) whose later source row (column) is `index` or after."""
    return tf.reduce_sum(tf.cast(upper < index, tf.int32))


def _new_array():
    return tf.TensorArray(tf.float32, 0, dynamic_size=True, infer_shape=False)


class BandMerge:
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

    `initial_state()` is the loop state before the first band;
    `step(*state, store) -> (state, store, end)` merges the next window row,
    where `store` is what `sink.close` returns (for `Pieces` the output rows
    that band finished, over the whole width) and `end` the output row up to
    which this view is final; `num_bands` is the number of steps.

    Args:
        model: maps `(B, window, window, 3)` to logits `(B, window, window, K)`.
        view: float32 `(h, w, 3)`, both sides at least `window_size`.
        out_size: `(H, W)` int32, the size the averaged logits are resized to.
        window_size, window_stride, batch_size: ints.
        num_classes: int K.
        sink: `Pieces` or `Strip`, collects the finished float32 logits
            `(rows, cols, K)` at the output size of each block.
    """

    def __init__(
        self, model, view, out_size, window_size, window_stride, batch_size, num_classes, sink
    ):
        self.model, self.view, self.sink = model, view, sink
        self.size, self.batch_size, self.num_classes = window_size, batch_size, num_classes
        height, width = tf.shape(view)[0], tf.shape(view)[1]
        self.width = width
        self.rows, self.row_first, self.row_last, self.row_edges = bands(
            height, window_size, window_stride, 1
        )
        self.cols, self.col_first, self.col_last, self.col_edges = bands(
            width, window_size, window_stride, batch_size
        )
        self.resize = tf.logical_or(height != out_size[0], width != out_size[1])
        self.row_lower, self.row_upper, self.row_weight = resize_weights(out_size[0], height)
        self.col_lower, self.col_upper, self.col_weight = resize_weights(out_size[1], width)
        offsets = tf.range(window_size)
        self.window_pixels = tf.stack(tf.meshgrid(offsets, offsets, indexing="ij"), axis=-1)
        self.logits_shape = tf.TensorShape([None, None, num_classes])
        self.num_bands = tf.size(self.row_first)

    def initial_state(self):
        return (
            tf.constant(0),
            tf.zeros([0, self.width, self.num_classes]),
            tf.zeros([0, self.width, self.num_classes]),
        )

    def step(self, band, row_carry, prev_row, store):
        """Merges window row `band`; see the class docstring."""
        top = self.row_edges[band]
        done_rows = self.row_edges[band + 1] - top
        extent_rows = self.rows[self.row_last[band] - 1] + self.size - top
        band_rows = self.rows[self.row_first[band] : self.row_last[band]]
        context = (top, done_rows, extent_rows, band_rows, row_carry, prev_row)
        band_end = _output_start(self.row_edges[band + 1], self.row_upper)
        collected = self.sink.open(store, band_end)
        state = (
            0,
            tf.zeros([extent_rows, 0, self.num_classes]),
            tf.zeros([done_rows, 0, self.num_classes]),
            _new_array(),
            _new_array(),
            collected,
        )
        invariants = (
            tf.TensorShape([]),
            self.logits_shape,
            self.logits_shape,
            tf.TensorShape(None),
            tf.TensorShape(None),
            tf.nest.map_structure(lambda _: tf.TensorShape(None), collected),
        )
        _, _, _, carry_parts, last_rows, collected = tf.while_loop(
            lambda column, *_: column < tf.size(self.col_first),
            lambda *state: self._tile(context, *state),
            state,
            shape_invariants=invariants,
            parallel_iterations=1,
        )
        row_carry = tf.ensure_shape(swap01(carry_parts.concat(), 3), self.logits_shape)
        last_row = tf.ensure_shape(last_rows.concat()[None], self.logits_shape)
        return (band + 1, row_carry, last_row), self.sink.close(collected), band_end

    def _tile(self, context, column, col_carry, prev_col, carry_parts, last_rows, collected):
        """Merges the windows of one model call in the band and hands the finished block on."""
        top, done_rows, extent_rows, band_rows, row_carry, prev_row = context
        cols, size = self.cols, self.size
        left = self.col_edges[column]
        done_cols = self.col_edges[column + 1] - left
        extent_cols = cols[self.col_last[column] - 1] + size - left
        grid = tf.meshgrid(
            band_rows, cols[self.col_first[column] : self.col_last[column]], indexing="ij"
        )
        total = self._merge_windows(
            lambda: _carried(row_carry, col_carry, left, extent_rows, extent_cols),
            top,
            left,
            tf.reshape(tf.stack(grid, axis=-1), (-1, 2)),
        )
        count = (
            coverage(self.rows, top, top + done_rows, size)[:, None]
            * coverage(cols, left, left + done_cols, size)[None, :]
        )
        block = total[:done_rows, :done_cols] / count[..., None]
        logits = tf.cond(
            self.resize,
            lambda: self._resized(block, top, left, prev_row, prev_col),
            lambda: block,
        )
        out_row = _output_start(top, self.row_upper)
        out_col = _output_start(left, self.col_upper)
        collected = self.sink.add(collected, column, logits, out_row, out_col)
        carry_parts = carry_parts.write(column, swap01(total[done_rows:, :done_cols], 3))
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

    def _merge_windows(self, carried, top, left, anchors):
        """`carried()`, the sums of earlier windows over the block at `top`, `left`,
        plus the logits of the windows at `anchors`, added in anchor order into the new
        buffer that `carried()` returns (so a block never exists twice)."""
        _, total = tf.while_loop(
            lambda start, _: start < tf.shape(anchors)[0],
            lambda start, total: self._call(anchors, top, left, start, total),
            (0, carried()),
            parallel_iterations=1,
        )
        return total

    def _call(self, anchors, top, left, start, total):
        """One model call on the windows at `anchors[start:start + batch_size]`, added."""
        batch = anchors[start : start + self.batch_size]
        # The model runs once `total` exists: the temporaries that build it are then
        # freed, and never live beside the window logits.
        with tf.control_dependencies([total]):
            windows = tf.gather_nd(self.view, batch[:, None, None, :] + self.window_pixels[None])
        logits = model_logits(self.model, windows)

        def add(i, total):  # one at a time, like the official loop
            return i + 1, add_window(total, logits[i], batch[i, 0] - top, batch[i, 1] - left)

        _, total = tf.while_loop(
            lambda i, _: i < tf.shape(batch)[0], add, (0, total), parallel_iterations=1
        )
        return start + self.batch_size, total

    def _resized(self, block, top, left, prev_row, prev_col):
        """The output pixels whose later source row and column lie in `block`."""
        above, before = tf.shape(prev_row)[0], tf.shape(prev_col)[1]
        bottom, right = top + tf.shape(block)[0], left + tf.shape(block)[1]
        source = tf.concat(
            [prev_row[:, left - before : right], tf.concat([prev_col, block], axis=1)], axis=0
        )
        row_upper, col_upper = self.row_upper, self.col_upper
        y0 = tf.reduce_sum(tf.cast(row_upper < top, tf.int32))
        y1 = tf.reduce_sum(tf.cast(row_upper < bottom, tf.int32))
        x0 = tf.reduce_sum(tf.cast(col_upper < left, tf.int32))
        x1 = tf.reduce_sum(tf.cast(col_upper < right, tf.int32))
        origin_row, origin_col = top - above, left - before
        out = interpolate(
            source,
            self.row_lower[y0:y1] - origin_row,
            row_upper[y0:y1] - origin_row,
            self.row_weight[y0:y1],
            axis=0,
        )
        return interpolate(
            out,
            self.col_lower[x0:x1] - origin_col,
            col_upper[x0:x1] - origin_col,
            self.col_weight[x0:x1],
            axis=1,
        )


def _carried(row_carry, col_carry, left, extent_rows, extent_cols):
    """What earlier windows added: the columns carried from the previous
    block, and above the rest, the rows carried from the previous band, in
    a new buffer (`tf.concat` always allocates its output)."""
    start = left + tf.shape(col_carry)[1]
    above = padded(
        row_carry[:, start : left + extent_cols],
        0,
        0,
        extent_rows,
        left + extent_cols - start,
    )
    return tf.concat([col_carry, above], axis=1)
