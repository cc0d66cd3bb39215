"""What a newcomer sees: the README's main command and the commands it suggests, output to a pipe.

`training/fit.py` runs here as the README's `python training/fit.py` does
(the same `run.train` path, validation every other chunk), only on a tiny
budget; then the `predict` and `evaluate` commands it prints at the end are
run exactly as printed. None of the outputs may hold TensorFlow's C++
start-up lines, a warning, a `nan`, a progress-bar redraw or a line of more
than 1,000 characters.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CAMVID = REPO / "tests" / "data" / "camvid"

# What TF's C++ runtime writes at start-up (absl's `I0000 00:00:...` lines and their preamble).
TF_STARTUP = re.compile(
    r"absl::InitializeLog|cpu_feature_guard|oneDNN custom operations|^[IWEF]\d{4} ", re.M
)


def run(args, cwd):
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def assert_clean(output):
    assert not TF_STARTUP.search(output), TF_STARTUP.search(output).group(0)
    warnings = [line for line in output.splitlines() if re.search(r"warning", line, re.I)]
    assert not warnings, warnings
    assert not re.search(r"\bnan\b", output, re.I), [
        line for line in output.splitlines() if "nan" in line.lower()
    ]
    assert "\r" not in output and "\b" not in output  # no bar redrawn in place
    assert max(map(len, output.splitlines())) <= 1000


def suggested(output, module_or_script):
    """The command line printed under "Next:" that runs `module_or_script`."""
    lines = [line.strip() for line in output.splitlines() if module_or_script in line]
    assert lines, f"no {module_or_script} command in:\n{output[-3000:]}"
    return shlex.split(lines[-1])


@pytest.mark.slow
def test_main_command_and_its_suggestions_print_clean_output(tmp_path):
    output = run(
        [
            sys.executable,
            str(REPO / "training" / "fit.py"),
            "--dataset",
            "camvid",
            "--data-dir",
            str(CAMVID),
            "--model",
            "seg_ti16_mask",
            "--crop-size",
            "64",
            "--batch-size",
            "2",
            "--val-images",
            "1",
            "--iterations",
            "6",
            "--checkpoint-every",
            "2",
            "--val-every",
            "4",
            "--output-dir",
            "run",
        ],
        cwd=tmp_path,
    )
    assert_clean(output)
    # One progress line per chunk of 2 iterations; validation shown only where it ran.
    epoch_lines = [line for line in output.splitlines() if line.startswith("2/2 ")]
    assert len(epoch_lines) == 3, output
    assert "val_mIoU" not in epoch_lines[0] and all("val_mIoU" in line for line in epoch_lines[1:])
    assert "--output-dir run --resume" in output

    predict = suggested(output, "keras_segmenter.predict")
    overlay = re.search(r"overlay is written to (\S+?)\):", output).group(1)
    assert not (tmp_path / overlay).exists()
    assert_clean(run(predict, cwd=tmp_path))
    assert (tmp_path / overlay).is_file()

    evaluate = suggested(output, "evaluate.py")
    evaluated = run(evaluate, cwd=tmp_path)
    assert_clean(evaluated)
    assert re.search(r"^1/2 images .*\n2/2 images ", evaluated, re.M), evaluated
