"""Tests of keras_segmenter.figures: the numbers behind Figures 6-8, and that
every plot draws on tiny models (Agg backend)."""

import functools

import matplotlib

matplotlib.use("Agg")

import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_segmenter as ks  # noqa: E402
from keras_segmenter import figures  # noqa: E402
from tests import testing  # noqa: E402

PALETTE = [(10 * k, 255 - 20 * k, 30 * k) for k in range(5)]
NAMES = ["sky", "road", "car", "tree", "person"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


tiny_model = functools.partial(testing.tiny_model, num_layers=3)


def random_image(height=32, width=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- Figure 7


def test_patch_distances_known_values():
    d = figures.patch_distances((2, 3), patch_size=4)
    assert d.shape == (6, 6)
    # patch 0 = (0, 0), patch 5 = (1, 2): 4 * sqrt(1 + 4)
    np.testing.assert_allclose(d[0, 5], 4 * np.sqrt(5))
    np.testing.assert_allclose(d[1, 4], 4.0)  # (0, 1) -> (1, 1)
    np.testing.assert_allclose(np.diag(d), 0.0)
    np.testing.assert_allclose(d, d.T)


def test_attention_distances_hand_made_matrix():
    # 1x3 grid, patch 10 px, one prefix token. Head 0: every patch attends to
    # itself (distance 0). Head 1: every patch attends to patch 0 only:
    # distances 0, 10, 20 -> mean 10. The prefix column holds half the mass
    # and must not count (weights are renormalized over the patches).
    t = 4
    a = np.zeros((1, 2, t, t))
    a[0, :, :, 0] = 0.5
    for i in range(3):
        a[0, 0, 1 + i, 1 + i] = 0.5
        a[0, 1, 1 + i, 1] = 0.5
    d = figures.attention_distances(a, grid=(1, 3), patch_size=10, num_prefix_tokens=1)
    np.testing.assert_allclose(d, [0.0, 10.0])


def test_attention_distances_uniform_attention_and_batch_mean():
    # Uniform attention on a 2x2 grid: each query sees distances 0, p, p, p*sqrt(2).
    p = 16
    uniform = np.full((1, 1, 6, 6), 1 / 6)
    expected = (0 + p + p + p * np.sqrt(2)) / 4
    np.testing.assert_allclose(
        figures.attention_distances(uniform, (2, 2), p, num_prefix_tokens=2), [expected]
    )
    # Batch mean: a second image attending to itself only halves it.
    local = np.zeros((1, 1, 6, 6))
    local[0, 0, np.arange(6), np.arange(6)] = 1.0
    both = np.concatenate([uniform, local])
    np.testing.assert_allclose(figures.attention_distances(both, (2, 2), p, 2), [expected / 2])


def test_attention_distances_rejects_wrong_token_count():
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        figures.attention_distances(np.ones((1, 1, 5, 5)), (2, 2), 8, num_prefix_tokens=2)


def test_mean_attention_distance_matches_per_layer_maps():
    model = tiny_model()
    images = np.stack([random_image(seed=s) for s in range(3)])
    distances = figures.mean_attention_distance(model, images, batch_size=2)
    assert distances.shape == (3, 2)
    maps, grid = ks.encoder_attention_maps(model, model.preprocess(images))
    expected = np.stack(
        [figures.attention_distances(maps[layer], grid, 8, 1) for layer in range(3)]
    )
    np.testing.assert_allclose(distances, expected, rtol=1e-5)
    # Bounded by the largest patch distance of the 4x5 grid.
    assert np.all(distances > 0) and np.all(distances <= 8 * np.hypot(3, 4))


def test_mean_attention_distance_distilled_drops_two_prefix_tokens():
    model = tiny_model(distilled=True)
    distances = figures.mean_attention_distance(model, [random_image()])
    assert distances.shape == (3, 2) and np.all(np.isfinite(distances))


def test_plot_attention_distance_single_and_compared():
    fig = figures.plot_attention_distance(np.arange(6.0).reshape(3, 2))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes[0].collections[0].get_offsets()) == 6
    fig = figures.plot_attention_distance({"a": np.ones((3, 2)), "b": np.zeros((3, 2))})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


# ---------------------------------------------------------------- Figure 6


def test_patch_attention_rows_and_resize():
    model = tiny_model()
    image = random_image(30, 40)  # padded to 32x40: a 4x5 grid
    maps, grid = figures.patch_attention(model, image, patch=(1, 2), layers=[0, 2])
    assert grid == (4, 5) and sorted(maps) == [0, 2]
    assert maps[0].shape == (2, 30, 40)
    raw, _ = ks.encoder_attention_maps(model, model.preprocess(image[None]), layers=[2])
    row = raw[2][0, :, 1 + 1 * 5 + 2, 1:].reshape(2, 4, 5)
    # Bilinear resize keeps each patch's value at the patch's centre pixels
    # (8x8 patches: pixels 3-4 around the centre), here patch (2, 3).
    np.testing.assert_allclose(maps[2][:, 2 * 8 + 4, 3 * 8 + 4], row[:, 2, 3], rtol=0.2)
    assert np.all(maps[2] >= 0)


def test_patch_attention_rejects_patch_off_grid():
    with pytest.raises(ValueError, match="patch grid"):
        figures.patch_attention(tiny_model(), random_image(), patch=(4, 0), layers=[0])


def test_plot_attention_maps_mean_and_per_head():
    model = tiny_model()
    fig = figures.plot_attention_maps(model, random_image(), patch=(1, 1), layers=[0, 2])
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes[1:]] == ["layer 0", "layer 2"]
    fig = figures.plot_attention_maps(
        model, random_image(), patch=(0, 0), layers=[1], per_head=True
    )
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "layer 1, head 1"


