import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_segmenter as ks
from tests.testing import FIXTURES, tiny_model


@pytest.mark.parametrize("decoder", ["mask", "linear"])
@pytest.mark.parametrize("size", [(32, 32), (30, 41), (8, 72), (1, 1)])
def test_any_image_size_gives_logits_at_that_size(decoder, size):
    model = tiny_model(decoder=decoder)
    logits = model(np.zeros((2, *size, 3), "float32"))
    assert logits.shape == (2, *size, 5) and logits.dtype == "float32"


def test_padding_does_not_leak_into_the_cropped_region():
    # The official forward pads, runs, upsamples to the padded size and crops:
    # the result on a 30x41 image equals the 32x48 result on the zero-padded image.
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(1, 30, 41, 3)).astype("float32")
    padded = np.pad(x, [(0, 0), (0, 2), (0, 7), (0, 0)])
    np.testing.assert_allclose(model(x), model(padded)[:, :30, :41], atol=1e-6)


def test_dynamic_shapes_inside_tf_function():
    model = tiny_model()
    predict = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for size in [(16, 24), (33, 17), (40, 40)]:
        x = np.random.default_rng(1).normal(size=(1, *size, 3)).astype("float32")
        np.testing.assert_allclose(predict(x), model(x), atol=1e-5)
    assert len(predict._list_all_concrete_functions()) == 1


@pytest.mark.parametrize("decoder,distilled", [("mask", False), ("linear", True)])
def test_keras_file_round_trip(tmp_path, decoder, distilled):
    model = tiny_model(decoder=decoder, distilled=distilled)
    x = np.random.default_rng(2).normal(size=(2, 24, 40, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded, ks.Segmenter)
    assert reloaded.get_config() == model.get_config()
    np.testing.assert_array_equal(reloaded(x), model(x))


def test_config_round_trip():
    model = tiny_model()
    clone = ks.Segmenter.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    assert clone.normalization == "vit" and clone.patch_size == 8


def test_fit_reduces_the_loss_on_a_fixed_batch():
    keras.utils.set_random_seed(0)
    model = tiny_model(num_classes=3)
    x = np.random.default_rng(3).normal(size=(4, 32, 32, 3)).astype("float32")
    y = (x[..., 0] > 0).astype("int32") + (x[..., 1] > 1).astype("int32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, epochs=15, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_policies(policy):
    model = tiny_model(dtype=policy)
    x = np.random.default_rng(4).normal(size=(2, 20, 28, 3)).astype("float32")
    logits = model(x)
    assert logits.dtype == "float32" and np.isfinite(logits).all()
    assert model.backbone.blocks[0].attn.qkv.kernel.dtype == "float32"
    assert model.backbone.blocks[0].attn.qkv.compute_dtype == policy.split("_")[1]
    reference = tiny_model()
    reference.set_weights(model.get_weights())
    # Half precision changes round-off, not the model; traced too, where the graph
    # optimizer fuses fc1's bias and GELU into its product under bfloat16.
    assert np.abs(np.asarray(logits) - np.asarray(reference(x))).max() < 0.2
    traced = tf.function(lambda x: model(x, training=False))(x)
    assert np.abs(np.asarray(traced) - np.asarray(reference(x))).max() < 0.2
    y = np.zeros((2, 20, 28), "int32")
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][0])


def test_drop_path_rises_linearly_over_the_encoder():
    model = ks.build_segmenter("seg_ti16_linear", 3, image_size=64)
    rates = [block.drop_path_rate for block in model.backbone.blocks]
    np.testing.assert_allclose(rates, np.linspace(0, 0.1, 12))
    assert model.backbone.dropout == 0.0


def test_normalization_travels_with_the_model():
    model = tiny_model(distilled=True)
    assert model.normalization == "vit"
    deit = ks.build_segmenter("seg_b16_deit_mask", 3, image_size=32)
    assert deit.normalization == "deit" and deit.backbone.distilled
    pixels = np.full((1, 4, 4, 3), 255, "uint8")
    np.testing.assert_allclose(
        deit.preprocess(pixels)[0, 0, 0],
        (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225],
        rtol=1e-5,
    )
    assert deit.predict_classes(pixels).shape == (1, 4, 4)


def official_param_count(shapes):
    unused = ("encoder.head.", "encoder.head_dist.")  # the ImageNet classifiers
    return sum(int(np.prod(shape)) for key, shape in shapes if not key.startswith(unused))


def test_param_counts_match_the_official_models_without_imagenet_head():
    shapes = json.loads((FIXTURES / "manifest.json").read_text())["full_size_state_dict_shapes"]
    assert ks.SegmenterTi16(150).count_params() == official_param_count(shapes["seg_ti16_mask"])
    linear = ks.SegmenterS16(150, decoder="linear")
    assert linear.count_params() == official_param_count(shapes["seg_s16_linear"])
    distilled = ks.Segmenter(
        ks.ViTBackbone(**ks.BACKBONE_PRESETS["ti16"], distilled=True, normalization="deit"), 150
    )
    assert distilled.count_params() == official_param_count(shapes["seg_ti16_distilled_mask"])


def official_count(width, depth, patch, classes, grid=32, decoder="mask"):
    # From the official state_dict layout (reference README, "Full-size official naming").
    block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width)
    block += (4 * width * width + 4 * width) + (4 * width * width + width)
    encoder = width + (grid * grid + 1) * width + width * 3 * patch * patch + width
    encoder += depth * block + 2 * width
    if decoder == "linear":
        return encoder + width * classes + classes
    decoder_params = classes * width + 2 * width * width + width * width + width
    decoder_params += 2 * block + 2 * width + 2 * classes
    return encoder + decoder_params


@pytest.mark.parametrize(
    "factory,width,depth,patch",
    [
        (ks.SegmenterB16, 768, 12, 16),
        (ks.SegmenterS32, 384, 12, 32),
        (ks.SegmenterL16, 1024, 24, 16),
    ],
)
def test_full_size_variants(factory, width, depth, patch):
    model = factory(num_classes=150)
    assert model.backbone.num_heads == width // 64 and model.patch_size == patch
    assert model.count_params() == official_count(width, depth, patch, 150, grid=512 // patch)
