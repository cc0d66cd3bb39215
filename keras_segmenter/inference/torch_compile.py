"""The model's forward pass on the PyTorch backend, compiled by Inductor for inference.

`torch.compile` cannot trace a Keras layer's `__call__` (its argument binding,
`inspect.Signature.bind`, breaks the graph at every layer, and the
per-layer graphs hit Dynamo's recompile limit: Seg-S/16-mask bf16 ran at a
third of eager Keras). So the function is first recorded as one graph of
torch operations (`make_fx`: it runs once, and every Keras step in Python
is gone from the record), and that graph is compiled by Inductor with
frozen weights (`freezing`: the weights are constants, their bfloat16
casts are folded and oneDNN gets them pre-packed; without it the compiled
bf16 graph ran at a fifth of the frozen one). Inference only: no gradients.

The weights are read when a graph is compiled. Each call compares the
weights' PyTorch version counters (bumped by every assignment:
`set_weights`, `load_weights`, an optimizer step) with those at compile
time and compiles again when they moved; a new input shape or dtype also
compiles a graph of its own (seconds to a minute on 2 cores for Seg-S/16).
"""

import weakref

import keras

# Per model: its compiled forward (`compile_for_torch`), which `model_call.model_logits` runs.
_COMPILED = weakref.WeakKeyDictionary()


class CompiledFunction:
    """`function` of torch tensors, compiled per input shape and weights version.

    Args:
        function: callable of torch tensors to torch tensors that reads the
            weights of `model`, e.g. `lambda x: model(x, training=False)`.
        model: the Keras model (PyTorch backend) whose weights it reads.
    """

    def __init__(self, function, model):
        self.function = function
        self.model = model
        self.graphs = {}

    def __call__(self, *args):
        import torch

        args = tuple(torch.as_tensor(keras.ops.convert_to_numpy(a)) for a in args)
        key = tuple((tuple(a.shape), a.dtype) for a in args)
        version = [(id(v.value), v.value._version) for v in self.model.weights]
        graph = self.graphs.get(key)
        if graph is None or graph[0] != version:
            compiled, outputs = compile_frozen(self.function, *args)
            self.graphs[key] = (version, compiled)
            return outputs
        with torch.no_grad():
            return graph[1](*args)

    def predict_on_batch(self, batch):
        """The float32 logits of a batch, as `keras.Model.predict_on_batch` gives them."""
        return self(batch)


def compile_frozen(function, *args):
    """`function` of torch tensors recorded by `make_fx` on `args`, its Dense biases moved
    into their products (`bias_in_products`), and compiled by Inductor with the tensors it
    closes over (the weights) frozen as constants, its kernels called from C++.

    The first call, which compiles, runs here on `args`. Returns `(compiled, its outputs)`;
    call `compiled` under `torch.no_grad()`.
    """
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        compiled = torch.compile(bias_in_products(make_fx(function)(*args)), dynamic=False)
        # (torch.compile's options={"freezing": True} did not freeze the weights;
        # docs/benchmarks.md has the timings.) `cpp_wrapper`: the graph calls its kernels
        # from C++, not Python (Seg-S/16-mask, batch 4: 3-8 % more images/s; the first
        # call as long with an empty Inductor cache, 8 s longer with a full one).
        with torch._inductor.config.patch(freezing=True, cpp_wrapper=True):
            return compiled, compiled(*args)


def bias_in_products(graph):
    """`graph` (a `make_fx` record) with each Dense layer's bias added inside its product.

    Keras' Dense is `matmul(x, kernel)` then `add(bias)`: recorded as
    `mm` (between two reshapes for 3D tokens) then `add`. Inductor's
    freezing packs such an `mm` into oneDNN's linear without a bias, so
    the bias add and what follows (fc1's GELU, in bfloat16 with its casts)
    stay a separate pass over memory. Rewritten as `addmm(bias, x, kernel)`,
    the product takes the bias, and Inductor then fuses the GELU into it
    as a post-op. Only `add(product, bias)` with a 1D bias of the product's
    width and dtype is rewritten; the sum is the same up to rounding (the
    bias joins the float32 accumulator before the output's rounding).
    """
    import torch

    aten = torch.ops.aten
    for node in list(graph.graph.nodes):
        if node.target != aten.add.Tensor or not isinstance(node.args[1], torch.fx.Node):
            continue
        product, bias = node.args
        reshape = product if product.target == aten._unsafe_view.default else None
        product = reshape.args[0] if reshape is not None else product
        chain = [n for n in (product, reshape) if n is not None]
        if product.target != aten.mm.default or any(len(n.users) != 1 for n in chain):
            continue
        # A weight read as it is (float32) is an attribute of the record, without "val".
        b = getattr(graph, bias.target) if bias.op == "get_attr" else bias.meta.get("val")
        out = product.meta["val"]
        width = node.meta["val"].shape[-1]  # a reshape that keeps the product's rows
        if b is None or b.shape != out.shape[1:] or b.dtype != out.dtype or width != out.shape[1]:
            continue
        with graph.graph.inserting_before(node):
            fused = graph.graph.call_function(aten.addmm.default, (bias, *product.args))
            fused.meta["val"] = out
            if reshape is not None:
                fused = graph.graph.call_function(
                    aten._unsafe_view.default, (fused, reshape.args[1])
                )
                fused.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(fused)
        for dead in [node, *reversed(chain)]:
            graph.graph.erase_node(dead)
    graph.recompile()
    return graph


def compile_for_torch(model):
    """Runs `model`'s inference on the PyTorch backend compiled (returns `model`).

    After it, `keras_segmenter.inference` (sliding windows, `segment`) calls
    the model through a `CompiledFunction` of its float32 logits, and
    `class_map.model_classes` through one of its class map (its patch logits,
    then the fused upsample and argmax): one compile per batch shape, then
    the compiled graph (faster than eager Keras: docs/benchmarks.md). Raises
    `ValueError` on another backend.
    """
    if keras.config.backend() != "torch":
        raise ValueError(
            "compile_for_torch needs the PyTorch backend (KERAS_BACKEND=torch). "
            f"Received: {keras.config.backend()}"
        )

    def logits(images):
        return keras.ops.cast(model(images, training=False), "float32")

    _COMPILED[model] = CompiledFunction(logits, model)
    return model


def compiled_forward(model):
    """The `CompiledFunction` that `compile_for_torch` made for `model`, or None."""
    return _COMPILED.get(model)