# ---------------------------------------------------------------- Figure 8


def test_class_embedding_projection_is_the_svd():
    rng = np.random.default_rng(0)
    # Points on a 2-D plane inside 6-D space: the projection keeps all distances.
    plane = rng.normal(size=(7, 2)) @ np.linalg.qr(rng.normal(size=(6, 2)))[0].T
    coords = figures.class_embedding_projection(plane[None] + 3.0)
    assert coords.shape == (7, 2)
    d_plane = np.linalg.norm(plane[:, None] - plane[None], axis=-1)
    d_coords = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(d_coords, d_plane, atol=1e-9)
    # First coordinate has the larger spread (leading singular value).
    assert coords[:, 0].std() >= coords[:, 1].std()


def test_plot_class_embeddings_labels_every_class():
    model = tiny_model()
    fig = figures.plot_class_embeddings(model, NAMES, palette=PALETTE)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == NAMES
    offsets = fig.axes[0].collections[0].get_offsets()
    expected = figures.class_embedding_projection(np.asarray(model.decoder.cls_emb))
    np.testing.assert_allclose(np.asarray(offsets), expected, rtol=1e-6)


def test_plot_class_embeddings_needs_mask_decoder_and_names():
    with pytest.raises(ValueError, match="mask transformer"):
        figures.plot_class_embeddings(tiny_model(decoder="linear"), NAMES)
    with pytest.raises(ValueError, match="5 classes"):
        figures.plot_class_embeddings(tiny_model(), NAMES[:3])


# ---------------------------------------------------------------- segmentation


def test_show_segmentation_rows_and_legend():
    image = random_image()
    truth = np.zeros((32, 40), np.int32)
    truth[:10] = 255  # ignored: left uncoloured
    truth[24:] = 2  # sky: 14 rows, car: 8 rows
    prediction = np.full((32, 40), 4, np.int32)
    fig = figures.show_segmentation(
        [image, image], [truth, truth], [prediction, prediction], NAMES, PALETTE
    )
    assert len(fig.axes) == 6
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["person", "sky", "car"]  # by area over truths and predictions
    shown = fig.axes[1].images[0].get_array()
    np.testing.assert_array_equal(shown[:10], image[:10])
    fig = figures.show_segmentation(image, None, prediction, NAMES, PALETTE)
    assert len(fig.axes) == 2


def test_show_segmentation_rejects_mismatched_lists():
    image = random_image()
    with pytest.raises(ValueError, match="as many"):
        figures.show_segmentation([image, image], None, [np.zeros((32, 40), int)], NAMES, PALETTE)


# ---------------------------------------------------------------- training


def test_read_history_and_training_curves(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,iteration,learning_rate,loss,mIoU,val_mIoU\n"
        "0,50,0.01,2.0,0.1,nan\n"
        "1,100,0.005,1.5,0.2,0.25\n"
    )
    history = figures.read_history(path)
    np.testing.assert_array_equal(history["iteration"], [50, 100])
    assert np.isnan(history["val_mIoU"][0]) and history["val_mIoU"][1] == 0.25
    fig = figures.plot_training_curves(path)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "mIoU", "learning rate"]
    val_line = fig.axes[1].get_lines()[1]
    np.testing.assert_array_equal(val_line.get_xdata(), [100])


def test_denormalize_inverts_model_preprocess():
    image = random_image()
    for normalization in ("vit", "deit"):
        normalized = ks.ImageNormalization(normalization)(image[None].astype("float32"))
        np.testing.assert_array_equal(figures.denormalize(normalized, normalization)[0], image)


def test_plot_augmented_crops_from_the_training_pipeline():
    from keras_segmenter.data import SAMPLE_DIR, get_dataset_info, train_dataset

    info = get_dataset_info("camvid")
    dataset = train_dataset("camvid", SAMPLE_DIR, batch_size=2, crop_size=64, seed=0, repeat=False)
    fig = figures.plot_augmented_crops(dataset, info.palette, n=3, class_names=info.class_names)
    assert len(fig.axes) == 6
    crop = fig.axes[0].images[0].get_array()
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert len(fig.legends[0].get_texts()) >= 1
