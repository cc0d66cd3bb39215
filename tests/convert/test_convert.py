import pickle
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_segmenter as ks
from keras_segmenter.convert import (
    CheckpointError,
    load_backbone_weights,
    load_official,
    read_torch_checkpoint,
    read_variant,
)
from keras_segmenter.convert.__main__ import main as convert_main
from tests.testing import FIXTURES

TINY = FIXTURES / "tiny_mask"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "keras_segmenter.convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_converts_an_official_run_to_a_loadable_keras_file(tmp_path):
    out = tmp_path / "model.keras"
    result = run_cli(TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "mask, 7 classes" in result.stdout and "parameters:    263,374" in result.stdout
    reloaded = keras.saving.load_model(out)
    arrays = np.load(TINY / "cases.npz")
    x = arrays["50x70/input"].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(reloaded(x), load_official(TINY)(x))


def test_cli_adds_a_fresh_decoder_to_an_imagenet_encoder(tmp_path):
    out = tmp_path / "model.keras"
    result = run_cli(
        FIXTURES / "augreg_vit" / "tiny.npz",
        "--out",
        out,
        "--num-classes",
        4,
        "--decoder",
        "linear",
    )
    assert result.returncode == 0, result.stderr
    model = keras.saving.load_model(out)
    assert model.num_classes == 4 and model.decoder_type == "linear"
    assert model.backbone.image_size == (512, 512)


def cli_error(capsys, *argv):
    """Runs the converter in-process; returns its one-line error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(a) for a in argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_reports_unknown_formats_and_missing_arguments(tmp_path, capsys):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"1234")
    assert "weights.bin: unknown format" in cli_error(capsys, odd, "--out", tmp_path / "m.keras")
    assert "--num-classes" in cli_error(
        capsys, FIXTURES / "timm_vit", "--out", tmp_path / "m.keras"
    )
    assert "none.pth: no such file or folder" in cli_error(
        capsys, tmp_path / "none.pth", "--out", tmp_path / "m.keras"
    )


def test_cli_rejects_an_out_folder_before_converting(tmp_path, capsys):
    (tmp_path / "m.keras").mkdir()
    assert "m.keras is a folder" in cli_error(capsys, TINY, "--out", tmp_path / "m.keras")
    assert "does not exist" in cli_error(capsys, TINY, "--out", tmp_path / "no" / "m.keras")


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "image_size: !!python/tuple\n  - 64\n  - 64",
            "image_size: 64",
            "net_kwargs.image_size: expected (height, width) positive ints. Received: 64",
        ),
        (
            "n_cls: 7\n    n_layers",
            "n_cls: seven\n    n_layers",
            "net_kwargs.decoder.n_cls: expected a positive int. Received: 'seven'",
        ),
        ("  d_model: 64", "  d_model: [64]", "net_kwargs.d_model: expected a positive int"),
        ("net_kwargs:", "net_kwargs: 3\nx:", "net_kwargs: expected a mapping"),
        ("name: mask_transformer", "name: [mask]", "net_kwargs.decoder.name: expected a string"),
    ],
)
def test_cli_names_the_malformed_variant_key(tmp_path, capsys, old, new, message):
    run = copy_run(tmp_path)
    text = (run / "variant.yml").read_text()
    assert old in text
    (run / "variant.yml").write_text(text.replace(old, new, 1))
    error = cli_error(capsys, run, "--out", tmp_path / "m.keras")
    assert f"{run / 'variant.yml'}: {message}" in error


def test_cli_names_a_malformed_timm_config_and_a_missing_safetensors_key(tmp_path, capsys):
    timm = tmp_path / "timm"
    shutil.copytree(FIXTURES / "timm_vit", timm)
    (timm / "config.json").write_text("{not json")
    assert f"{timm / 'config.json'}: not a readable JSON file" in cli_error(
        capsys, timm, "--out", tmp_path / "m.keras", "--num-classes", 3
    )
    (timm / "config.json").write_text('{"model_args": {"num_heads": "two"}}')
    assert "`model_args.num_heads` is a positive int" in cli_error(
        capsys, timm, "--out", tmp_path / "m.keras", "--num-classes", 3
    )
    (timm / "config.json").unlink()

    from safetensors.numpy import load_file, save_file

    for key in ("blocks.0.mlp.fc1.weight", "patch_embed.proj.weight", "norm.bias"):
        state = load_file(str(timm / "model.safetensors"))
        del state[key]
        save_file(state, str(tmp_path / "cut.safetensors"))
        assert f"cut.safetensors: missing key `{key}`" in cli_error(
            capsys, tmp_path / "cut.safetensors", "--out", tmp_path / "m.keras", "--num-classes", 3
        )
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert "junk.safetensors: not a readable safetensors file" in cli_error(
        capsys, tmp_path / "junk.safetensors", "--out", tmp_path / "m.keras", "--num-classes", 3
    )
    assert not (tmp_path / "m.keras").exists()


def test_checkpoint_reads_without_torch_and_keeps_the_optimizer_state_apart(monkeypatch):
    # torch is installed for the other backends' tests (and another module may have imported it):
    # make `import torch` fail, so reading cannot use it.
    monkeypatch.setitem(sys.modules, "torch", None)
    checkpoint = read_torch_checkpoint(TINY / "checkpoint.pth")
    assert checkpoint["n_cls"] == 7 and checkpoint["epoch"] == 0
    assert checkpoint["model"]["encoder.blocks.0.attn.qkv.weight"].shape == (192, 64)
    assert len(checkpoint["optimizer"]["state"]) == 63


def test_variant_yml_with_python_tuples_reads_safely(tmp_path):
    assert read_variant(TINY / "variant.yml")["net_kwargs"]["image_size"] == (64, 64)
    evil = tmp_path / "variant.yml"
    evil.write_text("net_kwargs: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(CheckpointError, match="not a readable variant.yml"):
        read_variant(evil)


def copy_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(TINY, run)
    return run


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    run = copy_run(tmp_path)
    data = (run / "checkpoint.pth").read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pth: not a readable PyTorch zip"):
        load_official(run)


def rewrite_checkpoint(path, payload):
    """Replaces the pickle inside a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(n for n in members if n.endswith("data.pkl"))
    members[root] = payload
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_tries_to_run_code_is_refused(tmp_path, capsys):
    run = copy_run(tmp_path)
    rewrite_checkpoint(run / "checkpoint.pth", pickle.dumps({"model": RunsCode()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load `(__builtin__|builtins)\.print`"):
        load_official(run)
    assert "must never run" not in capsys.readouterr().out


def test_wrong_shapes_name_the_key_and_both_shapes(tmp_path):
    run = copy_run(tmp_path)
    variant = (
        (run / "variant.yml")
        .read_text()
        .replace("n_layers: 2\n  n_heads: 2", "n_layers: 2\n  n_heads: 4")
    )
    variant = variant.replace("d_model: 64", "d_model: 128")
    (run / "variant.yml").write_text(variant)
    with pytest.raises(
        CheckpointError,
        match=r"net_kwargs.d_model 128 does not fit .*checkpoint.pth, whose "
        r"`encoder.patch_embed.proj.weight` dim 0 is 64",
    ):
        load_official(run)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = read_torch_checkpoint(TINY / "checkpoint.pth")["model"]
    backbone = ks.ViTBackbone(16, 64, 2, 2, 256, image_size=64)
    timm_like = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}

    from safetensors.numpy import save_file

    missing = dict(timm_like)
    del missing["blocks.1.mlp.fc2.bias"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="missing key `blocks.1.mlp.fc2.bias`"):
        load_backbone_weights(backbone, tmp_path / "missing.safetensors")

    extra = dict(timm_like, **{"fc_norm.weight": np.ones(64, "float32")})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['fc_norm.weight'\]"):
        load_backbone_weights(backbone, tmp_path / "extra.safetensors")


def test_attention_maps_for_visualisation():
    model = load_official(FIXTURES / "tiny_distilled_mask")
    x = np.load(FIXTURES / "tiny_distilled_mask" / "cases.npz")["48x80/input"].transpose(0, 2, 3, 1)
    maps, grid = ks.encoder_attention_maps(model, x)
    assert grid == (3, 5) and sorted(maps) == [0, 1]
    assert maps[1].shape == (1, 2, 2 + 15, 2 + 15)
    np.testing.assert_allclose(maps[1].sum(-1), 1, atol=1e-5)
    # Same weights as inside the forward pass: recompute block 0's from its input.
    block = model.backbone.blocks[0]
    grid_tokens = model.backbone.patch_embedding(x)
    tokens = model.backbone.position_embedding(
        model.backbone.prefix_tokens(grid_tokens), grid_tokens
    )
    recomputed = keras.ops.convert_to_numpy(block.attn.attention_weights(block.norm1(tokens)))
    np.testing.assert_allclose(maps[0], recomputed, atol=1e-6)
