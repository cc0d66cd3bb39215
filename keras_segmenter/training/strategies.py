"""`tf.distribute` strategies by name, for `--strategy`."""

import json
import os

import tensorflow as tf

from keras_segmenter.errors import UserError


def make_strategy(name="auto", cpu_devices=None):
    """Returns the strategy for `--strategy name`.

    Call it before TensorFlow runs any op: a multi-worker cluster and
    logical CPU devices can only be configured before TensorFlow's runtime
    starts (which even listing logical devices does), so this function looks
    only at physical devices until the strategy is made.

    Args:
        name: `"auto"` (mirrored with more than one GPU, else one device),
            `"mirrored"` (all local GPUs, or the CPU), `"multi_worker"`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`),
            `"one_device"`, or `"tpu"`.
        cpu_devices: int or None. On a machine without GPU, splits the CPU
            into this many logical devices, one replica each of
            `"mirrored"` (to try `MirroredStrategy` without GPUs; the
            replicas share the CPU's cores). Defaults to None (one CPU).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_devices is not None:
        if name != "mirrored" or gpus:
            raise UserError(
                "--cpu-devices splits the CPU of a machine without GPU for --strategy mirrored. "
                f"Received: --strategy {name} on a machine with {len(gpus)} GPUs"
            )
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_devices)])
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "--strategy multi_worker needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}).'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(
        "--strategy must be one of auto, mirrored, multi_worker, one_device, tpu. "
        f"Received: {name!r}"
    )


def worker_info():
    """`(task_index, num_workers)` from `TF_CONFIG` (`(0, 1)` without it)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = config.get("cluster", {}).get("worker", [None])
    task = config.get("task", {})
    index = task.get("index", 0) if task.get("type", "worker") == "worker" else 0
    return index, len(workers)
