"""What the tests share: paths, the parity error model, a tiny model, layer and subprocess checks.

`conftest.py` holds only pytest's fixtures and hooks; tests import these
helpers from here (`from tests.testing import FIXTURES, tiny_model`).
"""

import contextlib
import ctypes
import http.server
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # outputs of the official code, see the README there
ASSETS = REPO / "tests" / "assets"  # small image/mask pairs and photos, see the READMEs there
CAMVID = ASSETS / "camvid"  # 4 train and 2 val CamVid pairs, 240x180
PHOTOS = ASSETS / "predict"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FLOORS = MANIFEST["tolerance_fp32_vs_fp64_max_abs"]

# Error model behind every float32 parity bound. An output's floor F (fixtures/manifest.json,
# "tolerance_fp32_vs_fp64_max_abs") is the largest |torch fp32 - torch fp64| over its cases, so
# PyTorch's float32 result lies within 1 F of the float64 truth. Ours rounds in another order
# (another library, and each CPU blocks its float32 products its own way), so we allow it 2 F.
# Two results are compared through the truth (triangle inequality): they may differ by the sum
# of their distances to it, so ours vs float64 2 F, ours vs torch fp32 3 F, and ours vs ours
# (a batch of two against one image alone, on any CPU) 4 F. A real mismatch is over 100x
# larger: a wrong decoder head count gives 1.4e-2, LayerNorm eps 1e-6 gives 6e-4.
DISTANCE_TO_FLOAT64 = {"float64": 0, "torch_fp32": 1, "ours": 2}


def max_difference(floor, a, b):
    """Largest |a - b| the error model allows between results `a` and `b` with this floor."""
    return (DISTANCE_TO_FLOAT64[a] + DISTANCE_TO_FLOAT64[b]) * floor


def tiny_model(
    num_classes=5,
    seed=0,
    num_layers=2,
    decoder="mask",
    dropout=None,
    distilled=False,
    dtype=None,
    image_size=32,
    normalization=None,
):
    """A Segmenter small enough for any test: 8-pixel patches, width 16, 2 heads, 32x32 images
    (`image_size`: the training crop, and so the default sliding window).

    `seed` seeds Keras first (None: it is not seeded). `dropout` sets the
    backbone's drop path and the decoder's dropout (None: the defaults);
    `normalization` the backbone's input normalization (None: its default).
    """
    import keras

    import keras_segmenter as ks

    if seed is not None:
        keras.utils.set_random_seed(seed)
    rates = {} if dropout is None else {"drop_path_rate": dropout}
    if normalization is not None:
        rates["normalization"] = normalization
    backbone = ks.ViTBackbone(
        patch_size=8,
        hidden_dim=16,
        num_layers=num_layers,
        num_heads=2,
        mlp_dim=32,
        image_size=image_size,
        distilled=distilled,
        dtype=dtype,
        **rates,
    )
    rates = {} if dropout is None else {"decoder_dropout": dropout}
    return ks.Segmenter(backbone, num_classes, decoder=decoder, dtype=dtype, **rates)


def check_layer(layer, inputs, tmp_path, expected_shape=None):
    """Calls `layer` on `inputs` (a list of arrays) every way a user would.

    Checks that the symbolic output shape matches the eager one, that
    `from_config(get_config())` rebuilds an equivalent layer, and that a
    model wrapping the layer survives a `.keras` save and load with equal
    outputs. Returns the eager output.
    """
    import keras
    import numpy as np

    symbolic = [
        keras.Input(shape=(None,) * (x.ndim - 2) + x.shape[-1:], dtype=x.dtype) for x in inputs
    ]
    outputs = layer(*symbolic)
    model = keras.Model(symbolic, outputs)
    eager = np.asarray(model(inputs))
    assert len(outputs.shape) == eager.ndim
    for static, actual in zip(outputs.shape, eager.shape):
        assert static is None or static == actual
    if expected_shape is not None:
        assert eager.shape == tuple(expected_shape)

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config

    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(inputs)), eager, rtol=1e-6, atol=1e-6)
    return eager


# ---------------------------------------------------------------- subprocesses


def fit_command(*args):
    """The command line `python training/fit.py ARGS`, as the README runs it."""
    return [sys.executable, str(REPO / "training" / "fit.py"), *map(str, args)]


# TensorFlow fixes its devices (and a multi-worker cluster) at start-up, so the
# distributed tests run Python source in fresh processes, started together
# where they do not depend on each other.


def python_env(**extra):
    """The environment of a test's subprocess: this checkout first on the path, TF's C++ logs quiet."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def cluster(size=2):
    """The TF_CONFIG of each of `size` workers of one cluster on free loopback ports."""
    sockets = [socket.socket() for _ in range(size)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(size)
    ]


# Prepended to a spawned script: the kernel kills it when the test process dies (Linux).
_DIE_WITH_PARENT = (
    "import ctypes, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
)


def spawn(script, args, tf_configs=(None,), env=None):
    """Starts the Python source `script` with `args` (JSON in `sys.argv[1]`), one process per
    TF_CONFIG (None: no cluster), `env` added to the environment (e.g. `KERAS_BACKEND`).
    Returns the processes; `finish` waits for them.

    A killed test run takes them with it: a worker whose peer is gone would
    otherwise wait for it forever."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_PARENT + script, json.dumps(args)],
            cwd=REPO,
            env=python_env(**(env or {}), **({"TF_CONFIG": config} if config else {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for config in tf_configs
    ]


def _die_with_parent():
    """In a child, before it runs: the kernel kills it when the test process dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(command, tf_config=None):
    """Starts a command line as the README writes it, in the checkout, with the commands' own
    TensorFlow log settings (and `TF_CONFIG` when given); it dies with the test process."""
    env = {k: v for k, v in python_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return subprocess.Popen(
        [str(word) for word in command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )


def finish(procs, timeout=600):
    """Waits for `procs` (killing any still running after `timeout` s): their CompletedProcess."""
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def result(proc):
    """The JSON a finished subprocess printed last after `RESULT `."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@contextlib.contextmanager
def loopback_server(handler, poll_interval=0.5):
    """Serves `handler` (an `http.server` request handler class or factory) on 127.0.0.1 in a
    thread; yields the base URL. No test touches the network."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
