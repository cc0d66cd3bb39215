"""The inference package stays small: no function over 60 lines, and `export` uses
none of its private names."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "keras_segmenter"
MAX_LINES = 60


def code_lines(function):
    """Lines of `function` (nested functions included) without its docstring."""
    lines = function.end_lineno - function.lineno + 1
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            lines -= body[0].end_lineno - body[0].lineno + 1
    return lines


def long_functions(source):
    tree = ast.parse(source)
    return [
        (node.name, code_lines(node))
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and code_lines(node) > MAX_LINES
    ]


def test_long_functions_are_found():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f'def f():\n    """Doc."""\n{body}\n') == [("f", MAX_LINES + 1)]
    assert (
        long_functions(f'def f():\n    """Doc\n\n    more."""\n{body[: body.rindex("x") - 4]}')
        == []
    )


def test_no_function_in_the_inference_package_is_over_60_lines():
    found = {
        f"{path.name}:{name}": lines
        for path in sorted((ROOT / "inference").glob("*.py"))
        for name, lines in long_functions(path.read_text())
    }
    assert found == {}


def test_export_uses_no_private_name_of_inference():
    tree = ast.parse((ROOT / "export.py").read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("keras_segmenter.inference")
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.startswith("_")]
    assert "inference._" not in (ROOT / "export.py").read_text()


def test_one_entry_point_and_one_traced_factory():
    """`segment` and `make_segment_function`; the old shorthands of them are gone."""
    import keras_segmenter.inference as inference

    assert callable(inference.segment) and callable(inference.make_segment_function)
    for old in ("sliding_window_inference", "multi_scale_inference", "make_inference_function"):
        assert not hasattr(inference, old), old
