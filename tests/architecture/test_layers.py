"""The package's layers import downward only, and there is no import cycle (docs/ARCHITECTURE.md).

Every ``import`` of every module is read with ``ast`` (module level and inside functions alike:
a lazy import is still a dependency), resolved to the fermetric module it names, and checked
against the layer table below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fermetric"

#: the layers, bottom up: a module may import its own unit and any unit of a lower layer
LAYERS = [
    {"_version", "errors"},  # ground: the version and the one-line errors ...
    {"registry", "vocab", "fileio", "config", "assets"},  # ... and what builds on them
    {"data", "models", "losses", "reports"},
    {"engine"},
    {"export", "methods"},
    {"predict"},
    {"retrieval", "info"},
    {"cli", "__init__"},  # the command line and the package's lazy public API
    {"__main__"},  # python -m fermetric
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """``fermetric.engine.train`` -> ``engine``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The fermetric modules ``path`` imports (``from X import name`` counts X.name when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fermetric"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "fermetric":
                continue
            submodules = {f"{target}.{a.name}" for a in node.names} & set(modules)
            found |= submodules or {target}
    return found - {name}


def test_the_layer_table_names_every_unit():
    units = {unit_of(m) for m in all_modules()}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to a layer (and to docs/ARCHITECTURE.md)"


def test_every_import_goes_downward():
    modules = all_modules()
    upward = []
    for name, path in sorted(modules.items()):
        unit = unit_of(name)
        for target in sorted(imports_of(path, modules)):
            other = unit_of(target)
            if other != unit and RANK[other] >= RANK[unit]:
                upward.append(f"{name} -> {target} ({unit} is layer {RANK[unit]}, {other} layer {RANK[other]})")
    assert upward == []


def test_no_import_cycle():
    modules = all_modules()
    graph = {name: imports_of(path, modules) & set(modules) for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle between units
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):  # package <-> its own submodule
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("folder", ["cli"])
def test_only_the_command_line_parses_arguments_or_prints(folder):
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == folder:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} print()")
            if isinstance(node, ast.Attribute) and node.attr in ("ArgumentParser", "parse_args"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} argparse")
            if isinstance(node, ast.arg) and node.arg == "args":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} an args parameter")
    assert offenders == []
