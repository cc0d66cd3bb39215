"""Every benchmark script runs, in its smallest configuration, and prints its JSON line.

The figures themselves are not checked (a tiny model's speed means
nothing); the scripts' plumbing is: arguments, model building, export and
runtimes, and the keys of the JSON they print. The scripts run two at a time.
"""

import concurrent.futures
import json
import subprocess
import sys

import pytest

from tests.testing import REPO

CAMVID = REPO / "keras_segmenter" / "data" / "sample" / "camvid"
MACHINE_KEYS = {"cpu", "cpu_cores", "cpu_flags", "onednn", "gpus", "tensorflow", "keras", "backend"}
TINY = ("--model", "tiny", "--num-classes", "3")
RUNTIMES = ["keras", "saved_model", "onnx", "openvino", "litert"]
ONE_RUN = ("--runs", "1")
# name: the script and its arguments (each command runs once, for the test of that name).
COMMANDS = {
    **{
        f"throughput {runtime}": ("throughput.py", *TINY, "--size", "32", "--batch", "2", *ONE_RUN)
        + ("--steps", "1", "--runtime", runtime)
        for runtime in RUNTIMES
    },
    "throughput mixed xla": ("throughput.py", *TINY, "--size", "32", "--batch", "1", *ONE_RUN)
    + ("--steps", "1", "--precision", "mixed_bfloat16", "--xla"),
    "throughput openvino bf16": ("throughput.py", *TINY, "--size", "32", "--batch", "2")
    + (*ONE_RUN, "--steps", "1", "--runtime", "openvino", "--precision", "mixed_bfloat16"),
    "train_throughput": ("train_throughput.py", *TINY, "--crop", "32", "--batch", "1")
    + ("--warmup", "1", "--steps", "1"),
    "throughput jax": ("throughput.py", *TINY, "--size", "32", "--batch", "2", *ONE_RUN)
    + ("--steps", "1", "--precision", "mixed_bfloat16", "--backend", "jax"),
    "train_throughput torch": ("train_throughput.py", *TINY, "--crop", "32", "--batch", "1")
    + ("--warmup", "1", "--steps", "1", "--backend", "torch", "--torch-compile"),
    "eval_throughput": ("eval_throughput.py", *TINY, "--height", "32", "--width", "48")
    + ("--window", "32", "--stride", "16", *ONE_RUN, "--images", "1"),
    "data_throughput": ("data_throughput.py", "--dataset", "camvid", "--data-dir", str(CAMVID))
    + ("--crop-size", "32", "--batch-size", "2", "--batches", "1", *ONE_RUN),
    "export_latency": ("export_latency.py", *TINY, "--height", "32", "--width", "48")
    + ("--window", "32", *ONE_RUN),
    "first_call": ("first_call.py", *TINY, "--size", "32x48", "--window", "32", *ONE_RUN),
    "limits": ("limits.py", *TINY, "--size", "32", "--batch", "1", "--rounds", "1", *ONE_RUN),
    "limits torch": ("limits.py", *TINY, "--size", "32", "--batch", "1", "--rounds", "1", *ONE_RUN)
    + ("--backend", "torch", "--torch-compile", "--precisions", "mixed_bfloat16"),
    "matmul_bound": ("matmul_bound.py", *TINY, "--size", "32", "--batch", "1", *ONE_RUN),
    "op_profile": ("op_profile.py", *TINY, "--size", "32", "--batch", "1", "--steps", "1"),
    "op_profile train": ("op_profile.py", *TINY, "--size", "32", "--batch", "1", "--steps", "1")
    + ("--train", "--precision", "mixed_bfloat16"),
}


def run_benchmark(script, *args):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_machine(machine):
    assert MACHINE_KEYS <= set(machine)
    flags = {"amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"}
    assert set(machine["cpu_flags"]) <= flags
    assert set(machine["onednn"]) == {"TF_ENABLE_ONEDNN_OPTS", "onednn_on"}


