"""MirroredStrategy, multi-worker custom loop, and kill-and-resume.

TensorFlow fixes its devices at start-up, so the distributed runs happen in
subprocesses (each bounded by a timeout) running `_SCRIPT`.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny Segmenter, synthetic data whose two half-batches have very different
# numbers of ignored pixels (so a per-replica mean would differ from the
# global one), and one of three runs: "mirrored" (2 logical CPUs vs one
# device), "worker" (multi-worker custom loop, TF_CONFIG from the env) or
# "fit" (model.fit, optionally dying after N iterations).
_SCRIPT = textwrap.dedent(
    """
    import json, sys, types
    args = json.loads(sys.argv[1])
    import tensorflow as tf
    if args["mode"] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if args["mode"] == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, numpy as np
    import keras_segmenter as ks
    from test_training_distributed import _tiny_model
    from keras_segmenter.training import RunConfig, loop, run

    K = 4

    def data(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
        y = np.clip(np.floor(x[..., 0] * 1.5 + 2), 0, K - 1).astype("int32")
        y[0::4, :, :20] = 255  # image 0 of every 4 is mostly ignored
        y[1::4, :3] = 255
        return x, y

    def train_ds(batch, seed=0):
        return tf.data.Dataset.from_tensor_slices(data(16, 0)).repeat().batch(batch)

    eval_ds = tf.data.Dataset.from_tensor_slices(data(3, 1))
    info = types.SimpleNamespace(num_classes=K, ignore_index=255, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                                 window_size=None, window_stride=None)
    init = args["out"] + "_init.keras"
    if not args.get("resume"):
        _tiny_model(K).save(init)

    def config(out, **kw):
        base = dict(dataset="camvid", data_dir=".", init=init, iterations=args.get("iterations", 4),
                    checkpoint_every=args.get("every", 2), val_every=args.get("every", 2), batch_size=4,
                    crop_size=32, optimizer="sgd", lr=0.05, output_dir=out, preview_images=1, resume=args.get("resume", False))
        base.update(kw)
        return RunConfig(**base)

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) >= args["stop_after"]:
                raise KeyboardInterrupt("killed")

    def report(model, summary, history=None):
        summary.update(weights_sha256=loop.weights_digest(model),
                       weights=[float(np.sum(w)) for w in model.get_weights()],
                       history=history)
        print("RESULT " + json.dumps(summary), flush=True)

    if args["mode"] == "mirrored":
        results = {}
        for name, strategy in (("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                               ("single", tf.distribute.OneDeviceStrategy("/cpu:0"))):
            model, summary = run.train(config(args["out"] + "_" + name), strategy=strategy, train_ds=train_ds(4),
                                       eval_ds=eval_ds, info=info, verbose=0)
            summary["replicas"] = strategy.num_replicas_in_sync
            summary["history_rows"] = open(summary["history"]).read()
            summary["weights"] = [w.tolist() for w in model.get_weights()]
            results[name] = summary
        print("RESULT " + json.dumps(results), flush=True)
    elif args["mode"] == "worker":
        model, summary = loop.train_custom_loop(config(args["out"]), strategy, make_train_ds=train_ds,
                                                eval_ds=eval_ds, info=info, stop_after=args.get("stop_after"),
                                                verbose=False)
        report(model, summary)
    else:
        extra = [StopAfter()] if args.get("stop_after") else []
        model, summary = run.train(config(args["out"]), train_ds=train_ds(4), eval_ds=eval_ds, info=info,
                                   extra_callbacks=extra, verbose=0)
        report(model, summary)
    """
)


def _tiny_model(num_classes):
    import keras
    import keras_segmenter as ks

    keras.utils.set_random_seed(0)
    backbone = ks.ViTBackbone(8, 16, 2, 2, 32, image_size=32, drop_path_rate=0.0)
    return ks.Segmenter(backbone, num_classes, decoder_dropout=0.0)


def _run(tmp_path, args, env=None, timeout=300):
    script = tmp_path / "train_script.py"
    script.write_text(_SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), json.dumps(args)], cwd=REPO, env=env or _env(),
        capture_output=True, text=True, timeout=timeout,
    )


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    env.update(extra)
    return env


def _result(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result; rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_replica_on_the_global_batch(tmp_path):
    results = _result(_run(tmp_path, {"mode": "mirrored", "out": str(tmp_path / "run")}))
    mirrored, single = results["mirrored"], results["single"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    assert mirrored["iteration"] == single["iteration"] == 4
    # history.csv: loss, train mIoU and val mIoU per chunk
    rows_m = [r.split(",") for r in mirrored["history_rows"].splitlines()]
    rows_s = [r.split(",") for r in single["history_rows"].splitlines()]
    assert rows_m[0] == rows_s[0] and "loss" in rows_m[0] and "mIoU" in rows_m[0]
    for column in ("loss", "mIoU", "val_mIoU", "learning_rate"):
        i = rows_m[0].index(column)
        np.testing.assert_allclose(
            [float(r[i]) for r in rows_m[1:]], [float(r[i]) for r in rows_s[1:]], rtol=1e-4, err_msg=column
        )
    for a, b in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(tmp_path, args, timeout=240):
    script = tmp_path / "train_script.py"
    script.write_text(_SCRIPT)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, str(script), json.dumps(args)],
            cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.mark.slow
def test_multi_worker_custom_loop_identical_weights_and_restart(tmp_path):
    out = str(tmp_path / "mw")
    _tiny_model(4).save(out + "_init.keras")  # both workers start from it ("resume" keeps it)
    first = _run_workers(tmp_path, {"mode": "worker", "out": out, "iterations": 6, "stop_after": 5, "resume": True})
    for proc in first:  # killed after iteration 5: checkpoints 2 and 4 are complete
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr[-3000:]
    latest = json.load(open(os.path.join(out, "checkpoints", "latest.json")))
    assert latest["iteration"] == 4
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        "ckpt-00000002.weights.h5", "ckpt-00000004.weights.h5", "latest.json"]

    second = _run_workers(tmp_path, {"mode": "worker", "out": out, "iterations": 6, "resume": True})
    results = [_result(proc) for proc in second]
    assert [r["worker"] for r in results] == [0, 1]
    assert all(r["num_workers"] == 2 and r["iteration"] == 6 for r in results)
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert np.isfinite(results[0]["final_loss"])
    assert results[0]["model"] and os.path.exists(results[0]["model"]) and results[1]["model"] is None
    assert json.load(open(os.path.join(out, "checkpoints", "latest.json")))["iteration"] == 6


@pytest.mark.slow
def test_killed_fit_run_resumes_at_same_iteration_and_learning_rate(tmp_path):
    full = _result(_run(tmp_path, {"mode": "fit", "out": str(tmp_path / "full"), "iterations": 8}))
    out = str(tmp_path / "killed")
    killed = _run(tmp_path, {"mode": "fit", "out": out, "iterations": 8, "stop_after": 5})
    assert killed.returncode != 0 and "KeyboardInterrupt" in killed.stderr
    checkpoints = os.path.join(out, "checkpoints")
    assert json.load(open(os.path.join(checkpoints, "latest.json")))["iteration"] == 4  # nothing lost
    assert not os.path.exists(os.path.join(out, "model.keras"))

    resumed_proc = _run(tmp_path, {"mode": "fit", "out": out, "iterations": 8, "resume": True})
    resumed = _result(resumed_proc)
    assert "Resumed from" in resumed_proc.stdout and "ckpt-00000004" in resumed_proc.stdout
    assert resumed["iteration"] == full["iteration"] == 8
    assert resumed["learning_rate"] == pytest.approx(full["learning_rate"], rel=1e-6)
    # No randomness in the model, and the 4-batch synthetic data restarts in
    # phase with iteration 4: the resumed run ends with the same weights.
    np.testing.assert_allclose(resumed["weights"], full["weights"], rtol=1e-4, atol=1e-4)
    assert sorted(os.listdir(checkpoints)) == ["ckpt-00000006.weights.h5", "ckpt-00000008.weights.h5", "latest.json"]
    rows = open(os.path.join(out, "history.csv")).read().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2", "3"]  # chunk 2 appended after resume
