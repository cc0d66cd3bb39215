"""The package's import graph (every import, function-level ones included) has no circle."""

import ast
import pathlib

# Read as text (nothing imported), so the test takes milliseconds.
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_segmenter"


def module_names():
    """`{"keras_segmenter.models.segmenter": path, ...}` for every module of the package."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name, path, modules):
    """The package's modules that the module `name` imports, anywhere in its code."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            # `from pkg import submodule` imports the submodule; `from pkg import name`, pkg.
            targets = [t for t in targets[:-1] if t in modules] or [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph):
    """One cycle of `graph` (`{node: set of nodes}`) as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return stack[stack.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    modules = module_names()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "keras_segmenter.training.run" in graph["keras_segmenter.fit"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_commands_import_the_command_line_module():
    # The library raises `errors.UserError`; how a command prints it is cli's business.
    modules = module_names()
    commands = {"keras_segmenter", "keras_segmenter.__main__", "keras_segmenter.beam"}
    importers = {
        name
        for name, path in modules.items()
        if "keras_segmenter.cli" in imported_modules(name, path, modules)
    }
    assert importers - commands == {
        "keras_segmenter.convert.__main__",
        "keras_segmenter.data.__main__",
        "keras_segmenter.evaluate",
        "keras_segmenter.export",
        "keras_segmenter.fit",
        "keras_segmenter.predict",
    }
