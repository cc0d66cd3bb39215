"""Progress output when stdout is not a terminal (pytest's capture is not one)."""

import math

from keras_segmenter.progress import Progress, ProgressLogger


def test_progress_prints_a_line_every_ten_percent_without_redrawing(capsys):
    progress = Progress(20, unit_name="image", stateful_metrics=["mIoU"])
    for count in range(1, 21):
        progress.update(count, [("mIoU", count / 100)])
    progress.update(20, finalize=True)  # the end, already printed: not repeated
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"{n}/20" for n in range(2, 21, 2)]
    assert lines[-1].startswith("20/20 images - ") and lines[-1].endswith("mIoU: 0.2000")


def test_progress_with_unknown_target_prints_the_end(capsys):
    progress = Progress(None)
    for count in range(1, 6):
        progress.update(count)
    progress.update(5, finalize=True)
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["5/?"]


def test_fit_logger_prints_one_line_per_epoch_without_uncomputed_validation(capsys):
    logger = ProgressLogger()
    logger.set_params({"verbose": "auto", "epochs": 2, "steps": 3})
    assert logger.verbose == 2
    for epoch, val in ((0, math.nan), (1, 0.25)):
        logger.on_epoch_begin(epoch)
        for batch in range(3):
            logger.on_train_batch_end(batch, {"loss": 1.0})
        logger.on_epoch_end(epoch, {"loss": 1.0, "mIoU": math.nan, "val_mIoU": val})
    out = capsys.readouterr().out
    assert "\r" not in out and "\b" not in out
    first, second = [line for line in out.splitlines() if line.startswith("3/3")]
    assert "val_mIoU" not in first and "val_mIoU: 0.2500" in second
    assert "mIoU: nan" in first  # a training metric that is NaN is shown: it was computed
