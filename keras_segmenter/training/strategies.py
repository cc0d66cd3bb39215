"""`tf.distribute` strategies by name, for `--strategy`."""

import json
import os

import tensorflow as tf


def make_strategy(name="auto"):
    """Returns the strategy for `--strategy name`.

    Args:
        name: `"auto"` (mirrored with more than one GPU, else one device),
            `"mirrored"` (all local GPUs, or the CPU), `"multi_worker"`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`),
            `"one_device"`, or `"tpu"`.

    `multi_worker` must be created before TensorFlow runs any op.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
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
    raise ValueError(
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
