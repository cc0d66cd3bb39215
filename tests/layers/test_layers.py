import numpy as np
import pytest

import keras_segmenter  # noqa: F401  (registers the layers for loading)
from keras_segmenter import layers
from keras_segmenter.layers.backend import fusing
from tests.testing import check_layer

RNG = np.random.default_rng(0)


def tokens(batch=2, length=7, dim=16):
    return RNG.normal(size=(batch, length, dim)).astype("float32")


def images(batch=2, height=16, width=24, channels=3):
    return RNG.normal(size=(batch, height, width, channels)).astype("float32")


def test_patch_embedding(tmp_path):
    layer = layers.PatchEmbedding(patch_size=8, hidden_dim=16, name="patch_embedding")
    check_layer(layer, [images()], tmp_path, expected_shape=(2, 2, 3, 16))


def test_prefix_tokens_put_class_and_distillation_tokens_first(tmp_path):
    layer = layers.PrefixTokens(num_tokens=2, name="prefix_tokens")
    grid = images(height=2, width=3, channels=16)
    out = check_layer(layer, [grid], tmp_path, expected_shape=(2, 8, 16))
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(layer.cls_token.numpy()[0], (2, 16)))
    np.testing.assert_array_equal(out[:, 1], np.broadcast_to(layer.dist_token.numpy()[0], (2, 16)))
    np.testing.assert_array_equal(out[:, 2:], grid.reshape(2, 6, 16))


def test_position_embedding_is_resized_to_the_input_grid(tmp_path):
    layer = layers.PositionEmbedding(
        grid_size=(2, 2), num_prefix_tokens=1, name="position_embedding"
    )
    grid = images(height=3, width=5, channels=16)
    x = tokens(length=1 + 15)
    out = check_layer(layer, [x, grid], tmp_path, expected_shape=(2, 16, 16))
    table = layer.position_embedding.numpy()
    np.testing.assert_allclose(
        out[:, 0] - x[:, 0], np.broadcast_to(table[0, 0], (2, 16)), atol=1e-6
    )
    resized = layers.resize_position_embedding(table, (2, 2), (3, 5), 1).numpy()
    np.testing.assert_allclose(out - x, np.broadcast_to(resized, out.shape), atol=1e-6)


def test_resize_position_embedding_is_identity_on_the_same_grid():
    table = RNG.normal(size=(1, 2 + 12, 8)).astype("float32")
    np.testing.assert_array_equal(layers.resize_position_embedding(table, (3, 4), (3, 4), 2), table)


def test_drop_path_round_trip_and_identity_at_inference(tmp_path):
    layer = layers.DropPath(rate=0.3, name="drop_path")
    x = tokens()
    np.testing.assert_array_equal(check_layer(layer, [x], tmp_path), x)


def test_drop_path_keeps_the_expected_fraction_of_samples():
    rate = 0.3
    layer = layers.DropPath(rate=rate, seed=1)
    x = np.ones((4000, 3, 2), "float32")
    out = np.asarray(layer(x, training=True))
    kept = out[:, 0, 0] != 0
    assert abs(kept.mean() - (1 - rate)) < 0.03
    # A sample is dropped or kept whole, and kept samples are rescaled.
    np.testing.assert_allclose(out[kept], 1 / (1 - rate), rtol=1e-6)
    np.testing.assert_array_equal(out[~kept], 0)


def test_drop_path_keeps_the_rate_under_bfloat16():
    # bfloat16 uniform draws (multiples of 1/128) kept 122 / 128 = 0.953 at rate 0.05.
    rate, n = 0.05, 1_000_000
    out = layers.DropPath(rate=rate, seed=1, dtype="bfloat16")(np.ones((n, 1)), training=True)
    kept = (np.asarray(out).astype("float32") != 0).mean()
    assert abs(kept - (1 - rate)) < 6 * np.sqrt(rate * (1 - rate) / n)  # 6 binomial std


def test_drop_path_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="Received: rate=1.0"):
        layers.DropPath(rate=1.0)


