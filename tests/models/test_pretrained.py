"""`from_preset` / `save_to_preset` / `list_presets` and `Segmenter.compile()` defaults.

Downloads are served from a loopback `http.server` on 127.0.0.1: no test
touches the network.
"""

import contextlib
import functools
import http.server
import os
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_segmenter as ks
from keras_segmenter.convert import CheckpointError, backbone_from_imagenet_vit, load_official
from keras_segmenter.models import pretrained
from keras_segmenter.optimizers import TorchSGD
from tests.testing import FIXTURES, REPO, loopback_server, tiny_model

TINY = FIXTURES / "tiny_mask"
README = REPO / "README.md"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; counts requests; can cut `checkpoint.pth` short."""

    requests = []
    truncate = False

    def do_GET(self):
        type(self).requests.append(self.path)
        if type(self).truncate and self.path.endswith("checkpoint.pth"):
            body = (pathlib.Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then the connection closes
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(root):
    handler = type("Handler", (_Handler,), {"requests": [], "truncate": False})
    with loopback_server(functools.partial(handler, directory=str(root))) as url:
        yield url, handler


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fake official server tree, with KERAS_HOME in tmp_path."""
    root = tmp_path / "mirror"
    run = root / "ade20k" / "seg_tiny_mask"
    run.mkdir(parents=True)
    for name in ("checkpoint.pth", "variant.yml"):
        shutil.copy(TINY / name, run / name)
    (root / "augreg").mkdir()
    shutil.copy(FIXTURES / "augreg_vit" / "tiny.npz", root / "augreg" / "tiny.npz")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return root


def assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def cached_files(tmp_path):
    home = tmp_path / "keras_home"
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_a_preset_name_downloads_once_then_works_offline(mirror, tmp_path, monkeypatch):
    with serve(mirror) as (url, handler):
        monkeypatch.setattr(pretrained, "OFFICIAL_ROOT", url)
        model = ks.Segmenter.from_preset("seg_tiny_mask")
        assert sorted(handler.requests) == [
            "/ade20k/seg_tiny_mask/checkpoint.pth",
            "/ade20k/seg_tiny_mask/variant.yml",
        ]
        # The folder URL of the same run shares the cache: no new request.
        by_url = ks.Segmenter.from_preset(f"{url}/ade20k/seg_tiny_mask/")
        assert len(handler.requests) == 2
    assert_same_weights(model, load_official(TINY))
    assert_same_weights(by_url, model)
    host = url.split("//")[1].replace(":", "_")
    assert cached_files(tmp_path) == [
        f"models/keras_segmenter/{host}/ade20k/seg_tiny_mask/checkpoint.pth",
        f"models/keras_segmenter/{host}/ade20k/seg_tiny_mask/variant.yml",
    ]
    # Server stopped: the cached copy is used, nothing is fetched.
    assert_same_weights(ks.Segmenter.from_preset("ade20k/seg_tiny_mask"), model)


def test_a_truncated_download_is_an_error_and_the_next_call_fetches_it_again(mirror, tmp_path):
    with serve(mirror) as (url, handler):
        handler.truncate = True
        with pytest.raises(ks.PresetError) as error:
            ks.Segmenter.from_preset(f"{url}/ade20k/seg_tiny_mask")
        message = str(error.value)
        assert f"{url}/ade20k/seg_tiny_mask/checkpoint.pth" in message and "\n" not in message
        assert "local path" in message
        # Nothing that looks cached was left behind for the checkpoint.
        assert [f for f in cached_files(tmp_path) if "checkpoint" in f] == []
        handler.truncate = False
        model = ks.Segmenter.from_preset(f"{url}/ade20k/seg_tiny_mask")
    assert_same_weights(model, load_official(TINY))


