"""SGD with PyTorch's semantics, the optimizer of the official Segmenter, and
`make_optimizer`, the paper's recipe (the default of `Segmenter.compile`)."""

import keras
from keras import ops

from keras_segmenter.schedules import poly_schedule


@keras.saving.register_keras_serializable(package="keras_segmenter")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum as `torch.optim.SGD` computes it (dampening 0).

    The official training (timm `create_optimizer(opt="sgd")`) uses
    `torch.optim.SGD(momentum=0.9, nesterov=True)`, which keeps a momentum
    buffer of raw gradients and applies the current learning rate at the
    update:

    ```python
    g = g + weight_decay * w    # coupled weight decay, before the momentum
    buf = momentum * buf + g    # the first step gives buf = g (buf starts at 0)
    w = w - lr * (g + momentum * buf)   # nesterov; else w - lr * buf
    ```

    `keras.optimizers.SGD` instead folds each step's learning rate into its
    velocity (`v = momentum * v - lr * g`), which is the same only while the
    learning rate is constant: under the poly schedule the two drift apart.

    Args:
        learning_rate: float or a `LearningRateSchedule`. Defaults to 0.01.
        momentum: float in [0, 1]. Defaults to 0.9.
        nesterov: bool. Defaults to True.
        weight_decay: float or None, added to the gradient as `wd * w`
            (PyTorch's `weight_decay`), on the variables that
            `exclude_from_weight_decay` leaves.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.

    Example:

    >>> w = keras.Variable([1.0])
    >>> sgd = TorchSGD(learning_rate=0.1, momentum=0.5)
    >>> sgd.apply([keras.ops.ones(1)], [w])  # buf = 1, w = 1 - 0.1 * (1 + 0.5)
    >>> round(float(w[0]), 6)
    0.85
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.9,
        nesterov=True,
        weight_decay=None,
        name="torch_sgd",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs
        )
        if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(
                f"`momentum` must be a float in [0, 1]. Received: momentum={momentum!r}"
            )
        if nesterov and momentum == 0:
            raise ValueError("`nesterov=True` needs a positive `momentum` (as torch.optim.SGD).")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = (
            self.add_optimizer_variables(variables, "momentum") if self.momentum else []
        )

    def _apply_weight_decay(self, variables):
        """Keras' decoupled decay is off: `update_step` adds it to the gradient."""

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(
                gradient, ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable)
            )
        if self.momentum:
            momentum = ops.cast(self.momentum, variable.dtype)
            buf = self.momentums[self._get_variable_index(variable)]
            new_buf = ops.add(ops.multiply(buf, momentum), gradient)
            self.assign(buf, new_buf)
            gradient = (
                ops.add(gradient, ops.multiply(new_buf, momentum)) if self.nesterov else new_buf
            )
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov)
        return config


def make_optimizer(
    optimizer="sgd",
    lr=1e-3,
    iterations=160_000,
    end_lr=1e-5,
    poly_power=0.9,
    weight_decay=0.0,
    momentum=0.9,
    nesterov=True,
):
    """The paper's optimizer with the poly learning rate stepped every iteration.

    The defaults are the ADE20K recipe of section 4.2: SGD with momentum 0.9
    (Nesterov, PyTorch's semantics), no weight decay, learning rate 1e-3
    decayed with power 0.9 to 1e-5 over 160k iterations.

    Args:
        optimizer: str, `"sgd"` (`TorchSGD`) or `"adamw"` (Keras' AdamW).
            Defaults to `"sgd"`.
        lr: float, the first learning rate. Defaults to 1e-3.
        iterations: int, steps of the schedule. Defaults to 160000.
        end_lr: float, the last learning rate. Defaults to 1e-5.
        poly_power: float, the schedule's power. Defaults to 0.9.
        weight_decay: float. Defaults to 0 (none).
        momentum: float, SGD momentum. Defaults to 0.9.
        nesterov: bool, Nesterov momentum for SGD. Defaults to `True`.
    """
    schedule = poly_schedule(lr, iterations, end_lr, poly_power)
    if optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    return TorchSGD(
        learning_rate=schedule,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay or None,
    )
