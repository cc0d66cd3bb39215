"""What a newcomer sees: the README's main command and the commands it suggests, output to a pipe.

`training/fit.py` runs here as the README's `python training/fit.py` does
(the same `run.train` path, validation every other chunk), only on a tiny
budget; then the `predict` and `evaluate` commands it prints at the end are
run exactly as printed. None of the outputs may hold TensorFlow's C++
start-up lines, a warning, a `nan`, a progress-bar redraw or a line of more
than 1,000 characters.
"""

import os
import re
import shlex
import subprocess

import pytest

from tests.testing import CAMVID, REPO, finish, fit_command

# What TF's C++ runtime writes at start-up (absl's `I0000 00:00:...` lines and their preamble).
TF_STARTUP = re.compile(
    r"absl::InitializeLog|cpu_feature_guard|oneDNN custom operations|^[IWEF]\d{4} ", re.M
)


def start(args, cwd):
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
    )


def outputs(*procs):
    """What the processes printed, once all have ended (each must succeed)."""
    done = finish(procs, timeout=900)
    for proc in done:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return [proc.stdout + proc.stderr for proc in done]


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
    (output,) = outputs(
        start(
            fit_command(
                *("--dataset", "camvid", "--data-dir", CAMVID, "--model", "seg_ti16_mask"),
                *("--crop-size", 64, "--batch-size", 2, "--val-images", 1, "--iterations", 6),
                *("--checkpoint-every", 2, "--val-every", 4, "--output-dir", "run"),
            ),
            cwd=tmp_path,
        )
    )
    assert_clean(output)
    # One progress line per chunk of 2 iterations; validation shown only where it ran.
    epoch_lines = [line for line in output.splitlines() if line.startswith("2/2 ")]
    assert len(epoch_lines) == 3, output
    assert "val_mIoU" not in epoch_lines[0] and all("val_mIoU" in line for line in epoch_lines[1:])
    assert "--output-dir run --resume" in output

    # The two suggested commands, run at the same time.
    overlay = re.search(r"overlay is written to (\S+?)\):", output).group(1)
    assert not (tmp_path / overlay).exists()
    predicted, evaluated = outputs(
        start(suggested(output, "keras_segmenter.predict"), cwd=tmp_path),
        start(suggested(output, "evaluate.py"), cwd=tmp_path),
    )
    assert_clean(predicted)
    assert (tmp_path / overlay).is_file()
    assert_clean(evaluated)
    assert re.search(r"^1/2 images .*\n2/2 images ", evaluated, re.M), evaluated