def test_a_complete_but_corrupt_checkpoint_is_an_error_not_a_model(mirror):
    checkpoint = mirror / "ade20k" / "seg_tiny_mask" / "checkpoint.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    with serve(mirror) as (url, _):
        with pytest.raises(CheckpointError, match="checkpoint.pth"):
            ks.Segmenter.from_preset(f"{url}/ade20k/seg_tiny_mask")


def test_a_404_and_no_connection_give_one_line_errors_naming_the_url(mirror):
    with serve(mirror) as (url, _):
        with pytest.raises(ks.PresetError) as error:
            ks.Segmenter.from_preset(f"{url}/ade20k/no_such_run/")
    message = str(error.value)
    assert f"{url}/ade20k/no_such_run/variant.yml" in message and "404" in message
    assert "\n" not in message
    # The server is gone now and nothing is cached for this URL.
    with pytest.raises(ks.PresetError, match="Offline.*local path") as error:
        ks.Segmenter.from_preset(f"{url}/cityscapes/seg_large_mask")
    assert f"{url}/cityscapes/seg_large_mask/variant.yml" in str(error.value)


def test_unknown_and_ambiguous_sources_are_clear_errors(tmp_path):
    with pytest.raises(ks.PresetError, match="not a preset name.*list_presets"):
        ks.Segmenter.from_preset("seg_huge_mask")
    with pytest.raises(ks.PresetError, match="pascal_context/seg_large_mask"):
        ks.Segmenter.from_preset("seg_large_mask")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"1234")
    with pytest.raises(ks.PresetError, match="weights.bin: unknown kind"):
        ks.Segmenter.from_preset(odd)
    with pytest.raises(ValueError, match="cannot change `image_size`"):
        ks.Segmenter.from_preset(TINY, image_size=128)


def test_another_num_classes_keeps_the_encoder_and_gives_a_fresh_decoder():
    official = load_official(TINY)
    model = ks.Segmenter.from_preset(TINY, num_classes=3, decoder_dropout=0.0)
    assert model.num_classes == 3 and model.decoder_dropout == 0.0
    assert_same_weights(model.backbone, official.backbone)
    assert model(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 3)
    # Same number of classes: the checkpoint as it is, in another dtype if asked.
    same = ks.Segmenter.from_preset(TINY / "checkpoint.pth", num_classes=7, dtype="mixed_bfloat16")
    assert (
        same.decoder.dtype_policy.name
        == same.backbone.encoder_norm.dtype_policy.name
        == "mixed_bfloat16"
    )
    assert_same_weights(same, official)


def test_save_to_preset_and_keras_files_round_trip(tmp_path):
    model = load_official(TINY)
    x = np.random.default_rng(0).normal(size=(1, 48, 80, 3)).astype("float32")
    model.save_to_preset(tmp_path / "preset")
    assert sorted(os.listdir(tmp_path / "preset")) == [
        "config.json",
        "metadata.json",
        "model.weights.h5",
        "preprocessor.json",
    ]
    model.save(tmp_path / "model.keras")  # tmp_path is also a fit.py-like run folder now
    for source in (tmp_path / "preset", tmp_path / "model.keras", tmp_path):
        reloaded = ks.Segmenter.from_preset(source)
        np.testing.assert_array_equal(reloaded(x), model(x))
    backbone = ks.ViTBackbone.from_preset(tmp_path / "preset")
    assert isinstance(backbone, ks.ViTBackbone)
    assert_same_weights(backbone, model.backbone)
    backbone.save_to_preset(tmp_path / "backbone")
    assert_same_weights(ks.ViTBackbone.from_preset(tmp_path / "backbone"), model.backbone)
    with pytest.raises(ks.PresetError, match="not a Segmenter"):
        ks.Segmenter.from_preset(tmp_path / "backbone")


