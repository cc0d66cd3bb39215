"""Progress lines that suit both a terminal and a log file.

Keras' `Progbar` redraws itself with backspaces and carriage returns
whenever Python runs on a POSIX system, so stdout sent to a file or a CI log
gets every update of every bar. Here a bar is drawn only when stdout is a
terminal; otherwise `model.fit` prints one line per epoch and `Progress`
one line every few percent of its items.
"""

import math
import sys
import time

import keras


def interactive():
    """Whether stdout is a terminal, where a bar can redraw itself in place."""
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def fit_verbosity():
    """`verbose` for `model.fit` and `Progbar`: 1 (a bar) on a terminal, 2 (a line per epoch) otherwise."""
    return 1 if interactive() else 2


class Progress:
    """`keras.utils.Progbar`'s `update` over `target` items, without redrawing in a log.

    On a terminal this is a `Progbar`. Otherwise it prints
    `count/target unit - seconds - metric: value` every `percent` % of the
    items (every 100 items when `target` is unknown) and at the end.

    Args:
        target: int or None, number of items.
        unit_name: str, what an item is. Defaults to `"step"`.
        percent: number, how often a log line is written. Defaults to 10.
        stateful_metrics: names whose value is shown as given, not averaged
            (on a terminal; in a log every value is shown as given).
    """

    def __init__(self, target, unit_name="step", percent=10, stateful_metrics=None):
        self.target = target
        self.unit_name = unit_name
        self.every = max(1, math.ceil(target * percent / 100)) if target else 100
        self.bar = None
        if interactive():
            self.bar = keras.utils.Progbar(
                target, stateful_metrics=stateful_metrics, unit_name=unit_name
            )
        self.start = time.time()
        self.values = {}
        self.printed = None

    def update(self, current, values=None, finalize=None):
        if self.bar is not None:
            self.bar.update(current, values, finalize=finalize)
            return
        self.values.update(values or [])
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if (current % self.every and not finalize) or current == self.printed:
            return
        self.printed = current
        metrics = "".join(f" - {name}: {value:.4f}" for name, value in self.values.items())
        total = self.target if self.target is not None else "?"
        print(
            f"{current}/{total} {self.unit_name}s - {time.time() - self.start:.0f}s{metrics}",
            flush=True,
        )


class ProgressLogger(keras.callbacks.ProgbarLogger):
    """Keras' `model.fit` progress output, as a log reader wants it.

    With `verbose="auto"`: a bar on a terminal, one line per epoch
    otherwise. Validation metrics that were not computed in an epoch (the
    NaN that `callbacks.Validation` puts in the logs, to keep the columns of
    `history.csv` fixed) are left out of the line. Place it after every
    callback that adds to the logs.
    """

    def set_params(self, params):
        super().set_params(params)
        if params["verbose"] == "auto":
            self.verbose = fit_verbosity()

    def on_epoch_end(self, epoch, logs=None):
        computed = {
            key: value
            for key, value in (logs or {}).items()
            if not (key.startswith("val_") and isinstance(value, float) and math.isnan(value))
        }
        super().on_epoch_end(epoch, computed)
