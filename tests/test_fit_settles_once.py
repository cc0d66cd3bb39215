"""The fit path settles its settings once (issue 33): one `RunConfig.resolve()`, one scan of each
split, one `DatasetInfo`, the crop filled in one place."""

import collections
import functools

import keras
import pytest

from keras_segmenter import fit
from keras_segmenter.data import dataset_info, sources
from keras_segmenter.training import RunConfig, run
from tests.testing import tiny_model


def _counted(calls, key, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        calls[key(*args, **kwargs)] += 1
        return function(*args, **kwargs)

    return wrapper


def test_a_training_run_resolves_scans_and_builds_its_dataset_info_once(
    tmp_path, monkeypatch, capsys
):
    calls = collections.Counter()
    monkeypatch.setattr(
        RunConfig, "resolve", _counted(calls, lambda *_: "resolve", RunConfig.resolve)
    )
    scan = _counted(calls, lambda _name, _dir, split="train", **_: f"scan {split}", sources.scan)
    monkeypatch.setattr(sources, "scan", scan)
    camvid = dataset_info._BUILDERS["camvid"]
    monkeypatch.setitem(
        dataset_info._BUILDERS, "camvid", _counted(calls, lambda: "camvid info", camvid)
    )
    # Everything up to and after Keras' own loop runs; the loop itself reads nothing more.
    monkeypatch.setattr(keras.Model, "fit", lambda *_, **__: keras.callbacks.History())
    init = tmp_path / "tiny.keras"
    tiny_model(11, num_layers=1).save(init)  # CamVid's classes; fit compiles it in seconds
    one_step = ["--iterations", "1", "--checkpoint-every", "1", "--val-every", "1"]
    argv = [*one_step, "--batch-size", "1", "--crop-size", "32", "--val-images", "1"]
    assert fit.main([*argv, "--init", str(init), "--output-dir", str(tmp_path / "run")]) == 0
    assert "SUMMARY " in capsys.readouterr().out
    assert calls == {"resolve": 1, "scan train": 1, "scan val": 1, "camvid info": 1}, calls


def test_the_crop_is_filled_by_resolve_and_training_takes_a_resolved_config(tmp_path):
    assert RunConfig(dataset="ade20k").resolve().crop_size == 512
    folder = RunConfig(dataset="folder", num_classes=3, data_dir=str(tmp_path)).resolve()
    assert folder.crop_size == folder.info.crop_size == 512
    with pytest.raises(ValueError, match="call `config.resolve\\(\\)` first"):
        run.train(RunConfig(output_dir=str(tmp_path / "run")))