def test_imagenet_presets_for_the_backbone_the_segmenter_and_fit(mirror, tmp_path, monkeypatch):
    local = FIXTURES / "augreg_vit" / "tiny.npz"
    with serve(mirror) as (url, handler):
        entry = dict(
            pretrained.IMAGENET_PRESETS["vit_tiny_patch16_384"], url=f"{url}/augreg/tiny.npz"
        )
        monkeypatch.setitem(pretrained.IMAGENET_PRESETS, "vit_tiny_patch16_384", entry)
        backbone = ks.ViTBackbone.from_preset("vit_tiny_patch16_384", image_size=64)
        path = pretrained.imagenet_weights_path("vit_tiny_patch16_384")
        model = ks.Segmenter.from_preset(
            "vit_tiny_patch16_384", num_classes=4, image_size=64, decoder="linear"
        )
        assert handler.requests == ["/augreg/tiny.npz"]
    assert_same_weights(backbone, backbone_from_imagenet_vit(local, image_size=64))
    assert pathlib.Path(path).read_bytes() == local.read_bytes()
    assert model.num_classes == 4 and model.decoder_type == "linear"
    assert_same_weights(model.backbone, backbone)
    with pytest.raises(ValueError, match="pass num_classes"):
        ks.Segmenter.from_preset(local)
    # fit --backbone-weights: a name becomes the cached file, a path stays.
    from keras_segmenter import fit

    config, _ = fit.make_config(
        ["--backbone-weights", "vit_tiny_patch16_384", "--output-dir", str(tmp_path / "run")]
    )
    assert config.backbone_weights == path
    config, _ = fit.make_config(
        ["--backbone-weights", str(local), "--output-dir", str(tmp_path / "run")]
    )
    assert config.backbone_weights == str(local)


def test_list_presets_prints_every_official_checkpoint_and_the_readme_shows_it(capsys):
    ks.list_presets()
    printed = capsys.readouterr().out
    for name in (
        "seg_tiny_mask",
        "seg_small_mask",
        "seg_base_mask",
        "seg_base_patch8",
        "seg_base_deit_mask",
        "seg_base_deit_linear",
        "seg_large_mask_640",
        "pascal_context/seg_large_mask",
        "cityscapes/seg_large_mask",
    ):
        assert name in printed
    assert (
        "| `ade20k/seg_base_mask` | Seg-B-Mask/16 | ade20k (150) | 512 | 512 / 512 | 48.5 / 50.0 |"
        in printed
    )
    assert pretrained.presets_table() in README.read_text()


def test_compile_with_no_arguments_is_the_papers_recipe_and_fit_runs():
    model = tiny_model(3, num_layers=1)
    model.compile()
    optimizer = model.optimizer
    assert isinstance(optimizer, TorchSGD) and optimizer.nesterov
    assert optimizer.momentum == 0.9 and not optimizer.weight_decay
    schedule = optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "PolynomialDecay"
    assert {
        k: schedule["config"][k]
        for k in ("initial_learning_rate", "decay_steps", "end_learning_rate", "power")
    } == {
        "initial_learning_rate": 1e-3,
        "decay_steps": 160_000,
        "end_learning_rate": 1e-5,
        "power": 0.9,
    }
    assert isinstance(model.loss, ks.SegmentationCrossEntropy) and model.loss.ignore_index == 255
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    masks = np.random.default_rng(1).integers(0, 3, size=(4, 32, 32)).astype("int32")
    masks[:, :4] = 255
    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(2)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and 0.0 <= history.history["mIoU"][0] <= 1.0
    assert int(optimizer.iterations) == 2
    # A loss of one's own: its ignored label is unknown, so no metric is added.
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert model.get_compile_config()["metrics"] is None


def test_an_existing_local_folder_wins_over_the_preset_name(tmp_path, monkeypatch):
    # As the official README has users download runs: ./seg_tiny_mask/{checkpoint.pth,variant.yml}.
    shutil.copytree(TINY, tmp_path / "seg_tiny_mask")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pretrained, "OFFICIAL_ROOT", "http://127.0.0.1:9/unreachable")
    assert_same_weights(ks.Segmenter.from_preset("seg_tiny_mask"), load_official(TINY))
