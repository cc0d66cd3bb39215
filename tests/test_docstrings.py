"""The `Example:` blocks in docstrings run and print what they claim."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import keras_segmenter


def modules():
    for info in pkgutil.walk_packages(keras_segmenter.__path__, "keras_segmenter."):
        if not info.name.endswith("__main__"):
            yield info.name


@pytest.mark.parametrize("name", sorted(modules()))
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs = {"np": np, "ks": keras_segmenter, **vars(module)}
    for test in finder.find(module, name, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
