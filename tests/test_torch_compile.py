"""`inference.torch_compile`: the PyTorch backend's forward pass compiled by Inductor.

Keras picks its backend at import, so the PyTorch checks run `_SCRIPT` in a
process of its own: the official sliding-window case through a model after
`compile_for_torch` (its windows go through the compiled graph), the
README's example, and a compiled function that follows its weights when
they are assigned.
"""

import keras
import numpy as np
import pytest

from keras_segmenter.inference.torch_compile import compile_for_torch
from tests.testing import FIXTURES, REPO, finish, result, spawn

_SCRIPT = """
import json, sys
from tests.test_torch_compile import check_compiled_inference
check_compiled_inference()
print("RESULT " + json.dumps("compiled"), flush=True)
"""


def readme_example(block=2):
    """A Python block of the README's section on backends: the second is the
    `compile_for_torch` example, the third its whole-image class map."""
    section = (REPO / "README.md").read_text().split("\n### Backends\n", 1)[1]
    return section.split("```python\n")[block].split("```", 1)[0]


def check_compiled_inference():
    """What `_SCRIPT` runs on PyTorch: every check raises on failure."""
    from keras_segmenter.convert import load_official
    from keras_segmenter.inference.class_map import _COMPILED_CLASSES
    from keras_segmenter.inference.torch_compile import (
        CompiledFunction,
        bias_in_products,
        compiled_forward,
    )
    from tests import test_inference
    from tests.test_class_map import assert_argmax_but_near_ties

    model = compile_for_torch(load_official(FIXTURES / "tiny_mask"))
    test_inference.test_sliding_window_matches_official(model, "100x150_ws64_st64")
    assert compiled_forward(model).graphs, "the windows did not go through the compiled graph"
    # The README's example, as written (the same window batches: no second compile).
    example = {"model": model, "image": np.zeros((100, 150, 3), "uint8")}
    exec(readme_example(), example)
    assert example["classes"].shape == (100, 150) and len(compiled_forward(model).graphs) == 1

    # The whole-image class map (`class_map.model_classes`, the README's third block) runs
    # the compiled patch logits and fused upsample + argmax, and is the argmax of the logits.
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 45, 3)).astype("uint8")
    example = {"model": model, "images": images}
    exec(readme_example(3), example)
    classes = example["classes"].numpy()
    normalized = keras.ops.convert_to_numpy(model.preprocess(images))
    logits = keras.ops.convert_to_numpy(model(normalized, training=False))
    assert_argmax_but_near_ties(classes, logits)
    assert _COMPILED_CLASSES[model].graphs, "the class map did not go through its compiled graph"

    # A Dense layer's bias goes into its product (2D rows and 3D tokens), same outputs.
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    dense = keras.layers.Dense(5)
    dense.build((None, 4))
    for x in (torch.randn(6, 4), torch.randn(2, 3, 4)):
        graph = bias_in_products(make_fx(lambda x: dense(x))(x))
        targets = [node.target for node in graph.graph.nodes]
        assert torch.ops.aten.addmm.default in targets and torch.ops.aten.add.Tensor not in targets
        expected = keras.ops.convert_to_numpy(dense(x))
        np.testing.assert_allclose(graph(x).detach().numpy(), expected, rtol=1e-6, atol=1e-6)

    # Assigned weights are read: the graph is compiled again, not run with the old constants.
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    compiled = CompiledFunction(lambda x: dense(x), dense)
    x = np.arange(8, dtype="float32").reshape(2, 4)
    for step in range(2):
        expected = keras.ops.convert_to_numpy(dense(x))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled(x)), expected, atol=1e-5)
        dense.set_weights([w * 2 + 1 for w in dense.get_weights()])


@pytest.mark.slow
def test_compiled_forward_on_torch_matches_the_official_windows_and_follows_weights():
    (proc,) = finish(spawn(_SCRIPT, {}, env={"KERAS_BACKEND": "torch"}))
    assert result(proc) == "compiled"


def test_compile_for_torch_refuses_another_backend():
    with pytest.raises(ValueError, match="KERAS_BACKEND=torch"):
        compile_for_torch(keras.Sequential([keras.layers.Dense(2)]))
