"""The GPU benchmarks of issue 14, one JSON line each (also to `$OUT/gpu_benchmarks.jsonl`).

    bash benchmarks/gpu.sh                 # on a fresh GPU machine: pip install -e .[gpu], then this
    python benchmarks/gpu.py [--batch 8] [--runs 5]
    python benchmarks/gpu.py --dry-run     # the same steps, tiny, on any machine (CPU)

1. Seg-B/16-mask inference images/s at 512x512 (the paper's Table 3
   measures 76 images/s on a V100) with `benchmarks/throughput.py`, in
   float32, mixed_float16 and mixed_bfloat16, each without and with XLA.
2. A mixed-precision (mixed_float16) training smoke run of
   `training/fit.py` on the bundled CamVid sample: its exit status, wall
   time and last `history.csv` row.

Each step runs in its own process, so one failure (or out-of-memory) does
not lose the others: it is written as a line with `error`, and the exit
status is then 1. `--dry-run` swaps in the tiny model, 32x32 images and a
2-iteration run, to check the plumbing without a GPU.
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def run(command, timeout):
    """`(returncode, stdout, stderr tail, seconds)` of a subprocess."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout} s", time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr[-2000:], time.perf_counter() - start


def inference_steps(args):
    if args.dry_run:
        sizes = [
            "--model",
            "tiny",
            "--num-classes",
            "3",
            "--size",
            "32",
            "--batch",
            "1",
            "--runs",
            "1",
            "--steps",
            "1",
        ]
    else:
        sizes = [
            "--model",
            "seg_b16_mask",
            "--size",
            "512",
            "--batch",
            str(args.batch),
            "--runs",
            str(args.runs),
        ]
    for precision in PRECISIONS:
        for xla in (False, True):
            command = [
                sys.executable,
                "benchmarks/throughput.py",
                *sizes,
                "--precision",
                precision,
                *(["--xla"] if xla else []),
                "--json",
            ]
            yield {"benchmark": "inference_throughput", "precision": precision, "xla": xla}, command


def fit_smoke(args, output_dir):
    # The README's sample run (fit.py with no arguments), shortened.
    sizes = (
        [
            "--model",
            "seg_ti16_linear",
            "--crop-size",
            "32",
            "--batch-size",
            "2",
            "--iterations",
            "2",
            "--checkpoint-every",
            "2",
            "--val-every",
            "2",
            "--val-images",
            "1",
        ]
        if args.dry_run
        else [
            "--model",
            "seg_ti16_mask",
            "--crop-size",
            "128",
            "--batch-size",
            "4",
            "--lr",
            "1e-4",
            "--iterations",
            "40",
            "--checkpoint-every",
            "20",
            "--val-every",
            "40",
        ]
    )
    return [
        sys.executable,
        "training/fit.py",
        "--dataset",
        "camvid",
        "--precision",
        "mixed_float16",
        *sizes,
        "--output-dir",
        output_dir,
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="inference batch (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per inference setting")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per step")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, no GPU needed")
    args = parser.parse_args()
    out = os.environ.get("OUT")
    lines_path = pathlib.Path(out) / "gpu_benchmarks.jsonl" if out else None
    failed = False

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        if lines_path:
            with open(lines_path, "a") as file:
                file.write(line + "\n")

    for setting, command in inference_steps(args):
        code, stdout, stderr, seconds = run(command, args.timeout)
        if code == 0:
            emit({**json.loads(stdout.strip().splitlines()[-1]), "wall_s": round(seconds, 1)})
            continue
        failed = True
        emit({**setting, "error": stderr, "returncode": code, "command": " ".join(command[1:])})

    with tempfile.TemporaryDirectory() as folder:
        command = fit_smoke(args, os.path.join(folder, "run"))
        code, stdout, stderr, seconds = run(command, args.timeout)
        record = {
            "benchmark": "fit_smoke",
            "precision": "mixed_float16",
            "returncode": code,
            "wall_s": round(seconds, 1),
            "command": " ".join(command[1:-2]),
        }
        history = pathlib.Path(folder, "run", "history.csv")
        if history.is_file():
            rows = list(csv.DictReader(history.open()))
            record["last_history_row"] = rows[-1] if rows else None
        if code != 0:
            failed = True
            record["error"] = stderr
        emit(record)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
