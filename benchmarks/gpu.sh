#!/usr/bin/env bash
# The GPU benchmarks as one command on a fresh GPU machine (see benchmarks/gpu.py):
#     bash benchmarks/gpu.sh            # JSON lines on stdout, and in $OUT/gpu_benchmarks.jsonl if OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[gpu]"
python -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 'no GPU visible to TensorFlow')"
python benchmarks/gpu.py "$@"
