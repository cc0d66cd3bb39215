"""A view's band outputs joined into full maps (`stream`), and several views merged
band by band into one class map (`ViewsMerge`)."""

import tensorflow as tf

from keras_segmenter.inference.band_merge import BandMerge, Pieces, state_shapes


def stream(
    model, view, out_size, window_size, window_stride, batch_size, num_classes, finish, specs
):
    """One view through `BandMerge`, its band outputs joined into `(H, W, ...)` maps."""
    merge = BandMerge(
        model,
        view,
        out_size,
        window_size,
        window_stride,
        batch_size,
        num_classes,
        Pieces(finish, specs),
    )

    def body(state, arrays):
        state, outputs, _ = merge.step(*state, None)
        return state, [ta.write(state[0] - 1, out) for ta, out in zip(arrays, outputs)]

    arrays = [tf.TensorArray(dtype, 0, dynamic_size=True, infer_shape=False) for dtype, _ in specs]
    _, arrays = tf.while_loop(
        lambda state, _: state[0] < merge.num_bands,
        body,
        (merge.initial_state(), arrays),
        shape_invariants=(state_shapes(num_classes), [tf.TensorShape(None)] * len(specs)),
        parallel_iterations=1,
    )
    return tuple(tf.ensure_shape(ta.concat(), [None] * r) for ta, (_, r) in zip(arrays, specs))


def _array(dtype):
    return tf.TensorArray(dtype, 0, dynamic_size=True, infer_shape=False)


class ViewsMerge:
    """The class map (and probabilities) of the average of several views' probabilities.

    The views advance band by band, always the one whose final output rows
    end lowest, each adding the softmax of its blocks into one strip of
    output rows (`Strip`); rows that every view has finished leave the
    strip as class indices (and probabilities). The strip spans the output
    rows between the view furthest behind and the one furthest ahead:
    about one band (`window_stride` view rows) of the coarsest view, which
    for images only one or two windows tall is the whole image.

    Args:
        merges: per view, a `BandMerge` with a `Strip` sink.
        out_size: `(H, W)` int32.
        num_classes: int K.
        probabilities: optional dtype of the averaged probabilities.
    """

    def __init__(self, merges, out_size, num_classes, probabilities):
        self.merges, self.out_size = merges, out_size
        self.num_classes, self.probabilities = num_classes, probabilities

    def run(self):
        """`(classes, probs)` as in `segment`."""
        count, num_classes = len(self.merges), self.num_classes
        state = (
            tuple(merge.initial_state() for merge in self.merges),
            tf.zeros([count], tf.int32),
            tf.zeros([0, self.out_size[1], num_classes]),
            tf.constant(0),
            _array(tf.int32),
            _array(self.probabilities or tf.float32),
        )
        invariants = (
            tuple(state_shapes(num_classes) for _ in self.merges),
            tf.TensorShape([count]),
            tf.TensorShape([None, None, num_classes]),
            tf.TensorShape([]),
            tf.TensorShape(None),
            tf.TensorShape(None),
        )
        _, _, _, _, classes, probs = tf.while_loop(
            lambda *state: state[3] < self.out_size[0],
            self._body,
            state,
            shape_invariants=invariants,
            parallel_iterations=1,
        )
        classes = tf.ensure_shape(classes.concat(), [None, None])
        if not self.probabilities:
            return classes, None
        return classes, tf.ensure_shape(probs.concat(), [None, None, None])

    def _advance(self, index, states, strip, top):
        state, (strip, _), end = self.merges[index].step(*states[index], (strip, top))
        strip = tf.ensure_shape(strip, (None, None, self.num_classes))
        states = list(states)
        states[index] = state
        return tuple(states), strip, end

    def _body(self, states, ends, strip, top, classes, probs):
        index = tf.argmin(ends, output_type=tf.int32)  # the view furthest behind
        branches = [
            lambda i=i: self._advance(i, states, strip, top) for i in range(len(self.merges))
        ]
        states, strip, end = tf.switch_case(index, branches)
        ends = tf.tensor_scatter_nd_update(ends, [[index]], [end])
        done = tf.reduce_min(ends) - top  # rows every view has finished
        final = strip[:done]
        classes = classes.write(classes.size(), tf.argmax(final, axis=-1, output_type=tf.int32))
        if self.probabilities:
            probs = probs.write(probs.size(), tf.cast(final / len(self.merges), self.probabilities))
        return states, ends, strip[done:], top + done, classes, probs