@pytest.fixture(scope="module")
def printed():
    """{name: the future JSON line of that command}: all are queued at once, two run at a time."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        yield {name: pool.submit(run_benchmark, *command) for name, command in COMMANDS.items()}
        pool.shutdown(cancel_futures=True)  # those no selected test waits for


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_throughput(printed, runtime):
    out = printed[f"throughput {runtime}"].result()
    assert out["runtime"] == runtime and out["images_per_sec"] > 0
    if runtime == "keras":
        assert out["class_map_agreement"] is None  # it is the reference
    else:
        # Same weights, same float32 model: the class maps of 2x32x32 pixels.
        assert out["class_map_agreement"] >= 0.99
    check_machine(out["machine"])


def test_throughput_mixed_precision_xla(printed):
    out = printed["throughput mixed xla"].result()
    assert out["precision"] == "mixed_bfloat16" and out["xla"] is True
    assert 0 <= out["class_map_agreement"] <= 1


def test_throughput_runs_openvino_in_bfloat16(printed):
    out = printed["throughput openvino bf16"].result()
    assert out["runtime"] == "openvino" and out["precision"] == "mixed_bfloat16"
    assert out["images_per_sec"] > 0 and 0 <= out["class_map_agreement"] <= 1


def test_throughput_rejects_precision_for_exported_runtimes():
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "throughput.py"),
            "--runtime",
            "onnx",
            "--precision",
            "mixed_bfloat16",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--runtime onnx runs --precision float32 (received --precision mixed_bfloat16)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_train_throughput(printed):
    out = printed["train_throughput"].result()
    assert out["benchmark"] == "train_throughput" and out["images_per_second_per_replica"] > 0
    assert out["first_step_seconds"] > 0
    assert out["backend"] == "tensorflow"
    check_machine(out["machine"])


def test_throughput_and_train_throughput_on_other_backends(printed):
    inference = printed["throughput jax"].result()
    assert (inference["backend"], inference["precision"]) == ("jax", "mixed_bfloat16")
    assert inference["images_per_sec"] > 0 and 0.9 <= inference["class_map_agreement"] <= 1
    assert inference["machine"]["backend"].startswith("jax ")
    training = printed["train_throughput torch"].result()
    assert (training["backend"], training["torch_compile"]) == ("torch", True)
    assert training["images_per_second_per_replica"] > 0
    assert training["machine"]["backend"].startswith("torch ")


def test_eval_throughput(printed):
    out = printed["eval_throughput"].result()
    assert out["images_per_sec"] > 0 and out["traces"] == 1
    check_machine(out["machine"])


def test_data_throughput(printed):
    out = printed["data_throughput"].result()
    assert out["crops_per_s"] > 0
    check_machine(out)


def test_export_latency(printed):
    out = printed["export_latency"].result()
    assert out["same_class_map"] is True and out["saved_model_ms"] > 0
    check_machine(out)


def test_first_call(printed):
    out = printed["first_call"].result()
    # The predict command ran on one photo and wrote its class map; the split's steps
    # are the same steps in a second child.
    assert out["photo"] == [32, 48] and out["seconds_to_class_map"] > 0
    assert out["seconds_total"] >= out["seconds_to_class_map"] * 0.99
    split = out["split_seconds"]
    assert set(split) == {"import", "load", "trace", "first_run", "second_run"}
    assert all(seconds > 0 for seconds in split.values())
    check_machine(out["machine"])


def test_matmul_bound(printed):
    out = printed["matmul_bound"].result()
    # tiny: patch embedding, 2 encoder blocks, proj_dec, 2 decoder blocks, 3 mask products.
    assert out["products"] == 1 + 6 * 2 + 1 + 6 * 2 + 3 and out["gflops"] > 0
    check_machine(out["machine"])


def test_limits_without_the_official_code(printed):
    out = printed["limits"].result()
    assert set(out["precisions"]) == {"float32", "mixed_bfloat16"}
    for found in out["precisions"].values():
        assert found["ours_images_per_sec"] > 0 and found["bound_images_per_sec"] > 0
        ratio = found["ours_images_per_sec"] / found["bound_images_per_sec"]
        assert found["ours_over_bound"] == pytest.approx(ratio, abs=1e-3)
        assert found["official_images_per_sec"] is None and found["ours_over_official"] is None
    check_machine(out["machine"])
    assert (out["backend"], out["torch_compile"]) == ("tensorflow", False)


def test_limits_of_compiled_pytorch(printed):
    # The model compiled by Inductor with frozen weights, against its products compiled so.
    out = printed["limits torch"].result()
    assert (out["backend"], out["torch_compile"]) == ("torch", True)
    assert out["machine"]["backend"].startswith("torch ")
    found = out["precisions"]["mixed_bfloat16"]
    assert set(out["precisions"]) == {"mixed_bfloat16"}
    assert found["ours_images_per_sec"] > 0 and found["bound_images_per_sec"] > 0
    assert found["ours_over_bound"] > 0 and found["ours_over_official"] is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ("--torch-compile",),
            "--torch-compile needs --backend torch (received --backend tensorflow)",
        ),
        (("--backend", "jax"), "--backend jax: this benchmark runs tensorflow or torch"),
    ],
)
def test_limits_rejects_backend_flags(flags, message):
    assert usage_error("limits.py", "--backend", "tensorflow", *flags).endswith(message)


def test_train_throughput_needs_a_warm_up_step():
    # The first step (tracing, or compiling with --torch-compile) is reported, never timed.
    message = "--warmup and --steps must be at least 1 (received 0, 5)"
    assert usage_error("train_throughput.py", "--warmup", "0").endswith(message)


def usage_error(script, *args):
    """The last stderr line of a benchmark that must exit 2 without a traceback."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


