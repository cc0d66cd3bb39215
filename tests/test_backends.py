"""The model on JAX and PyTorch: parity, a training step and `.keras` files across backends.

Keras picks its backend once, at import (`KERAS_BACKEND`), so each backend
runs `_SCRIPT` in a fresh process. There run: the forward parity test of
`tests/test_parity.py` on every official fixture and its ImageNet encoder
tests; the sliding-window test of `tests/test_inference.py`; the attention
maps test of `tests/convert/test_convert.py`; `model.fit` (the `compile()`
defaults, with the fixture's schedule) over the official training steps of
`tests/fixtures/train_steps`, under the bounds of
`tests/training/test_train_steps.py` (on PyTorch also with the step compiled:
`jit_compile=True`, and that step's random masks); and the reading of a
`.keras` file that TensorFlow (this process) wrote, while this process reads
back the file the other backend writes; on PyTorch also the README's example.
The same tests, the same bounds, other kernels.
"""

import ctypes
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.testing import (
    FIXTURES,
    FLOORS,
    REPO,
    finish,
    fit_command,
    max_difference,
    python_env,
    result,
    spawn,
)

_SCRIPT = """
import json, sys
args = json.loads(sys.argv[1])
import keras
assert keras.config.backend() == args["backend"], keras.config.backend()
from tests.test_backends import check_this_backend
check_this_backend(args["out"])
print("RESULT " + json.dumps(keras.config.backend()), flush=True)
"""

# Saved on one backend, read on another: ours against ours (tests/testing.py).
SAVED_ATOL = max_difference(FLOORS["tiny_mask"]["logits"], "ours", "ours")


def _saved_case():
    """An image that needs padding (50x70, patch 16): the resize and crop run."""
    return np.load(FIXTURES / "tiny_mask" / "cases.npz")["50x70/input"].transpose(0, 2, 3, 1)


def _save_with_logits(model, out):
    """`<out>/<backend>.keras` and the logits it gave on `_saved_case()` before saving."""
    backend = keras.config.backend()
    model.save(os.path.join(out, f"{backend}.keras"))
    np.save(os.path.join(out, f"{backend}.npy"), keras.ops.convert_to_numpy(model(_saved_case())))


def _load_and_compare(out, backend):
    loaded = keras.saving.load_model(os.path.join(out, f"{backend}.keras"))
    logits = keras.ops.convert_to_numpy(loaded(_saved_case()))
    np.testing.assert_allclose(
        logits, np.load(os.path.join(out, f"{backend}.npy")), atol=SAVED_ATOL, rtol=0
    )


