"""What machine a benchmark ran on, for its JSON output."""

import os
import platform

# The CPU features that decide which oneDNN kernels TensorFlow's matrix
# products get (AMX tiles with bfloat16, AVX-512 with bfloat16, AVX-512, AVX2),
# and that turn them on by default (AVX-512 VNNI or bfloat16, AMX).
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """`(model name, {flag: bool for CPU_FLAGS})` from `/proc/cpuinfo`; `(None, {})` without it."""
    try:
        with open(cpuinfo) as file:
            lines = file.read().splitlines()
    except OSError:
        return None, {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first core's
    flags = set(fields.get("flags", "").split())
    return fields.get("model name"), {flag: flag in flags for flag in CPU_FLAGS}


def onednn_state():
    """TF_ENABLE_ONEDNN_OPTS as set, and whether TensorFlow runs its oneDNN kernels.

    `onednn_on` is TensorFlow's own answer (`IsMklEnabled`): the variable
    when set ("0" off, "1" on), else TensorFlow's default for this CPU (on
    for x86 CPUs with AVX-512 VNNI/bfloat16 or AMX, off for AVX2-only ones).
    """
    try:
        from tensorflow.python.util import _pywrap_util_port

        on = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        on = None
    return {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "onednn_on": on}


def machine_info():
    import keras
    import tensorflow as tf

    cpu, flags = cpu_flags()
    gpus = [
        tf.config.experimental.get_device_details(d).get("device_name", d.name)
        for d in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": flags,
        "onednn": onednn_state(),
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "backend": backend_version(),
    }


def backend_version():
    """Keras' backend and its version, e.g. `"torch 2.13.0+cpu"`."""
    import importlib

    import keras

    name = keras.config.backend()
    return f"{name} {importlib.import_module(name).__version__}"