def test_dropout_round_trip_and_identity_at_inference(tmp_path):
    layer = layers.Dropout(rate=0.1, name="dropout")
    x = tokens()
    np.testing.assert_array_equal(check_layer(layer, [x], tmp_path), x)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dropout_drops_the_rate_and_rescales_the_rest(dtype):
    rate, n = 0.1, 200 * 6 * 301  # an odd last axis: its second half-draw is cut off
    out = np.asarray(
        layers.Dropout(rate, seed=1, dtype=dtype)(np.ones((200, 6, 301), "float32"), training=True)
    ).astype("float32")
    kept = out != 0
    # 16-bit decisions: keep probability 1 - round(0.1 * 2**16) / 2**16; 6 binomial std.
    p = 1 - round(rate * 2**16) / 2**16
    assert abs(kept.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    scale = np.float32(1 / (1 - rate)).astype(dtype).astype("float32")
    np.testing.assert_array_equal(out[kept], scale)


def test_dropout_draws_new_masks_each_call_and_rejects_a_bad_rate():
    layer = layers.Dropout(0.5, seed=3)
    x = np.ones((4, 64), "float32")
    assert (np.asarray(layer(x, training=True)) != np.asarray(layer(x, training=True))).any()
    with pytest.raises(ValueError, match="Received: rate=1.0"):
        layers.Dropout(rate=1.0)


def test_multi_head_self_attention(tmp_path):
    layer = layers.MultiHeadSelfAttention(hidden_dim=16, num_heads=2, name="attention")
    x = tokens()
    check_layer(layer, [x], tmp_path, expected_shape=x.shape)
    weights = np.asarray(layer.attention_weights(x))
    assert weights.shape == (2, 2, 7, 7)
    np.testing.assert_allclose(weights.sum(-1), 1, atol=1e-5)


@pytest.mark.parametrize("with_dropout", [False, True])
def test_softmax_attention_gradient_is_the_softmax_gradient(with_dropout):
    import tensorflow as tf

    q, k, v = (tf.constant(RNG.normal(size=(2, 3, 9, 4))) for _ in range(3))  # float64
    dropout = tf.constant(RNG.integers(0, 2, (2, 3, 9, 9)) / 0.5) if with_dropout else None
    upstream = tf.constant(RNG.normal(size=(2, 3, 9, 4)))

    def plain(q, k, v):
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True))
        return tf.matmul(weights if dropout is None else weights * dropout, v)

    grads = []
    for attend in (plain, lambda q, k, v: layers.softmax_attention(q, k, v, dropout)):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = attend(q, k, v)
        grads.append([out] + tape.gradient(out, [q, k, v], output_gradients=upstream))
    # The same formula in float64, summed in another order: round-off of
    # a few eps times the 9-term sums' magnitude (values of order 1).
    for written_out, autodiff in zip(grads[1], grads[0]):
        np.testing.assert_allclose(written_out, autodiff, rtol=0, atol=1e-13)


def test_multi_head_self_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="num_heads=3"):
        layers.MultiHeadSelfAttention(hidden_dim=16, num_heads=3)


def test_transformer_block(tmp_path):
    layer = layers.TransformerBlock(16, 2, 32, dropout=0.1, drop_path_rate=0.1, name="block")
    x = tokens()
    check_layer(layer, [x], tmp_path, expected_shape=x.shape)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_gelu_in_float32_matches_tensorflow_gelu_and_its_gradient(dtype):
    import tensorflow as tf

    from keras_segmenter.layers.transformer_block import gelu_in_float32

    x = tf.cast(RNG.normal(size=(64, 96)) * 3, dtype)
    upstream = tf.cast(RNG.normal(size=(64, 96)), dtype)
    results = []
    for gelu in (gelu_in_float32, lambda x: tf.nn.gelu(tf.cast(x, "float32"), approximate=False)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = gelu(x)
        grad = tape.gradient(y, x, output_gradients=tf.cast(upstream, y.dtype))
        results.append((tf.cast(y, dtype), grad))
    # The same float32 values up to float32 round-off, each then rounded to
    # `dtype` once (and the gradient's factor once more before its product):
    # at most two of the 16-bit type's half-ulps apart (float16's subnormals
    # below 2**-14 are spaced 2**-24 apart: two half-steps there).
    half_ulp = 2.0 ** -(8 if dtype == "bfloat16" else 11)
    floor = 2.0**-24 if dtype == "float16" else 0.0
    for ours, tf_gelu in zip(*results):
        ours, tf_gelu = np.asarray(ours, "float32"), np.asarray(tf_gelu, "float32")
        np.testing.assert_allclose(ours, tf_gelu, rtol=2 * half_ulp, atol=floor)


def test_linear_decoder(tmp_path):
    layer = layers.LinearDecoder(num_classes=5, patch_size=8, name="linear")
    check_layer(layer, [tokens(length=6), images()], tmp_path, expected_shape=(2, 2, 3, 5))


def test_mask_transformer(tmp_path):
    layer = layers.MaskTransformer(5, patch_size=8, hidden_dim=16, num_layers=2, name="mask")
    out = check_layer(layer, [tokens(length=6), images()], tmp_path, expected_shape=(2, 2, 3, 5))
    # mask_norm is a LayerNorm over the classes: with its initial weights each
    # patch's class scores have zero mean.
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-5)
    assert layer.blocks[0].num_heads == 1  # the official rule: hidden_dim // 64, at least 1


