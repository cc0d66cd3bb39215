"""The training step against the official one (`tests/fixtures/train_steps`).

The fixture holds three iterations of the official training step
(`segm/engine.py`, timm's Nesterov SGD, `PolynomialLR` with `iter_max` 10)
on a tiny Segmenter: initial and final state dicts, the batches, and each
step's loss and learning rate. Here the same three steps run through
`run.train` (the `model.fit` path of `training/fit.py`) and through
`loop.train_custom_loop` (the multi-worker path), with `iter_max` = 10
iterations, a checkpoint after every one, and the losses of `history.csv`
and the weights of checkpoint 3 compared with the fixture.

MirroredStrategy needs its logical devices before TensorFlow starts, and
multi-worker runs need two processes: those run `_SCRIPT` in subprocesses,
all started together.
"""

import json
import os
import types

import numpy as np
import pytest

from tests.testing import FIXTURES, cluster, finish, result, spawn

FIXTURE = FIXTURES / "train_steps"


def _fixture():
    with open(FIXTURE / "config.json") as f:
        config = json.load(f)
    return dict(np.load(FIXTURE / "train_steps.npz")), config


def _model(config):
    """The fixture's tiny Segmenter (one decoder head: width 64 // 64), no dropout."""
    import keras_segmenter as ks

    backbone = ks.ViTBackbone(
        config["patch"],
        config["d_model"],
        config["n_layers"],
        config["n_heads"],
        4 * config["d_model"],
        image_size=config["image"],
        drop_path_rate=0.0,
    )
    return ks.Segmenter(
        backbone, config["n_cls"], decoder_num_layers=config["dec_layers"], decoder_dropout=0.0
    )


def _ported(arrays, config, prefix):
    """The tiny model holding the fixture's `init/` or `final/` state dict."""
    from keras_segmenter.convert.weights import StateDict, port_segmenter

    model = _model(config)
    state = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
    port_segmenter(model, StateDict(state, f"train_steps.npz {prefix}*"))
    return model


def _batches(arrays, config):
    """The fixture's global batches, NHWC images and int32 labels."""
    steps = range(config["steps"])
    images = np.stack([arrays[f"step{i}/images"].transpose(0, 2, 3, 1) for i in steps])
    labels = np.stack([arrays[f"step{i}/labels"].astype("int32") for i in steps])
    return images, labels


def train_fixture_steps(out, strategy=None, precision="float32", custom_loop=False):
    """Runs fit.py's training (or the custom loop) from the fixture's initial
    weights for `iter_max` iterations, the fixture's batches first.

    Writes `<out>/result.npz`: `losses` (the first `steps` iterations) and
    `weights` (after them, from checkpoint `steps`), in `model.weights` order.
    """
    import tensorflow as tf

    from keras_segmenter.training import RunConfig, loop, run
    from keras_segmenter.training.strategies import worker_info

    arrays, fixture = _fixture()
    images, labels = _batches(arrays, fixture)
    init = os.path.join(out, f"init-{worker_info()[0]}.keras")  # one per worker process
    os.makedirs(out, exist_ok=True)
    _ported(arrays, fixture, "init/").save(init)
    config = RunConfig(
        dataset="camvid",
        data_dir=".",
        init=init,
        iterations=fixture["iter_max"],
        batch_size=fixture["batch"],
        crop_size=fixture["image"],
        optimizer="sgd",
        lr=fixture["lr"],
        end_lr=1e-5,
        poly_power=0.9,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.0,
        precision=precision,
        checkpoint_every=1,
        val_every=fixture["iter_max"],
        keep_checkpoints=fixture["iter_max"],
        preview_images=0,
        output_dir=os.path.join(out, "run"),
    ).resolve()
    info = types.SimpleNamespace(
        num_classes=fixture["n_cls"],
        ignore_index=255,
        palette=[[0, 0, 0]] * fixture["n_cls"],
        window_size=None,
        window_stride=None,
        crop_size=fixture["image"],
    )
    eval_ds = tf.data.Dataset.from_tensor_slices((images[0], labels[0]))
    if custom_loop:

        def make_train_ds(batch_size, _seed, start):  # this worker's share of each global batch
            first = worker_info()[0] * batch_size
            share = (images[:, first : first + batch_size], labels[:, first : first + batch_size])
            return tf.data.Dataset.from_tensor_slices(share).repeat().skip(start)

        loop.train_custom_loop(
            config,
            strategy or tf.distribute.get_strategy(),
            make_train_ds=make_train_ds,
            eval_ds=eval_ds,
            info=info,
            verbose=False,
        )
        if worker_info()[0]:
            return None
    else:
        train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
        run.train(
            config, strategy=strategy, train_ds=train_ds, eval_ds=eval_ds, info=info, verbose=0
        )
    with open(os.path.join(config.output_dir, "history.csv")) as f:
        rows = [line.strip().split(",") for line in f]
    column = rows[0].index("loss")
    losses = [float(row[column]) for row in rows[1 : 1 + fixture["steps"]]]
    checkpoint = os.path.join(config.output_dir, "checkpoints", f"ckpt-{fixture['steps']:08d}.npz")
    with np.load(checkpoint) as saved:  # `model.weights` order (training.checkpoints)
        weights = [saved[f"weights/{i}"] for i in range(len(_model(fixture).weights))]
    np.savez(
        os.path.join(out, "result.npz"),
        losses=np.array(losses),
        **{f"weight{i}": w for i, w in enumerate(weights)},
    )
    return os.path.join(out, "result.npz")