def fit_official_steps(out, jit_compile="auto"):
    """`model.fit` from the fixture's initial weights, one fixture batch per epoch.

    `compile()` keeps its default loss and metric; the optimizer is the
    default's (`make_optimizer`) with the fixture's `iter_max` and rate;
    `jit_compile` goes to `compile()` (on PyTorch, True compiles the step:
    `keras_segmenter.models.torch_train_step`).
    Writes `<out>/result.npz` as `train_fixture_steps` does, with each step's mIoU
    (`miou`), and returns its path.
    """
    from tests.training.test_train_steps import (
        _batches,
        _fixture,
        _official_schedule_optimizer,
        _ported,
    )

    arrays, fixture = _fixture()
    images, labels = _batches(arrays, fixture)
    model = _ported(arrays, fixture, "init/")
    model.compile(optimizer=_official_schedule_optimizer(fixture), jit_compile=jit_compile)
    # One batch an epoch: each epoch's loss is that step's loss, not a running mean.
    batches = (batch for batch in zip(images, labels))
    history = model.fit(batches, epochs=fixture["steps"], steps_per_epoch=1, verbose=0)
    if jit_compile is True and keras.config.backend() == "torch":
        assert len(model.train_function.graphs) == 1  # the compiled step ran every batch
    path = os.path.join(out, "result.npz")
    weights = {f"weight{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.weights)}
    miou = np.array(history.history["mIoU"])
    np.savez(path, losses=np.array(history.history["loss"]), miou=miou, **weights)
    return path


def check_compiled_step():
    """PyTorch, `jit_compile=True`: dropout and drop-path masks are drawn afresh at every
    step, and again the same after `keras.utils.set_random_seed`; the graph returns the
    logits only for a metric; a loss scale (mixed_float16) is refused; in bf16 the gradients
    are float32's to round-off; freed memory is kept for the next step."""
    import torch

    import keras_segmenter as ks

    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    masks = np.random.default_rng(1).integers(0, 5, (2, 32, 32)).astype("int32")

    def model(rate, optimizer, metric=True):
        backbone = ks.ViTBackbone(16, 32, 2, 2, 64, image_size=32, drop_path_rate=rate)
        model = ks.Segmenter(backbone, 5, decoder_num_layers=1, decoder_dropout=rate)
        metrics = ["sparse_categorical_accuracy"] if metric else None
        model.compile(optimizer=optimizer, jit_compile=True, metrics=metrics)
        return model

    def steps(rate, seed=0):
        """(loss, accuracy) of three compiled steps at learning rate 0."""
        keras.utils.set_random_seed(seed)
        trained = model(rate, keras.optimizers.SGD(0.0))
        keras.utils.set_random_seed(seed)  # the same masks from here, whatever the init drew
        results = [trained.train_on_batch(images, masks, return_dict=True) for _ in range(3)]
        return [(r["loss"], r["sparse_categorical_accuracy"]) for r in results]

    drawn = steps(0.3)
    assert len({loss for loss, _ in drawn}) == 3, drawn  # learning rate 0: only the masks change
    assert 0 < drawn[0][1] < 1, drawn  # the metric read the graph's logits
    assert steps(0.3) == drawn
    assert steps(0.3, seed=1) != drawn
    assert not model(0.0, "sgd", metric=False).make_train_function().returns_logits
    scaled = model(0.0, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    with pytest.raises(ValueError, match="loss scale"):
        scaled.train_on_batch(images, masks)
    # bf16 (its attention written out): the float32 gradients to bf16's round-off (<= 0.032).
    reference = _step_gradients(images, masks, None, jit_compile=False)
    compiled = _step_gradients(images, masks, "mixed_bfloat16", jit_compile=True)
    for path, gradient in reference.items():
        error = np.linalg.norm(compiled[path] - gradient) / np.linalg.norm(gradient)
        assert error < 0.1, (path, error)
    # The compiled step left glibc's malloc keeping freed blocks: a 64 MiB one comes from
    # its heap, not from a mapping of its own (which the next step would page-fault again).
    assert _mapped_bytes(lambda: torch.empty(2**26, dtype=torch.uint8)) == 0


def _step_gradients(images, masks, dtype, jit_compile):
    """{variable path: float64 gradient} of `tiny_model`'s first training step."""
    from tests.testing import tiny_model

    model = tiny_model(5, dropout=0.0, dtype=dtype)
    model.compile(optimizer="sgd", jit_compile=jit_compile)
    gradients, apply = {}, model.optimizer.apply

    def record(grads, variables=None):
        for variable, grad in zip(model.trainable_variables, grads):
            gradients[variable.path] = keras.ops.convert_to_numpy(grad).astype("float64")
        return apply(grads, variables)

    model.optimizer.apply = record
    model.train_on_batch(images, masks)
    return gradients


def _mapped_bytes(allocate):
    """Bytes of glibc's mapped blocks (`mallinfo2().hblkhd`) while `allocate()`'s result lives."""

    class Info(ctypes.Structure):
        names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Info
    before = mallinfo2().hblkhd
    kept = allocate()  # noqa: F841  alive until the second reading
    return mallinfo2().hblkhd - before


def check_train_on_batch_does_not_trace_the_model_again():
    """JAX and PyTorch trace the whole model before a `train_on_batch` while any sublayer is
    unbuilt (the attention's dropout, used only through `scale`; the uncalled preprocessor):
    0.1 s of a 1.7 s Seg-S/16 bf16 step on PyTorch."""
    from keras.src import backend

    from tests.testing import tiny_model

    model = tiny_model(num_classes=3, dropout=0.1)
    model.compile(optimizer="sgd")
    x, y = np.zeros((2, 32, 32, 3), "float32"), np.zeros((2, 32, 32), "int32")
    model.train_on_batch(x, y)
    traced, spec = [], backend.compute_output_spec
    backend.compute_output_spec = lambda *args, **kwargs: traced.append(1) or spec(*args, **kwargs)
    try:
        model.train_on_batch(x, y)
        model.test_on_batch(x, y)
    finally:
        backend.compute_output_spec = spec
    assert not traced


def readme_snippet():
    """The Python block of the README's "Backends" section."""
    section = (REPO / "README.md").read_text().split("\n### Backends\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def check_this_backend(out):
    """What `_SCRIPT` runs: every check raises on failure."""
    from keras_segmenter.convert import load_official
    from tests import test_inference, test_parity
    from tests.convert import test_convert
    from tests.training.test_train_steps import _check_fp32

    for fixture in test_parity.OFFICIAL:
        model = load_official(FIXTURES / fixture)
        test_parity.test_logits_match_the_official_model((fixture, model))
        if fixture == "tiny_mask":
            for case in test_inference.CASES:
                test_inference.test_sliding_window_matches_official(model, case)
            _load_and_compare(out, "tensorflow")
            _save_with_logits(model, out)
    test_convert.test_attention_maps_for_visualisation()
    for source in ("timm_vit", "augreg_vit/tiny.npz"):  # position embeddings resized at load
        test_parity.test_imagenet_encoders_match_the_official_segmenter_encoder(source)
        test_parity.test_imagenet_position_embedding_is_resampled_like_the_official_loader(source)
    eager = fit_official_steps(out)
    _check_fp32(eager)
    check_train_on_batch_does_not_trace_the_model_again()
    if keras.config.backend() == "torch":
        eager_miou = np.load(eager)["miou"]
        compiled = fit_official_steps(out, jit_compile=True)  # the same file, rewritten
        _check_fp32(compiled)
        # The compiled graph hands the metric the step's logits: the eager step's mIoU.
        np.testing.assert_allclose(np.load(compiled)["miou"], eager_miou, rtol=1e-6)
        assert eager_miou.min() > 0, eager_miou
        check_compiled_step()
        # The README's example, as written (JAX: 25 s more).
        os.chdir(out)
        exec(readme_snippet(), {})
        assert os.path.exists("model.keras")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_parity_training_and_saved_files_on_another_backend(backend, tmp_path):
    from keras_segmenter.convert import load_official

    assert keras.config.backend() == "tensorflow"
    _save_with_logits(load_official(FIXTURES / "tiny_mask"), str(tmp_path))
    args = {"backend": backend, "out": str(tmp_path)}
    (proc,) = finish(spawn(_SCRIPT, args, env={"KERAS_BACKEND": backend}), timeout=400)
    assert result(proc) == backend
    _load_and_compare(str(tmp_path), backend)


@pytest.mark.parametrize(
    "command",
    [fit_command("--help"), [sys.executable, "-m", "keras_segmenter.predict", "--help"]],
    ids=["fit.py", "-m keras_segmenter.predict"],
)
def test_commands_refuse_another_backend_in_one_line(command):
    done = subprocess.run(
        command, env=python_env(KERAS_BACKEND="jax"), capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: KERAS_BACKEND=jax: the commands run on TensorFlow (tf.data, tf.distribute, "
        "the exports); unset it. The model itself runs on jax from Python (README, Models: "
        "Backends)"
    ]
