"""The paper's path: every command of the README's Data, Training and Evaluation sections,
run as a subprocess the way the README writes it, on a miniature of every dataset layout the
README names (`tests/miniatures.py`), with a tiny model and two training iterations.

One test per dataset layout runs its commands in a row (check the data, train, evaluate that
model, predict; those that do not wait for each other start together), since each command pays
TensorFlow's start-up.
"""

import json
import os
import sys

import pytest

from tests import miniatures
from tests.testing import PHOTOS, REPO, cluster, finish, fit_command, start, tiny_model

EVALUATE = REPO / "training" / "evaluate.py"
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "keras-segmenter")
# Two iterations of batch 2, one checkpoint, validation on one image; 64-pixel crops and
# windows (the tiny models' training crop).
TINY_RUN = (
    *("--iterations", 2, "--batch-size", 2, "--crop-size", 64),
    *("--checkpoint-every", 2, "--val-images", 1),
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """`models(num_classes)`: the path of a tiny .keras model (64-pixel crop) of that many classes."""
    folder = tmp_path_factory.mktemp("models")

    def model(num_classes):
        path = folder / f"tiny_{num_classes}.keras"
        if not path.exists():
            tiny_model(num_classes, num_layers=1, image_size=64).save(path)
        return path

    return model


def run(*commands, timeout=300):
    """Runs command lines together; each must exit 0 without a traceback. Their outputs."""
    done = finish([start(command) for command in commands], timeout=timeout)
    for proc in done:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
            f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        )
    return done