def differences(result_path):
    """`(max |loss - official|, max |weight - official|, per-weight dict)`."""
    arrays, fixture = _fixture()
    result = np.load(result_path)
    official = _ported(arrays, fixture, "final/")
    per_weight = {
        w.path: float(np.max(np.abs(result[f"weight{i}"] - np.asarray(w.numpy()))))
        for i, w in enumerate(official.weights)
    }
    loss = float(np.max(np.abs(result["losses"] - arrays["losses"])))
    return loss, max(per_weight.values()), per_weight


# One run in a subprocess: "mirrored" (model.fit on two logical CPUs, the
# global batch of 2 split in two) or "worker" (one of two workers of the
# multi-worker custom loop, TF_CONFIG from the environment).
_SCRIPT = f"""
import json, sys
args = json.loads(sys.argv[1])
import tensorflow as tf
if args["mode"] == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
from {__name__} import train_fixture_steps
path = train_fixture_steps(args["out"], strategy, custom_loop=args["mode"] == "worker")
print("RESULT " + json.dumps(path), flush=True)
"""


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """The mirrored run and both workers of the multi-worker run, started together."""
    out = tmp_path_factory.mktemp("spawned")
    workers = cluster()
    procs = {
        "mirrored": spawn(_SCRIPT, {"mode": "mirrored", "out": str(out / "mirrored")}),
        "worker": spawn(_SCRIPT, {"mode": "worker", "out": str(out / "worker")}, workers),
    }
    yield procs
    for proc in procs["mirrored"] + procs["worker"]:  # those a failed test left running
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _official_schedule_optimizer(fixture):
    """`factories.make_optimizer` for the fixture's recipe."""
    from keras_segmenter.training import RunConfig, factories

    config = RunConfig(
        dataset="ade20k",
        iterations=fixture["iter_max"],
        lr=fixture["lr"],
        batch_size=2,
        output_dir="unused",
    ).resolve()
    return factories.make_optimizer(config)


def test_poly_schedule_gives_the_official_learning_rates():
    import keras

    arrays, fixture = _fixture()
    optimizer = _official_schedule_optimizer(fixture)

    def rate_at(iteration):  # the rate the step after `iteration` steps uses
        optimizer.iterations.assign(iteration)
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    # Evaluated in float32: within one float32 rounding of the official float64 rates.
    rates = [rate_at(i) for i in range(fixture["steps"])]
    np.testing.assert_allclose(rates, arrays["lrs"], rtol=np.finfo("float32").eps, atol=0)
    # Past iter_max the official scheduler keeps the last rate, min_lr.
    assert rate_at(fixture["iter_max"] + 5) == pytest.approx(1e-5, rel=1e-6)


def _torch_sgd_reference(w, grads, rates, momentum, nesterov, weight_decay):
    """torch.optim.SGD's update (dampening 0), in float64."""
    w, buf = w.astype("float64"), None
    for g, lr in zip(grads, rates):
        g = g + weight_decay * w
        buf = g.copy() if buf is None else momentum * buf + g
        w = w - lr * (g + momentum * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("nesterov, weight_decay", [(True, 0.0), (False, 0.0), (True, 0.1)])
def test_torch_sgd_is_pytorch_sgd_under_a_changing_learning_rate(nesterov, weight_decay):
    import keras

    from keras_segmenter.optimizers import TorchSGD

    rng = np.random.default_rng(0)
    start = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") for _ in range(4)]
    rates = [0.1, 0.05, 0.02, 0.01]
    expected = _torch_sgd_reference(start, grads, rates, 0.9, nesterov, weight_decay)
    for optimizer_class, matches in ((TorchSGD, True), (keras.optimizers.SGD, False)):
        # Keras' own SGD folds the rate into its velocity: other steps.
        variable = keras.Variable(start)
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [0, 1, 2], rates
        )  # step i: rates[i]
        optimizer = optimizer_class(
            learning_rate=schedule,
            momentum=0.9,
            nesterov=nesterov,
            weight_decay=weight_decay or None,
        )
        for g in grads:
            optimizer.apply([g], [variable])
        error = np.max(np.abs(variable.numpy() - expected))
        assert error < 1e-6 if matches else error > 1e-3, (optimizer_class.__name__, error)


