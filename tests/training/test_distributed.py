"""MirroredStrategy, multi-worker custom loop, and kill-and-resume.

TensorFlow fixes its devices at start-up, so the distributed runs happen in
subprocesses (each bounded by a timeout) running `_SCRIPT`; runs that do not
depend on each other run at the same time.
"""

import json
import os
import signal
import textwrap
import time

import numpy as np
import pytest

from tests.testing import cluster, finish, result, spawn, tiny_model

# A tiny Segmenter, synthetic data whose two half-batches have very different
# numbers of ignored pixels (so a per-replica mean would differ from the
# global one), and one of four runs: "mirrored" (2 logical CPUs vs one
# device), "worker" (multi-worker custom loop, TF_CONFIG from the env, each
# worker its own shard of the data), "single" (the same custom loop on one
# device fed both shards in one batch) or "fit" (model.fit). "kill_at_image":
# N kills the process (SIGKILL) while it validates its N-th image; "slow"
# makes every training batch take that many seconds, so a test can kill the
# run from outside between two checkpoints.
_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time, types
    args = json.loads(sys.argv[1])
    import tensorflow as tf
    if args["mode"] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if args["mode"] == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, numpy as np
    import keras_segmenter as ks
    from tests.testing import tiny_model
    from keras_segmenter.training import RunConfig, loop, run

    K = 4

    def data(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
        y = np.clip(np.floor(x[..., 0] * 1.5 + 2), 0, K - 1).astype("int32")
        y[0::4, :, :20] = 255  # image 0 of every 4 is mostly ignored
        y[1::4, :3] = 255
        return x, y

    def slow(images, masks):
        if args.get("slow"):
            images = tf.ensure_shape(tf.py_function(lambda t: (time.sleep(args["slow"]), t)[1], [images], tf.float32),
                                     images.shape)
        return images, masks

    def train_ds(batch, seed=0, start=0):
        return tf.data.Dataset.from_tensor_slices(data(16, 0)).repeat().batch(batch).skip(start).map(slow)

    def shard(batch, worker):  # worker 1's images are not worker 0's
        x, y = data(8, 10 + worker)
        return tf.data.Dataset.from_tensor_slices((x, np.where(y == 255, 255, (y + worker) % K))).repeat().batch(batch)

    def worker_ds(batch, seed, start):  # seed = config seed (0) + 1000 * worker
        return shard(batch, seed // 1000).skip(start).map(slow)

    def both_shards_ds(batch, seed, start):
        pair = tf.data.Dataset.zip(shard(batch // 2, 0), shard(batch // 2, 1))
        return pair.map(lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0))).skip(start)

    images_seen = [0]

    def count_and_maybe_kill(image):
        images_seen[0] += 1
        if images_seen[0] == args.get("kill_at_image"):
            os.kill(os.getpid(), signal.SIGKILL)
        return image

    eval_ds = tf.data.Dataset.from_tensor_slices(data(3, 1)).map(
        lambda x, y: (tf.ensure_shape(tf.py_function(count_and_maybe_kill, [x], tf.float32), x.shape), y))
    info = types.SimpleNamespace(num_classes=K, ignore_index=255, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                                 window_size=None, window_stride=None)
    init = args["out"] + "_init.keras"
    if not os.path.exists(init):
        tiny_model(K, dropout=args.get("dropout", 0.0)).save(init)

    def config(out, **kw):
        base = dict(dataset="camvid", data_dir=".", init=init, iterations=args.get("iterations", 4),
                    checkpoint_every=args.get("every", 2), val_every=args.get("every", 2), batch_size=4,
                    crop_size=32, optimizer="sgd", lr=0.05, output_dir=out, preview_images=1,
                    resume=args.get("resume", False), seed=0, deterministic=True)
        base.update(kw)
        return RunConfig(**base).resolve()

    def report(model, summary):
        history = os.path.join(args["out"], "history.csv")
        summary.update(weights_sha256=loop.weights_digest(model),
                       weights=[w.tolist() for w in model.get_weights()],
                       history_rows=open(history).read() if summary.get("model") else None)
        print("RESULT " + json.dumps(summary), flush=True)

    if args["mode"] == "mirrored":
        results = {}
        for name, strategy in (("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                               ("single", tf.distribute.OneDeviceStrategy("/cpu:0"))):
            model, summary = run.train(config(args["out"] + "_" + name, deterministic=False), strategy=strategy,
                                       train_ds=train_ds(4),
                                       eval_ds=eval_ds, info=info, verbose=0)
            summary["replicas"] = strategy.num_replicas_in_sync
            summary["history_rows"] = open(summary["history"]).read()
            summary["weights"] = [w.tolist() for w in model.get_weights()]
            results[name] = summary
        print("RESULT " + json.dumps(results), flush=True)
    elif args["mode"] in ("worker", "single"):
        if args["mode"] == "single":
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        model, summary = loop.train_custom_loop(config(args["out"]), strategy,
                                                make_train_ds=worker_ds if args["mode"] == "worker" else both_shards_ds,
                                                eval_ds=eval_ds, info=info, verbose=False)
        report(model, summary)
    else:
        model, summary = run.train(config(args["out"]), train_ds=train_ds(4), eval_ds=eval_ds, info=info, verbose=0)
        report(model, summary)
    """
)


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_replica_on_the_global_batch(tmp_path):
    (proc,) = finish(spawn(_SCRIPT, {"mode": "mirrored", "out": str(tmp_path / "run")}))
    results = result(proc)
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
            [float(r[i]) for r in rows_m[1:]],
            [float(r[i]) for r in rows_s[1:]],
            rtol=1e-4,
            err_msg=column,
        )
    for a, b in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5)


def _kill_after_checkpoint(procs, checkpoints, iteration, timeout=300):
    """SIGKILLs `procs` as soon as `checkpoints/latest.json` reaches `iteration`."""
    deadline = time.time() + timeout
    latest = os.path.join(checkpoints, "latest.json")
    while time.time() < deadline and all(proc.poll() is None for proc in procs):
        try:
            if json.load(open(latest))["iteration"] >= iteration:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    return finish(procs)


def _column(rows, name):
    lines = [line.split(",") for line in rows.splitlines()]
    i = lines[0].index(name)
    return [float(line[i]) for line in lines[1:]]


@pytest.mark.slow
def test_multi_worker_train_miou_counts_every_worker_and_a_killed_run_resumes_exactly(tmp_path):
    args = {"iterations": 6, "every": 2}
    for out in ("mw", "killed"):  # both workers start from it
        tiny_model(4, dropout=0.0).save(str(tmp_path / out) + "_init.keras")
    # Two workers, and at the same time the same steps on one device fed both workers' shards.
    two_workers = cluster()
    full_procs = spawn(_SCRIPT, dict(args, mode="worker", out=str(tmp_path / "mw")), two_workers)
    single_procs = spawn(_SCRIPT, dict(args, mode="single", out=str(tmp_path / "one")))
    full = [result(p) for p in finish(full_procs)]
    single = result(finish(single_procs)[0])
    assert [r["worker"] for r in full] == [0, 1] and all(r["num_workers"] == 2 for r in full)
    assert full[0]["weights_sha256"] == full[1]["weights_sha256"]
    assert full[0]["model"] and full[1]["model"] is None
    # Train mIoU and loss over the global batch (both workers' shards), as one device computes them.
    for column in ("mIoU", "loss"):
        np.testing.assert_allclose(
            _column(full[0]["history_rows"], column),
            _column(single["history_rows"], column),
            rtol=1e-6,
            err_msg=column,
        )
    for a, b in zip(full[0]["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-5)

    out = str(tmp_path / "killed")
    killed_workers = cluster()
    killed_procs = spawn(_SCRIPT, dict(args, mode="worker", out=out, slow=0.3), killed_workers)
    for proc in _kill_after_checkpoint(killed_procs, os.path.join(out, "checkpoints"), 2):
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert json.load(open(os.path.join(out, "checkpoints", "latest.json")))["iteration"] < 6
    resumed_workers = cluster()
    resumed = [
        result(p)
        for p in finish(
            spawn(_SCRIPT, dict(args, mode="worker", out=out, resume=True), resumed_workers)
        )
    ]
    assert all(r["iteration"] == 6 for r in resumed)
    assert resumed[0]["weights_sha256"] == resumed[1]["weights_sha256"]
    for a, b in zip(resumed[0]["weights"], full[0]["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    for column in ("mIoU", "loss", "val_mIoU"):
        np.testing.assert_allclose(
            _column(resumed[0]["history_rows"], column),
            _column(full[0]["history_rows"], column),
            rtol=1e-6,
            err_msg=column,
        )


@pytest.mark.slow
def test_fit_run_killed_during_validation_redoes_it_and_ends_as_the_uninterrupted_run(tmp_path):
    args = {"mode": "fit", "iterations": 8, "dropout": 0.1}
    out = str(tmp_path / "killed")
    # The uninterrupted run and the killed one at once. The eval set has 3 images and the
    # preview reads 1 first: image 6 is the second validation (iteration 4).
    procs = spawn(_SCRIPT, dict(args, out=str(tmp_path / "full")))
    procs += spawn(_SCRIPT, dict(args, out=out, kill_at_image=6))
    full_proc, killed = finish(procs)
    full = result(full_proc)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = os.path.join(out, "checkpoints")
    assert json.load(open(os.path.join(checkpoints, "latest.json")))["iteration"] == 2
    assert not os.path.exists(os.path.join(out, "model.keras"))

    (resumed_proc,) = finish(spawn(_SCRIPT, dict(args, out=out, resume=True)))
    resumed = result(resumed_proc)
    assert "Resumed from" in resumed_proc.stdout and "ckpt-00000002" in resumed_proc.stdout
    assert resumed["iteration"] == full["iteration"] == 8
    assert resumed["learning_rate"] == full["learning_rate"]
    for a, b in zip(resumed["weights"], full["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    assert sorted(os.listdir(checkpoints)) == [
        "ckpt-00000006.npz",
        "ckpt-00000008.npz",
        "latest.json",
    ]
    # every epoch once, validation at iteration 4 redone: the same rows as the uninterrupted run
    assert [row.split(",")[0] for row in resumed["history_rows"].splitlines()[1:]] == [
        "0",
        "1",
        "2",
        "3",
    ]
    for column in ("loss", "mIoU", "val_mIoU", "learning_rate"):
        np.testing.assert_allclose(
            _column(resumed["history_rows"], column),
            _column(full["history_rows"], column),
            rtol=1e-6,
            err_msg=column,
        )