def summary(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert lines, proc.stdout[-3000:]
    return json.loads(lines[-1][len("SUMMARY ") :])


def fit(*args):
    return fit_command(*args, *TINY_RUN)


def evaluate(*args):
    return [sys.executable, EVALUATE, *args]


def module(name, *args):
    return [sys.executable, "-m", f"keras_segmenter.{name}", *args]


def check_command(dataset, data_dir):
    return module("data", "check", "--dataset", dataset, "--data-dir", data_dir)


def check_report(done, dataset, pairs):
    """`data check` reported the train and val pairs of the miniature and no problem."""
    for split, count in pairs.items():
        assert f"{dataset} [{split}]: {count} pairs, 0 problems" in done.stdout, done.stdout


def check(dataset, data_dir, pairs):
    (done,) = run(check_command(dataset, data_dir))
    check_report(done, dataset, pairs)


def results(path, images):
    values = json.loads(path.read_text())
    assert values["num_images"] == images and 0 <= values["mIoU"] <= 1
    return values


@pytest.mark.slow
def test_ade20k_fit_evaluate_with_object_sizes_predict(tmp_path, models):
    data = miniatures.ade20k(tmp_path / "data")  # ids 128..150 in every mask
    out = tmp_path / "run"
    checked, trained = run(
        check_command("ade20k", data),
        fit("--dataset", "ade20k", "--data-dir", data, "--init", models(150), "--output-dir", out),
    )
    check_report(checked, "ade20k", {"train": 3, "val": 2})
    assert summary(trained)["iteration"] == 2 and (out / "model.keras").is_file()
    # The paper's protocol with its defaults: object sizes on 150 classes.
    run(
        evaluate("--model", out / "model.keras", "--dataset", "ade20k", "--data-dir", data)
        + ["--output", tmp_path / "results.json"],
        module("predict", "--model", out / "model.keras", "--dataset", "ade20k")
        + ["--out", tmp_path / "predictions", PHOTOS / "camvid_0016E5_07959.jpg"],
    )
    values = results(tmp_path / "results.json", 2)
    assert len(values["IoU"]) == 150 and set(values["size_mIoU"]) == {"small", "medium", "large"}
    assert sorted(os.listdir(tmp_path / "predictions")) == [
        "camvid_0016E5_07959_classes.png",
        "camvid_0016E5_07959_overlay.png",
    ]


@pytest.mark.slow
def test_ade20k_zip_check_dry_run_and_evaluate(tmp_path, models):
    data = miniatures.ade20k_zip(tmp_path / "downloads")  # the zip alone
    check("ade20k", data, {"train": 3, "val": 2})
    dry, evaluated = run(
        fit_command("--dataset", "ade20k", "--data-dir", data, "--dry-run")
        + ["--output-dir", tmp_path / "run"],
        module("evaluate", "--model", models(150), "--dataset", "ade20k", "--data-dir", data)
        + ["--output", tmp_path / "results.json"],
    )
    assert "(3 training images)" in dry.stdout and "160000 iterations" in dry.stdout
    assert not (tmp_path / "run").exists()
    results(tmp_path / "results.json", 2)


@pytest.mark.slow
def test_pascal_context_fit_sliding_window_evaluate_and_resume(tmp_path, models):
    data = miniatures.pascal_context(tmp_path / "data")
    out = tmp_path / "run"
    checked, _ = run(
        check_command("pascal_context", data),
        fit("--dataset", "pascal_context", "--data-dir", data, "--init", models(60))
        + ["--output-dir", out],
    )
    check_report(checked, "pascal_context", {"train": 3, "val": 2})
    evaluated, resumed = run(
        evaluate("--model", out / "model.keras", "--dataset", "pascal_context", "--data-dir", data)
        + ["--window-size", 64, "--window-stride", 32, "--output", tmp_path / "results.json"],
        [CONSOLE_SCRIPT, "fit", "--output-dir", out, "--resume"],
    )
    values = results(tmp_path / "results.json", 2)
    assert len(values["IoU"]) == 60 and values["window_stride"] == 32
    assert "Resuming" in resumed.stdout and summary(resumed)["iteration"] == 2


@pytest.mark.slow
def test_cityscapes_label_ids_and_train_ids(tmp_path, models):
    layouts = {
        "label_ids": miniatures.cityscapes(tmp_path / "label_ids", label_ids=True),
        "train_ids": miniatures.cityscapes(tmp_path / "train_ids", label_ids=False),
    }
    out = tmp_path / "run"
    *checked, _ = run(
        *(check_command("cityscapes", data) for data in layouts.values()),
        fit("--dataset", "cityscapes", "--data-dir", layouts["label_ids"], "--init", models(19))
        + ["--output-dir", out],
    )
    for done in checked:
        check_report(done, "cityscapes", {"train": 3, "val": 2})
    # At the images' own size (--original-size): the 1024-pixel base size would take 1,300
    # windows an image.
    run(
        *(
            evaluate("--model", out / "model.keras", "--dataset", "cityscapes", "--data-dir", data)
            + ["--original-size", "--no-object-sizes", "--output", tmp_path / f"{name}.json"]
            for name, data in layouts.items()
        )
    )
    # The same ground truth in both layouts gives the same scores.
    label_ids, train_ids = (results(tmp_path / f"{name}.json", 2) for name in layouts)
    assert label_ids["confusion"] == train_ids["confusion"]


@pytest.mark.slow
def test_camvid_check_mirrored_over_two_cpu_devices_then_multi_scale_flip(tmp_path, models):
    data = miniatures.camvid(tmp_path / "data")
    out = tmp_path / "run"
    checked, trained = run(
        check_command("camvid", data),
        fit("--dataset", "camvid", "--data-dir", data, "--init", models(11))
        + ["--strategy", "mirrored", "--cpu-devices", 2, "--output-dir", out],
    )
    check_report(checked, "camvid", {"train": 3, "val": 2})
    assert summary(trained)["replicas"] == 2
    run(
        evaluate("--model", out / "model.keras", "--dataset", "camvid", "--data-dir", data)
        + ["--multi-scale", "--limit", 1, "--output", tmp_path / "results.json"]
    )
    values = results(tmp_path / "results.json", 1)
    assert values["flip"] and len(values["scales"]) == 6


@pytest.mark.slow
def test_folder_check_fit_and_evaluate(tmp_path, models):
    data = miniatures.folder(tmp_path / "data", num_classes=5)
    out = tmp_path / "run"
    checked, _ = run(
        check_command("folder", data) + ["--num-classes", 5],
        fit("--dataset", "folder", "--num-classes", 5, "--data-dir", data, "--init", models(5))
        + ["--output-dir", out],
    )
    check_report(checked, "folder", {"all": 5})
    run(
        evaluate("--model", out / "model.keras", "--dataset", "folder", "--num-classes", 5)
        + ["--data-dir", data, "--output", tmp_path / "results.json"]
    )
    assert len(results(tmp_path / "results.json", 2)["IoU"]) == 5


@pytest.mark.slow
def test_multi_worker_two_processes_with_the_same_command_line(tmp_path, models):
    data = miniatures.camvid(tmp_path / "data")
    out = tmp_path / "run"
    command = fit("--dataset", "camvid", "--data-dir", data, "--init", models(11))
    command += ["--strategy", "multi_worker", "--output-dir", out]
    procs = [start(command, tf_config) for tf_config in cluster(2)]
    done = finish(procs, timeout=300)
    for proc in done:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    chief, worker = (summary(proc) for proc in done)
    assert (chief["worker"], worker["worker"]) == (0, 1)
    assert chief["weights_sha256"] == worker["weights_sha256"]
    assert chief["model"] == str(out / "model.keras") and worker["model"] is None
    assert (out / "model.keras").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ade20k", "pascal_context", "camvid", "cityscapes"])
def test_tfds_prepare_then_fit(tmp_path, models, name):
    manual = miniatures.tfds_manual_dir(name, tmp_path / "manual")
    tfds_dir = tmp_path / "tensorflow_datasets"
    (prepared,) = run(
        module("data", "tfds", "--dataset", name, "--manual-dir", manual, "--data-dir", tfds_dir)
    )
    assert f"tfds:{name} prepared in" in prepared.stdout
    classes = {"ade20k": 150, "pascal_context": 60, "camvid": 11, "cityscapes": 19}[name]
    out = tmp_path / "run"
    trained, _ = run(
        fit("--dataset", f"tfds:{name}", "--data-dir", tfds_dir, "--init", models(classes))
        + ["--output-dir", out],
        evaluate("--model", models(classes), "--dataset", f"tfds:{name}", "--data-dir", tfds_dir)
        + ["--window-size", 64, "--window-stride", 64, "--flip", "--limit", 1]
        + ["--output", tmp_path / "results.json"],
    )
    assert "(3 training images)" in trained.stdout
    assert results(tmp_path / "results.json", 1)["flip"]
    assert summary(trained)["iteration"] == 2 and (out / "model.keras").is_file()


@pytest.mark.parametrize(
    "flags", [["--cpu-devices", "2"], ["--strategy", "mirrored", "--cpu-devices", "0"]]
)
def test_cpu_devices_is_a_positive_count_for_mirrored(capsys, flags):
    from keras_segmenter.fit import make_config

    with pytest.raises(SystemExit) as exit_info:
        make_config(flags + ["--dry-run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert (
        "keras-segmenter fit: error: --cpu-devices must be a positive integer, with --strategy mirrored"
        in err
    )
