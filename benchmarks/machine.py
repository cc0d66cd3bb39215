"""What machine a benchmark ran on, for its JSON output."""

import os
import platform


def machine_info():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
