"""The package's shape: no import cycles between hwnas modules at import time; an import inside a
function only where it keeps a heavy or optional library out of a module that does without it;
the command line and the measurement side import no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hwnas"
# Heavy (seconds to import, or hundreds of MB) or optional (an extra, or a GPU stack): imported
# inside the function that needs them where a module can do without them.
HEAVY = {"torch", "torchvision", "onnx", "onnxruntime", "onnxconverter_common", "onnxscript", "tensorrt", "cuda",
         "pycuda", "ray", "optuna", "sklearn", "scipy", "pandas", "matplotlib", "PIL", "threadpoolctl", "sqlalchemy",
         "yaml"}


def module_paths() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(node: ast.AST, names: dict[str, Path]) -> list[str]:
    """What an import statement names: modules, or `package.module` where a name is a module."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module for a in node.names]
    return []


def module_imports(with_third_party: bool = False) -> dict[str, set[str]]:
    """hwnas module -> the hwnas modules (and, asked, third-party modules) it imports at module
    level (not inside functions)."""
    names = module_paths()
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = {t for node in ast.parse(path.read_text()).body for t in imported(node, names)}
        graph[name] = {t for t in targets if (t in names or with_third_party and t.split(".")[0] != "hwnas") and t != name}
    return graph


def heavy_at_import(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The heavy libraries importing `module` loads, through its module-level imports and the
    packages above each module (whose __init__ runs first)."""
    heavy, seen, todo = set(), set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in graph]
        for t in graph.get(m, ()):
            root = t.split(".")[0]
            if root in HEAVY:
                heavy.add(root)
            elif t in graph:
                todo.append(t)
    return heavy


# The layers of the package, lowest first: a module imports (at the top or inside a function) only
# from its own layer or below.
LAYERS = [
    {"", "errors", "validate", "jsonutil", "locks", "registry", "data"},  # "": hwnas/__init__.py
    {"backends"},  # measurement on a target: numpy and onnxruntime/TensorRT, no spaces, no torch
    {"spaces"},
    {"exporters", "store", "torch_backends"},  # torch_backends: the torch-cpu/cuda baselines
    {"measure", "fleet"},
    {"latency", "surrogates"},
    {"search"},
    {"report"},
    {"cli"},
]


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_no_import_reaches_up_a_layer():
    names = module_paths()
    assert {m.split(".")[1] for m in names if "." in m} == set().union(*LAYERS) - {""}, "a package outside LAYERS"
    upward = []
    for name, path in sorted(names.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imported(node, names):
                if target.startswith("hwnas") and layer_of(target) > layer_of(name):
                    upward.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name} -> {target}")
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = module_imports()
    assert len(graph) > 50
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_inside_functions_only_keep_heavy_libraries_out():
    """A function-level import is of a heavy or optional library, or of an hwnas module that
    brings one the importing module does without; anything else belongs at the top."""
    names, graph = module_paths(), module_imports(with_third_party=True)
    wrong = []
    for name, path in sorted(names.items()):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                for target in imported(node, names):
                    root = target.split(".")[0]
                    if root in HEAVY:
                        continue
                    if root == "hwnas" and heavy_at_import(target, graph) - heavy_at_import(name, graph):
                        continue
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {fn.name}: {target}")
    assert len(graph) > 50 and not wrong, "import at the top instead:\n" + "\n".join(wrong)


def test_the_measurement_packages_never_import_torch():
    """Not even inside a function: `hwnas.measure` and `hwnas.backends` run where only numpy and
    onnxruntime or TensorRT are installed; torch work (export, the eager baselines) lives in
    `hwnas.exporters` and `hwnas.torch_backends`."""
    names = module_paths()
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {target}"
             for name, path in sorted(names.items()) if name.split(".")[1:2] in (["measure"], ["backends"])
             for node in ast.walk(ast.parse(path.read_text())) for target in imported(node, names)
             if target.split(".")[0] in ("torch", "torchvision")]
    assert not found, "torch imported by the measurement side:\n" + "\n".join(found)


def test_the_command_line_and_the_measurement_side_import_no_heavy_library():
    """`hwnas --help` answers without torch or pandas; a measurement worker runs on a target
    with only numpy and onnxruntime."""
    code = ("import sys, hwnas.cli.main, hwnas.backends.worker, hwnas.backends.ort; "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]", out