# Stands in for ../shared/peer/bench_forward.py (bench_train.py with --train): answers only
# the command limits.py must send (torch.compile for inference; the model, batch and size
# asked for; bf16 autocast for bfloat16).
FAKE_OFFICIAL = """import json, sys
argv = " ".join(sys.argv[1:])
wanted = {"bench_forward.py": "--variants tiny --batches 1 --size 32 --runs 1 --compile-only",
          "bench_train.py": "--variants tiny --crop 32 --batch 1 --classes 3 --steps 1",
          }[sys.argv[0].rsplit("/", 1)[-1]]
ok = argv in (wanted, wanted + " --amp")
found = {"images_per_s": 8.0 if "--amp" in argv else 4.0}
if "--crop" not in argv:  # bench_train.py does not report it
    found["other_procs_cpu_frac"] = 0.01
print(json.dumps(found if ok else {"error": "unexpected arguments: " + argv}))
"""


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_limits_runs_the_official_benchmark_per_precision(tmp_path, mode):
    fake = tmp_path / f"bench_{mode}.py"
    fake.write_text(FAKE_OFFICIAL)
    out = run_benchmark(
        "limits.py",
        *TINY,
        "--size",
        "32",
        "--batch",
        "1",
        "--rounds",
        "2",
        *ONE_RUN,
        "--peer-python",
        sys.executable,
        "--peer-script",
        str(fake),
        *(["--train"] if mode == "train" else []),
    )
    assert out["mode"] == {"forward": "inference", "train": "train"}[mode]
    for precision, official in (("float32", 4.0), ("mixed_bfloat16", 8.0)):
        found = out["precisions"][precision]
        assert found["rounds_official"] == [official, official]
        other = 0.01 if mode == "forward" else None
        assert found["official_other_procs_cpu_frac"] == [other, other]
        ratio = found["ours_images_per_sec"] / official
        assert found["ours_over_official"] == pytest.approx(ratio, abs=1e-3)
        if mode == "train":  # no bound for the training step
            assert found["bound_images_per_sec"] is None and found["ours_over_bound"] is None


def test_op_profile(printed):
    out = printed["op_profile"].result()
    ops = out["ops"]
    # Every call runs one argmax and the model's matrix products (oneDNN's or Eigen's kernels).
    assert ops["ArgMax"]["runs"] == 1 and any("MatMul" in op for op in ops)
    assert 0 < out["op_seconds_per_batch"] and 0 < out["wall_seconds_per_batch"]
    assert out["mode"] == "inference"
    check_machine(out["machine"])


def test_op_profile_of_the_training_step(printed):
    out = printed["op_profile train"].result()
    # One step: the backward pass (the bilinear resizes' gradients), and one random
    # draw per decoder dropout (tiny: 2 blocks x attention weights, attention output,
    # MLP twice).
    assert out["mode"] == "train" and "ResizeBilinearGrad" in out["ops"]
    assert out["ops"]["StatelessRandomUniformFullIntV2"]["runs"] == 2 * 4
    check_machine(out["machine"])


def test_cpu_flags_from_cpuinfo(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from machine import cpu_flags
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    name, flags = cpu_flags(str(cpuinfo))
    assert name == "Intel(R) Xeon(R) Platinum 8481C"
    assert flags == {
        "amx_bf16": True,
        "amx_tile": True,
        "avx512_bf16": True,
        "avx512_vnni": False,
        "avx512f": True,
        "avx2": True,
    }
    assert cpu_flags(str(tmp_path / "missing")) == (None, {})


def test_unknown_model_is_one_line_error():
    error = usage_error("matmul_bound.py", "--model", "seg_x16_mask")
    assert "--model seg_x16_mask: Unknown preset" in error
