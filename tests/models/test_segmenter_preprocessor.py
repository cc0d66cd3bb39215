"""The Segmenter's preprocessor: predict on images as users hold them, refused inputs, presets."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_segmenter as ks
from keras_segmenter.layers.normalization import normalize_images
from tests.testing import tiny_model


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


@pytest.mark.parametrize("normalization", ["vit", "deit"])
def test_predict_on_uint8_and_float_pixels_gives_the_normalized_paths_scores(normalization):
    model = tiny_model(num_classes=5, normalization=normalization)
    images = pixels((3, 30, 41, 3))
    normalized = normalize_images(images, normalization)
    scores = model.predict(images, batch_size=3, verbose=0)
    # The same numbers up to float32 round-off (grappler folds the traced normalization).
    np.testing.assert_allclose(scores, model(normalized).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(model.predict(images.astype("float32"), verbose=0), scores)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(3)
    np.testing.assert_array_equal(model.predict(dataset, verbose=0), scores)
    # Before the preprocessor, uint8 images went into the model as they were.
    assert np.abs(model(images.astype("float32")).numpy() - scores).max() > 0.1


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((1, 8, 8, 4), "uint8"),
        np.zeros((1, 8, 8), "uint8"),
        np.zeros((8, 8, 3), "uint8"),
        np.zeros((1, 1, 8, 8, 3), "uint8"),
        np.zeros((1, 8, 8, 3), bool),
        tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 1), "uint8")).batch(1),
    ],
    ids=[
        "4 channels",
        "rank 3 batch",
        "one image unbatched",
        "rank 5",
        "bool",
        "dataset of 1 channel",
    ],
)
def test_inputs_the_preprocessor_cannot_take_are_refused(images):
    with pytest.raises(
        ValueError, match=r"RGB images \(batch, height, width, 3\).*Received: shape"
    ):
        tiny_model().predict(images, verbose=0)


def test_fit_refuses_integer_images():
    model = tiny_model(3)
    model.compile(optimizer="sgd", loss=ks.SegmentationCrossEntropy())
    with pytest.raises(
        ValueError, match="normalized float images.*Received: images of dtype uint8"
    ):
        model.fit(pixels((2, 16, 16, 3)), np.zeros((2, 16, 16), "int32"), verbose=0)


def test_preprocessor_resizes_images_and_masks_and_round_trips_its_config():
    layer = ks.SegmenterPreprocessor("deit", image_size=(8, 12))
    images, masks = pixels((2, 16, 24, 3)), np.arange(2 * 16 * 24).reshape(2, 16, 24) % 7
    x, y = layer(images, masks)
    assert tuple(x.shape) == (2, 8, 12, 3) and tuple(y.shape) == (2, 8, 12)
    assert set(np.unique(y.numpy())) <= set(range(7))  # nearest: no blended labels
    copy = ks.SegmenterPreprocessor.from_config(json.loads(json.dumps(layer.get_config())))
    assert copy.get_config() == layer.get_config() and copy.image_size == (8, 12)
    with pytest.raises(ValueError, match="image_size"):
        ks.SegmenterPreprocessor(image_size=(0, 4))
    with pytest.raises(ValueError, match="backbone's \\('vit'\\).*normalization='deit'"):
        ks.Segmenter(tiny_model().backbone, 3, preprocessor=ks.SegmenterPreprocessor("deit"))


def test_preset_round_trip_carries_the_preprocessor(tmp_path):
    model = tiny_model(4)
    model = ks.Segmenter(
        model.backbone, 4, preprocessor=ks.SegmenterPreprocessor("vit", image_size=(24, 24))
    )
    model.save_to_preset(tmp_path / "preset")
    names = sorted(p.name for p in (tmp_path / "preset").iterdir())
    assert names == ["config.json", "metadata.json", "model.weights.h5", "preprocessor.json"]
    metadata = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.count_params()
    assert metadata["keras_segmenter_version"] == ks.__version__
    loaded = ks.Segmenter.from_preset(tmp_path / "preset")
    assert loaded.preprocessor.get_config() == model.preprocessor.get_config()
    images = pixels((1, 40, 40, 3))
    scores = loaded.predict(images, verbose=0)
    assert scores.shape == (1, 24, 24, 4)
    np.testing.assert_array_equal(scores, model.predict(images, verbose=0))
    # preprocessor.json is the preset's preprocessor, as in keras-hub.
    (tmp_path / "preset" / "preprocessor.json").write_text(
        json.dumps(keras.saving.serialize_keras_object(ks.SegmenterPreprocessor("vit")))
    )
    assert ks.Segmenter.from_preset(tmp_path / "preset").preprocessor.image_size is None


def without_preprocessor(config):
    config["config"].pop("preprocessor")
    return config


def test_presets_and_keras_files_saved_before_the_preprocessor_still_load(tmp_path):
    model = tiny_model(4)
    images = pixels((1, 24, 24, 3))
    expected = model.predict(images, verbose=0)
    model.save_to_preset(tmp_path / "old")
    (tmp_path / "old" / "preprocessor.json").unlink()
    (tmp_path / "old" / "metadata.json").unlink()
    config_path = tmp_path / "old" / "config.json"
    config_path.write_text(json.dumps(without_preprocessor(json.loads(config_path.read_text()))))
    loaded = ks.Segmenter.from_preset(tmp_path / "old")
    assert loaded.preprocessor.normalization == "vit" and loaded.preprocessor.image_size is None
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)

    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new:
        files = {name: new.read(name) for name in new.namelist()}
    config = without_preprocessor(json.loads(files["config.json"]))
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for name, data in files.items():
            old.writestr(name, data)
    loaded = keras.saving.load_model(tmp_path / "old.keras", compile=False)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