def test_pad_to_multiple_pads_bottom_right_with_zeros(tmp_path):
    layer = layers.PadToMultiple(8, name="pad")
    x = images(height=10, width=17)
    out = check_layer(layer, [x], tmp_path, expected_shape=(2, 16, 24, 3))
    np.testing.assert_array_equal(out[:, :10, :17], x)
    assert not out[:, 10:].any() and not out[:, :, 17:].any()


def test_resize_and_crop(tmp_path):
    layer = layers.ResizeAndCrop(name="resize")
    logits = images(height=2, width=3, channels=4)
    out = check_layer(
        layer, [logits, images(height=16, width=24), images(height=13, width=20)], tmp_path
    )
    assert out.shape == (2, 13, 20, 4)


def test_image_normalization(tmp_path):
    layer = layers.ImageNormalization("deit", name="normalization")
    x = np.full((1, 2, 2, 3), 255, "float32")
    out = check_layer(layer, [x], tmp_path)
    np.testing.assert_allclose(
        out[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-5
    )


def test_image_normalization_rejects_unknown_family():
    with pytest.raises(ValueError, match="normalization='imagenet'"):
        layers.ImageNormalization("imagenet")


@pytest.mark.parametrize("grid, factor, crop", [((2, 3), 8, (13, 20)), ((3, 2), 5, (15, 10))])
def test_resize_and_crop_recorded_for_inductor_gives_the_same_values(grid, factor, crop):
    """Inside `fusing()`, as the compiled PyTorch step records it, the upsampling is
    `upsample_rows`: bilinear with half-pixel centres, as outside, to round-off."""
    layer = layers.ResizeAndCrop(name="resize")
    logits = images(height=grid[0], width=grid[1], channels=4) * 3
    padded = images(height=grid[0] * factor, width=grid[1] * factor)
    inputs = [logits, padded, images(height=crop[0], width=crop[1])]
    with fusing():
        fused = np.asarray(layer(*inputs))
        with pytest.raises(ValueError, match="must be a multiple of the logits' grid"):
            layer(logits, images(height=grid[0] * factor + 1, width=grid[1] * factor), padded)
    np.testing.assert_allclose(fused, np.asarray(layer(*inputs)), atol=2e-6)


def test_dropout_recorded_for_inductor_makes_independent_decisions():
    """Inside `fusing()` the 16-bit decisions are a keyed hash of each element's index
    (`_hashed_bits`): still the rate, and neighbours along either axis, and two calls,
    drop together as often as independent draws would."""
    layer = layers.Dropout(0.25, seed=5)
    with fusing():
        first, second = (
            np.asarray(layer.scale((60, 6, 301), "float32", training=True)) == 0 for _ in range(2)
        )
    p = round(0.25 * 2**16) / 2**16
    for dropped, probability in [
        (first, p),
        (first[..., 1:] & first[..., :-1], p * p),
        (first[1:] & first[:-1], p * p),
        (first & second, p * p),
    ]:
        std = np.sqrt(probability * (1 - probability) / dropped.size)
        assert abs(dropped.mean() - probability) < 6 * std
