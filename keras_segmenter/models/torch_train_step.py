"""The training step on the PyTorch backend, compiled by Inductor: `compile(jit_compile=True)`.

Keras' own `jit_compile=True` on PyTorch is `torch.compile` of its train step,
which breaks the graph at every Keras layer (as for inference:
`keras_segmenter.inference.torch_compile`). Here the forward pass, the loss
and `torch.autograd.grad` of the loss are recorded once per batch shape as
one graph of torch operations (`make_fx`), which Inductor compiles; each
step then runs that graph on the weights' current values and applies the
gradients with the model's optimizer, in eager PyTorch, as Keras' step does.
Loss and metrics are tracked as in Keras' step, from the graph's loss and
logits; without metrics in `compile`, the graph returns no logits, and
never writes the full-resolution ones.

The record is made inside `keras_segmenter.layers.backend.fusing()`, where
the upsampling, the loss and the dropout masks take the forms Inductor
fuses into the kernels that read them (see `upsample_rows`, `_label_logits`
and `_hashed_bits`): the full-resolution logits are not gathered from and
scattered into, and no mask costs a Philox draw per element. In bf16 the
attention is written out (`MultiHeadSelfAttention.call`): torch's flash
attention backward is slower than its products and softmax compiled.

Random numbers: a Keras random op on PyTorch turns its `SeedGenerator`'s
seed tensor into a Python int (`torch.Generator.manual_seed`), which no
record can hold. While recording, Keras' random ops draw from torch's
global generator instead, so the compiled graph draws its drop-path masks
and its dropout keys afresh on every call (Inductor's Philox numbers,
seeded from torch's generator: `keras.utils.set_random_seed` makes a run
repeatable); the masks are not those of the eager step.

Memory: each step allocates the graph's buffers afresh and frees them at
its end. glibc's malloc maps every block over its mmap threshold (at most
32 MiB by default) from the OS and unmaps it when freed, so each step
page-faulted its large buffers back (the dropout hashes, the attention
scores, the full-resolution loss: an eighth of a bf16 step on the AMX
Xeon). After compiling a graph, `CompiledTrainStep` sets the process's
malloc to keep freed memory for the next step instead
(`_keep_freed_memory`), and back to glibc's defaults while it records and
compiles another (kept, the compiler's memory stayed: 12.4 GiB resident
against 3.3 for Seg-S/16 bf16, batch 2; set after it, 3.9 GiB between
steps against 3.5, the same 4.6 GiB peak). The process's memory then
stays near the step's peak. Timings in docs/benchmarks.md.

Not for `mixed_float16`: its loss scale changes between steps, and a
record would hold one value.
"""

import contextlib
import ctypes
import sys

import keras

from keras_segmenter.layers.backend import fusing


class CompiledTrainStep:
    """`model`'s `train_function` (the batch as `fit` passes it): one compiled graph per
    batch shape, computing loss and gradients (and the logits, when a metric reads
    them), then the optimizer's update.

    Args:
        model: a compiled Keras model on the PyTorch backend.
        check: callable run on each batch `(x, y[, sample_weight])` first, or None.

    `graphs` maps each batch shape and dtypes to its compiled step.
    """

    def __init__(self, model, check=None):
        if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "jit_compile=True on the PyTorch backend cannot hold a changing loss scale: "
                "use float32 or mixed_bfloat16, or jit_compile=False, with mixed_float16"
            )
        self.model = model
        self.check = check
        self.graphs = {}
        # Keras' `compute_metrics` reads the logits only for metrics given to `compile`;
        # without them the graph need not write the (B, H, W, K) logits.
        self.returns_logits = (
            model._compile_metrics is not None
            or type(model).compute_metrics is not keras.Model.compute_metrics
        )

    def __call__(self, data):
        import torch

        model = self.model
        (batch,) = data  # fit passes a one-batch list (steps_per_execution is 1 on PyTorch)
        if self.check is not None:
            self.check(batch)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        inputs = [x, y] if sample_weight is None else [x, y, sample_weight]
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        compiling = key not in self.graphs
        if compiling:
            _keep_freed_memory(False)  # the memory of recording and compiling goes back
            self.graphs[key] = self._record(inputs)
        values = [v.value for v in model.trainable_variables]
        with torch.no_grad():
            loss, *grads = self.graphs[key](values, self._fixed(), inputs)  # compiles once
            logits = grads.pop() if self.returns_logits else None
            model.optimizer.apply(grads, model.trainable_variables)
        if compiling:
            _keep_freed_memory(True)
        model._loss_tracker.update_state(loss, sample_weight=x.shape[0])
        return model.compute_metrics(x, y, logits, sample_weight=sample_weight)

    def _fixed(self):
        model = self.model
        return [v.value for v in model.non_trainable_variables + model.metrics_variables]

    def _record(self, inputs):
        """The step of one batch shape, recorded and compiled (compiled on its first call)."""
        import torch
        from torch.fx.experimental.proxy_tensor import make_fx

        model = self.model
        fixed = len(model.non_trainable_variables)

        def step(values, fixed_values, inputs):
            x, y, sample_weight = (*inputs, None)[:3]  # [x, y] or [x, y, sample_weight]
            non_trainable, metrics = fixed_values[:fixed], fixed_values[fixed:]
            logits, _ = model.stateless_call(values, non_trainable, x, training=True)
            loss, _ = model.stateless_compute_loss(
                values, non_trainable, metrics, x, y, logits, sample_weight, training=True
            )
            grads = torch.autograd.grad(loss, values, allow_unused=True)
            grads = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads)]
            return [loss, *grads, *([logits] if self.returns_logits else [])]

        values = [v.value.detach().requires_grad_(True) for v in model.trainable_variables]
        with _global_generator(), fusing():
            graph = make_fx(step)(values, [v.detach() for v in self._fixed()], inputs)
        return torch.compile(graph, dynamic=False)


@contextlib.contextmanager
def _global_generator():
    """Keras' PyTorch random ops draw from torch's global generator while inside."""
    from keras.src.backend.torch import random

    seeded = random.torch_seed_generator
    random.torch_seed_generator = lambda *_: None  # torch.rand(generator=None): the global one
    try:
        yield
    finally:
        random.torch_seed_generator = seeded


def _keep_freed_memory(keep):
    """`keep`: glibc's malloc keeps freed blocks for reuse, mapping none from the OS and
    trimming no free top of its heap under 2 GiB (`mallopt`: `M_MMAP_MAX` 0,
    `M_TRIM_THRESHOLD` 2**31 - 1); else its defaults for both (65536, 128 KiB): blocks
    over the mmap threshold are mapped and freed memory goes back to the OS. Nothing
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-4, 0 if keep else 65536)  # M_MMAP_MAX
        mallopt(-1, 2**31 - 1 if keep else 128 * 1024)  # M_TRIM_THRESHOLD (an int)