def test_torch_sgd_excludes_variables_from_weight_decay():
    import keras

    from keras_segmenter.optimizers import TorchSGD

    decayed, excluded = keras.Variable([1.0], name="kernel"), keras.Variable([1.0], name="bias")
    optimizer = TorchSGD(learning_rate=0.5, momentum=0.0, nesterov=False, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply([np.zeros(1, "float32")] * 2, [decayed, excluded])
    assert float(decayed[0]) == pytest.approx(1 - 0.5 * 0.1) and float(excluded[0]) == 1.0


def test_torch_sgd_config_round_trip_and_saved_model_reload(tmp_path):
    import keras

    from keras_segmenter.optimizers import TorchSGD

    optimizer = TorchSGD(
        learning_rate=keras.optimizers.schedules.PolynomialDecay(0.1, 10, 1e-5, power=0.9),
        momentum=0.8,
        nesterov=False,
        weight_decay=1e-4,
    )
    again = TorchSGD.from_config(optimizer.get_config())
    assert again.get_config() == optimizer.get_config()
    assert (again.momentum, again.nesterov, again.weight_decay) == (0.8, False, 1e-4)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is TorchSGD
    assert loaded.optimizer.get_config() == optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _fp32_bounds(arrays, fixture):
    """Float32 round-off of the three steps.

    Losses: 2 ulp of the loss (each side rounds the mean once). Weights:
    `steps + 1` ulp of the largest weight (the norm gains, about 1.3): each
    step rounds the stored weights on both sides (1 ulp apart per step), and
    one more for the gradients' own round-off.
    """
    largest = max(
        float(np.max(np.abs(np.asarray(w.numpy()))))
        for w in _ported(arrays, fixture, "final/").weights
    )
    loss = 2 * float(np.spacing(np.float32(np.max(arrays["losses"]))))
    return loss, (fixture["steps"] + 1) * float(np.spacing(np.float32(largest)))


def _check_fp32(result_path):
    arrays, fixture = _fixture()
    loss_bound, weight_bound = _fp32_bounds(arrays, fixture)
    loss, weight, per_weight = differences(result_path)
    worst = max(per_weight, key=per_weight.get)
    assert loss <= loss_bound, f"losses off by {loss:.3g} > {loss_bound:.3g}"
    assert weight <= weight_bound, f"weights off by {weight:.3g} ({worst}) > {weight_bound:.3g}"
    # Keras' own SGD (lr folded into the velocity) is off by 8e-4 (losses)
    # and 6e-4 (weights) on this fixture: the bounds tell them apart.
    return loss, weight


@pytest.mark.slow
def test_fit_steps_match_the_official_training_steps(tmp_path):
    _check_fp32(train_fixture_steps(str(tmp_path)))


@pytest.mark.slow
def test_mirrored_fit_steps_match_the_official_training_steps(spawned):
    (proc,) = finish(spawned["mirrored"])
    _check_fp32(result(proc))


@pytest.mark.slow
def test_multi_worker_loop_steps_match_the_official_training_steps(spawned):
    chief, other = [result(p) for p in finish(spawned["worker"])]
    assert other is None  # only the chief writes
    _check_fp32(chief)


@pytest.mark.slow
def test_mixed_bfloat16_fit_steps_stay_within_bfloat16_round_off(tmp_path):
    # bfloat16 keeps 8 significant bits (eps 2^-7). Measured on this fixture:
    # losses within 4.8e-4 relative (1.1e-3 absolute) and, per weight tensor,
    # the difference at most 0.092 of that tensor's largest official update
    # over the three steps (about 12 eps: the bf16 gradients' round-off). The
    # bounds: one bf16 rounding of the loss (2^-8 relative) and 16 eps (2^-3)
    # of each tensor's largest update. (Bounds at the bf16 level: the
    # optimizer's semantics are pinned by the float32 tests above.)
    arrays, fixture = _fixture()
    result = np.load(train_fixture_steps(str(tmp_path), precision="mixed_bfloat16"))
    np.testing.assert_allclose(result["losses"], arrays["losses"], rtol=2.0**-8, atol=0)
    start, official = _ported(arrays, fixture, "init/"), _ported(arrays, fixture, "final/")
    for i, (before, after) in enumerate(zip(start.weights, official.weights)):
        before, after = np.asarray(before.numpy()), np.asarray(after.numpy())
        bound = 2.0**-3 * np.max(np.abs(after - before))
        error = np.max(np.abs(result[f"weight{i}"] - after))
        assert error <= bound, f"{official.weights[i].path}: off by {error:.3g} > {bound:.3g}"
