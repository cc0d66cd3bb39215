"""Parity with the official PyTorch Segmenter (fixtures in tests/fixtures, see README there).

Every bound is `max_difference` of the error model stated in tests/testing.py.
"""

import keras
import numpy as np
import pytest

from keras_segmenter.convert import backbone_from_imagenet_vit, load_official
from tests.testing import FIXTURES, FLOORS, MANIFEST, max_difference

OFFICIAL = ["tiny_mask", "tiny_linear", "tiny_distilled_mask", "tiny_p8_mask"]


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def cases(fixture):
    arrays = np.load(FIXTURES / fixture / "cases.npz")
    return arrays, sorted({name.split("/")[0] for name in arrays.files})


@pytest.fixture(scope="module", params=OFFICIAL)
def official(request):
    return request.param, load_official(FIXTURES / request.param)


def test_logits_match_the_official_model(official):
    fixture, model = official
    arrays, names = cases(fixture)
    floor = FLOORS[fixture]["logits"]
    for case in names:
        logits = keras.ops.convert_to_numpy(model(nhwc(arrays[f"{case}/input"])))
        expected = nhwc(arrays[f"{case}/logits"])
        assert logits.shape == expected.shape
        assert np.abs(logits - expected).max() <= max_difference(floor, "ours", "torch_fp32"), case
        if f"{case}/logits_fp64" in arrays.files:
            truth = nhwc(arrays[f"{case}/logits_fp64"])
            assert np.abs(logits - truth).max() <= max_difference(floor, "ours", "float64"), case


def test_encoder_and_decoder_outputs_match_float64(official):
    fixture, model = official
    arrays, names = cases(fixture)
    prefix = model.backbone.num_prefix_tokens
    for case in names:
        padded = model.pad(nhwc(arrays[f"{case}/input"]))
        tokens = model.backbone(padded)
        masks = np.asarray(model.decoder(tokens[:, prefix:], padded))
        encoder_error = np.abs(np.asarray(tokens) - arrays[f"{case}/enc_out_fp64"]).max()
        decoder_error = np.abs(masks - nhwc(arrays[f"{case}/dec_out_fp64"])).max()
        assert encoder_error <= max_difference(FLOORS[fixture]["enc_out"], "ours", "float64"), case
        assert decoder_error <= max_difference(FLOORS[fixture]["dec_out"], "ours", "float64"), case


def test_batch_of_two_equals_each_sample_alone(official):
    fixture, model = official
    arrays, _ = cases(fixture)
    batch = nhwc(arrays["b2_64x64/input"])
    together = np.asarray(model(batch))
    # PyTorch gives bit-identical results; TensorFlow's float32 kernels (Eigen, or oneDNN where
    # it is on) block a batch's products unlike one image's, and unlike on another CPU.
    alone = np.asarray(model(batch[1:]))
    bound = max_difference(FLOORS[fixture]["logits"], "ours", "ours")
    assert np.abs(alone - together[1:]).max() <= bound


def test_official_models_have_the_official_parameter_count(official):
    fixture, model = official
    n_params = MANIFEST["fixtures"][fixture]["n_params"]
    imagenet_heads = (1000 * 64 + 1000) * (2 if model.backbone.distilled else 1)
    assert model.count_params() == n_params - imagenet_heads


@pytest.mark.parametrize("source", ["timm_vit", "augreg_vit/tiny.npz"])
def test_imagenet_encoders_match_the_official_segmenter_encoder(source):
    features = np.load(FIXTURES / "augreg_vit" / "features.npz")
    backbone = backbone_from_imagenet_vit(FIXTURES / source, image_size=64)
    floor = FLOORS["segmenter_encoder_from_augreg"]
    for case in ["64x64", "48x80"]:
        tokens = keras.ops.convert_to_numpy(backbone(nhwc(features[f"input_{case}"])))
        expected = features[f"segmenter_features_{case}"]  # the official encoder in float32
        assert np.abs(tokens - expected).max() <= max_difference(floor, "ours", "torch_fp32"), case


@pytest.mark.parametrize("source", ["timm_vit", "augreg_vit/tiny.npz"])
def test_imagenet_position_embedding_is_resampled_like_the_official_loader(source):
    features = np.load(FIXTURES / "augreg_vit" / "features.npz")
    backbone = backbone_from_imagenet_vit(FIXTURES / source, image_size=96)
    resized = backbone.position_embedding.position_embedding.numpy()
    np.testing.assert_allclose(resized, features["segmenter_pos_embed_96x96"], atol=1e-6)
