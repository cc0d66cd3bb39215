"""The run config: the paper's and CamVid's defaults, its errors, the optimizer it picks."""

import keras
import pytest

from keras_segmenter.training import RunConfig


def test_run_config_paper_defaults_and_errors(tmp_path):
    ade = RunConfig(dataset="ade20k").resolve()
    assert (ade.lr, ade.iterations, ade.batch_size, ade.crop_size) == (1e-3, 160_000, 8, 512)
    pc = RunConfig(dataset="pascal_context").resolve()
    assert (pc.lr, pc.iterations, pc.batch_size, pc.crop_size) == (1e-3, 80_000, 16, 480)
    cs = RunConfig(dataset="cityscapes", lr=5e-3).resolve()
    assert (cs.lr, cs.iterations, cs.batch_size, cs.crop_size) == (5e-3, 80_000, 8, 768)
    assert ade.iterations % ade.checkpoint_every == 0 and ade.val_every % ade.checkpoint_every == 0
    path = tmp_path / "config.json"
    ade.save(str(path))
    assert RunConfig.load(str(path)) == ade
    with pytest.raises(ValueError, match="--dataset"):
        RunConfig(dataset="coco").resolve()
    with pytest.raises(ValueError, match="--checkpoint-every"):
        RunConfig(dataset="ade20k", iterations=100, checkpoint_every=30).resolve()
    with pytest.raises(ValueError, match="--val-every"):
        RunConfig(dataset="ade20k", iterations=100, checkpoint_every=10, val_every=15).resolve()
    with pytest.raises(ValueError, match="--precision"):
        RunConfig(precision="float16").resolve()
    with pytest.raises(ValueError, match="--init: no such file"):
        RunConfig(init=str(tmp_path / "missing.keras")).resolve()
    with pytest.raises(ValueError, match="--num-classes"):
        RunConfig(dataset="folder").resolve()


def test_optimizer_choice():
    from keras_segmenter.optimizers import TorchSGD
    from keras_segmenter.training.factories import make_optimizer

    config = RunConfig(dataset="ade20k", data_dir=None)
    config.resolve()
    sgd = make_optimizer(config)
    assert isinstance(sgd, TorchSGD) and sgd.nesterov and sgd.momentum == 0.9
    config.optimizer = "adamw"
    assert isinstance(make_optimizer(config), keras.optimizers.AdamW)
    config.optimizer = "lamb"
    with pytest.raises(ValueError, match="--optimizer must be one of"):
        config.resolve()


def test_compiles_default_optimizer_is_the_ade20k_run_recipe():
    """`Segmenter.compile()` builds its optimizer without the trainer; same recipe."""
    from keras_segmenter.optimizers import make_optimizer
    from keras_segmenter.training import factories

    run_optimizer = factories.make_optimizer(RunConfig(dataset="ade20k").resolve())
    assert make_optimizer().get_config() == run_optimizer.get_config()


def test_camvid_defaults_are_the_from_scratch_recipe(tmp_path):
    camvid = RunConfig(dataset="camvid").resolve()
    assert (camvid.optimizer, camvid.lr, camvid.weight_decay, camvid.crop_size) == (
        "adamw",
        1e-4,
        0.05,
        128,
    )
    assert camvid.class_weights == "none"
    weighted = RunConfig(dataset="camvid", class_weights="median_frequency").resolve()
    assert weighted.class_weights == "median_frequency"
    with pytest.raises(ValueError, match="--class-weights"):
        RunConfig(dataset="camvid", class_weights="inverse").resolve()
    paper = RunConfig(dataset="cityscapes", optimizer="adamw").resolve()
    assert (paper.optimizer, paper.lr, paper.weight_decay) == ("adamw", 1e-2, 0.0)  # flags win
    # The poly floor: the paper's 1e-5; full CamVid 1e-6 (1 % of its lr, as the paper's 1e-5 of
    # 1e-3); the bundled-sample demo keeps 1e-5.
    full = RunConfig(dataset="camvid", data_dir=str(tmp_path)).resolve()
    assert (paper.end_lr, full.end_lr, camvid.end_lr) == (1e-5, 1e-6, 1e-5)
    assert RunConfig(dataset="camvid", data_dir=str(tmp_path), end_lr=0.0).resolve().end_lr == 0
    with pytest.raises(ValueError, match="--end-lr must be between 0 and --lr"):
        RunConfig(dataset="ade20k", end_lr=1e-2).resolve()
